//! `strata sweep`: train a scaling grid, fit it and write the report.

use crate::study_args::StudyArgs;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_sweep::report::{analyse, write_report};
use strata_sweep::{
    SweepConfig, SweepOptions, collect_results, plan_jobs, read_results, run_sweep,
};
use strata_tensor::Result;

/// Runs the sweep (or only its report) and prints where the report went.
pub fn run(args: &StudyArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let sweep = SweepConfig::load(&args.config)?;
    let out = args.out("sweeps", &sweep.name);
    if let Some(list) = &args.write_jobs {
        return crate::jobs::write_list(&plan_jobs(&sweep, &out)?, list);
    }
    let records = if args.report_only && out.join("runs").is_dir() {
        collect_results(&sweep, &out)?
    } else if args.report_only {
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
    let command = args.command("sweep");
    let docs = args.docs(&out);
    let path = write_report(&sweep, &records, &analysis, &docs, &command)?;
    println!("wrote {}", path.display());
    Ok(())
}
