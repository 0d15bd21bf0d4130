//! `strata compare`: train a paired multi-seed comparison and write its report.

use crate::study_args::StudyArgs;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_compare::analysis::{Settings, analyse};
use strata_compare::plan::budget_iters;
use strata_compare::report::write_report;
use strata_compare::{
    CompareConfig, collect_results, plan_jobs, read_results, results_path, run_compare,
};
use strata_sweep::registry::Launch;
use strata_tensor::Result;
use strata_train::RunConfig;

/// Arguments of `strata compare`: a study's, and which arms to train.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// The study's config, folders and parallelism.
    #[command(flatten)]
    pub study: StudyArgs,
    /// Only these arms (comma-separated names; the baseline always runs): the rest can be
    /// trained later into the same study folder, reusing these runs.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub arms: Vec<String>,
}

impl CompareArgs {
    /// The command line that reproduces this comparison, as its report quotes it.
    fn command(&self) -> String {
        let mut command = self.study.command("compare");
        if !self.arms.is_empty() {
            command += &format!(" --arms {}", self.arms.join(","));
        }
        command
    }
}

/// Runs the comparison (or only its report), prints the verdicts and where the report went.
pub fn run(compare_args: &CompareArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let args = &compare_args.study;
    let mut compare = CompareConfig::load(&args.config)?;
    if !compare_args.arms.is_empty() {
        compare.keep_arms(&compare_args.arms, &args.config.display().to_string())?;
    }
    let out = args.out("compare", &compare.name);
    if let Some(list) = &args.write_jobs {
        return crate::jobs::write_list(&plan_jobs(&compare, &out)?, list);
    }
    let records = if args.report_only && out.join("runs").is_dir() {
        collect_results(&compare, &out)?
    } else if args.report_only {
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
    let command = compare_args.command();
    let docs = args.docs(&out);
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
