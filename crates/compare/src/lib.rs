//! strata-compare: is a variant worth more compute than the baseline, with an interval?
//!
//! A [`CompareConfig`] names a base run config, a baseline and variants (sets of config
//! overrides, as sweep variants), seeds and budgets. [`run_compare`] trains every (arm,
//! seed, budget) run through the sweep's run registry (resumable, parallel), pairing the
//! arms of a seed on the identical token stream. [`analysis::analyse`] turns the final
//! losses into per-seed compute multipliers read off the baseline's loss-against-compute
//! curve ([`strata_stats::curve`]) and aggregates them with paired intervals, p-values and a
//! power statement ([`strata_stats::paired`]); [`report::write_report`] writes the markdown report and plots.

// Library code returns errors and never panics on its own (see strata-train's lib.rs).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

pub mod analysis;
pub mod config;
pub mod plan;
pub mod report;
pub mod runner;

pub use analysis::{Analysis, CompareRecord, Settings, analyse};
pub use config::CompareConfig;
pub use runner::{
    CompareOutcome, collect_results, plan_jobs, read_results, results_path, run_compare,
};
