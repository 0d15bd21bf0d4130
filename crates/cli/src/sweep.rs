//! `strata sweep`: train a scaling grid, fit it and write the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_sweep::report::{analyse, write_report};
use strata_sweep::{SweepConfig, SweepOptions, read_results, run_sweep};
use strata_tensor::Result;

/// Arguments of `strata sweep`.
#[derive(Clone, Debug, clap::Args)]
pub struct SweepArgs {
    /// The sweep config (see configs/sweep-cpu.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Sweep folder: run folders and results.jsonl (default: runs/sweeps/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder for the report and plots (default: the sweep folder).
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Runs at once, each in its own process with its share of the cores (1 to 1024).
    #[arg(long, default_value_t = 1, value_parser = crate::bounds::count(crate::bounds::MAX_JOBS))]
    pub jobs: usize,
    /// Fit and report the finished runs of results.jsonl without training.
    #[arg(long)]
    pub report_only: bool,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the sweep (or only its report) and prints where the report went.
pub fn run(args: &SweepArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let sweep = SweepConfig::load(&args.config)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join("sweeps").join(&sweep.name));
    let records = if args.report_only {
        read_results(&out.join("results.jsonl"))?
    } else {
        let mut options = SweepOptions::new(&out);
        options.jobs = args.jobs.max(1);
        options.executable = std::env::current_exe().ok();
        options.progress = !args.quiet;
        options.stop = stop.clone();
        let outcome = run_sweep(&sweep, &options)?;
        tracing::info!(
            trained = outcome.trained,
            skipped = outcome.skipped,
            "sweep finished"
        );
        outcome.records
    };
    let analysis = analyse(&sweep, &records);
    let mut command = format!("strata sweep --config {}", args.config.display());
    if args.jobs > 1 {
        command += &format!(" --jobs {}", args.jobs);
    }
    let docs = args.docs.clone().unwrap_or_else(|| out.clone());
    let path = write_report(&sweep, &records, &analysis, &docs, &command)?;
    println!("wrote {}", path.display());
    Ok(())
}
