//! `strata compare`: train a paired multi-seed comparison and write its report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_compare::analysis::{Settings, analyse};
use strata_compare::plan::budget_iters;
use strata_compare::report::write_report;
use strata_compare::{CompareConfig, read_results, results_path, run_compare};
use strata_sweep::registry::Launch;
use strata_tensor::Result;
use strata_train::RunConfig;

/// Arguments of `strata compare`.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// The comparison config (see configs/compare-dwa-cpu.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Comparison folder: run folders and results.jsonl (default: runs/compare/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder for the report and plots (default: the comparison folder).
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Runs at once, each in its own process with its share of the cores.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Analyse the finished runs of results.jsonl without training.
    #[arg(long)]
    pub report_only: bool,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the comparison (or only its report), prints the verdicts and where the report went.
pub fn run(args: &CompareArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let compare = CompareConfig::load(&args.config)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join("compare").join(&compare.name));
    let records = if args.report_only {
        read_results(&results_path(&out))?
    } else {
        let launch = Launch {
            jobs: args.jobs.max(1),
            executable: std::env::current_exe().ok(),
            progress: !args.quiet,
            stop: stop.clone(),
        };
        let outcome = run_compare(&compare, &out, &launch)?;
        tracing::info!(
            trained = outcome.trained,
            skipped = outcome.skipped,
            "compare finished"
        );
        outcome.records
    };
    let base = RunConfig::load(&compare.base, &compare.set)?;
    let arms: Vec<String> = compare.all_arms().into_iter().map(|a| a.name).collect();
    let settings = Settings {
        bootstrap: compare.bootstrap,
        bootstrap_seed: compare.bootstrap_seed,
        target_loss: compare.target_loss,
        effect: 1.05,
    };
    let aa = compare.aa.then(|| compare.aa_name());
    let budgets = budget_iters(&compare, &base, false);
    let analysis = analyse(&records, &arms, aa.as_deref(), &budgets, &settings);
    let mut command = format!("strata compare --config {}", args.config.display());
    if args.jobs > 1 {
        command += &format!(" --jobs {}", args.jobs);
    }
    let docs = args.docs.clone().unwrap_or_else(|| out.clone());
    let path = write_report(&compare, &base, &records, &analysis, &docs, &command)?;
    for arm in &analysis.arms {
        println!("{}: {}", arm.arm, arm.verdict);
    }
    if let Some(target) = &analysis.target {
        for (_, outcome) in target {
            if let Err(why) = outcome {
                tracing::warn!("{why}");
            }
        }
    }
    println!("wrote {}", path.display());
    Ok(())
}
