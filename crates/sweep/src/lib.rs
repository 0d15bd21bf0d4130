//! strata-sweep: scaling curves and compute multipliers, "how clever to bother being".
//!
//! A [`SweepConfig`] names a base run config, a grid of model sizes and token budgets, and
//! architecture variants (baseline, DenseFormer k×p, or any other set of config
//! overrides). [`run_sweep`] trains every run that is not finished yet and writes one
//! results file. It resumes an interrupted run from its checkpoint, and it can run several
//! runs at once in child processes. [`report::analyse`] fits `L(N, D) = E + A/N^α + B/D^β`
//! to each variant ([`law`]) and gives every variant's compute multiplier over the baseline
//! with a bootstrap interval ([`multiplier`]). [`report::write_report`] writes the tables
//! and plots.

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

pub mod config;
pub mod job_files;
pub mod law;
pub mod measured;
pub mod multiplier;
pub mod plan;
mod queue;
pub mod registry;
pub mod report;
pub mod runner;

pub use config::{Size, SweepConfig, Variant};
pub use runner::{
    SweepOptions, SweepOutcome, SweepRecord, collect_results, plan_jobs, read_results, run_sweep,
};
