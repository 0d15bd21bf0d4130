//! strata-train: everything between a corpus on disk and a trained checkpoint.
//!
//! [`RunConfig`] describes a run; a [`Trainer`] runs it one optimizer step at a time with
//! AdamW (or Muon for the hidden matrices, [`optimizer`]), a warmup-cosine or
//! warmup-stable-decay schedule, growth events, periodic evaluation on fixed batches or a
//! fixed validation slice, atomic checkpoints, exact resume and stopping
//! on divergence, writing metrics (JSON lines), loss plots and a DWA heatmap into the run
//! folder, and telling hooks about each evaluation, checkpoint and growth event. [`train`]
//! drives a trainer from start to end (with a progress bar and stopping on request), and
//! [`branch::cooldown`] trains cooldown branches.

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

mod adamw_cpu;
pub mod branch;
pub mod budget;
pub mod checkpoint;
pub mod checkpoint_io;
pub mod config;
mod config_changes;
pub mod data;
pub mod distributed;
mod driver;
pub mod evaluation;
pub mod finite;
pub mod growth_schedule;
pub mod interop;
pub mod memory;
pub mod metrics;
pub mod muon;
pub mod optim;
pub mod optimizer;
pub mod parallel;
pub mod prepare;
pub mod retrofit;
pub mod run_folder;
pub mod run_lock;
mod run_summary;
pub mod schedule;
pub mod tokenizer;
pub mod trainer;

pub use config::{DataConfig, RunConfig, TrainConfig};
pub use distributed::World;
pub use driver::train;
pub use trainer::{RunOptions, RunSummary, Trainer, evaluate};
