//! Running a comparison: every (arm, seed, budget) run in its own run folder under
//! `<out>/runs/`, through the sweep's run registry (finished runs with the same settings
//! skipped, interrupted ones resumed, `jobs` at once in child processes), then one results
//! file, `<out>/results.jsonl`.
//!
//! Runs train seed by seed, each cooldown branch of a WSD source as soon as its source has
//! finished, so that a comparison stopped early holds whole seeds.

use crate::analysis::CompareRecord;
use crate::config::CompareConfig;
use crate::plan::{PlannedRun, plan};
use std::path::{Path, PathBuf};
use strata_sweep::registry::{Job, Launch, own_wall_s, read_records, train_all, write_records};
use strata_tensor::{Error, Result};
use strata_train::RunSummary;

/// What a comparison did.
#[derive(Clone, Debug)]
pub struct CompareOutcome {
    /// Runs trained (or continued) now.
    pub trained: usize,
    /// Runs that were already finished.
    pub skipped: usize,
    /// Every finished run, in plan order.
    pub records: Vec<CompareRecord>,
}

/// The job that produces the run of one budget (`run.source`: the arm and seed's longest
/// run), in the comparison's `runs` folder.
///
/// With a WSD base a budget that is not the source is a cooldown branch of the source's
/// stable phase ([`strata_train::branch::cooldown`]); otherwise it is a run of its own length.
pub fn run_budget(run: &PlannedRun, runs: &Path) -> Job {
    Job {
        id: run.id.clone(),
        dir: runs.join(&run.id),
        config: run.config.clone(),
        branch_of: run.branch_of.as_ref().map(|id| runs.join(id)),
        init_from: None,
    }
}

/// Trains every planned run of `compare` that is not finished yet into `out`, then writes
/// `results.jsonl` (one [`CompareRecord`] per finished run).
pub fn run_compare(compare: &CompareConfig, out: &Path, launch: &Launch) -> Result<CompareOutcome> {
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let _lock = strata_train::run_lock::RunLock::acquire(out, "compare")?;
    let jobs = plan_jobs(compare, out)?;
    let done = train_all(&jobs, launch, "compare", &compare.name)?;
    let records = collect_results(compare, out)?;
    Ok(CompareOutcome {
        trained: done.trained,
        skipped: done.skipped,
        records,
    })
}

/// The jobs of every planned run of `compare`, in run folders under `out/runs` (created).
pub fn plan_jobs(compare: &CompareConfig, out: &Path) -> Result<Vec<Job>> {
    let runs = plan(compare)?;
    let root = out.join("runs");
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    Ok(runs.iter().map(|r| run_budget(r, &root)).collect())
}

/// The records of every finished run of `compare` in `out`, read from the run folders (so
/// runs trained elsewhere, e.g. from job files, count), also written to `results.jsonl`.
pub fn collect_results(compare: &CompareConfig, out: &Path) -> Result<Vec<CompareRecord>> {
    let runs = plan(compare)?;
    let records = collect(&runs, &out.join("runs"))?;
    write_records(&results_path(out), &records)?;
    Ok(records)
}

/// The results file of the comparison folder `out`.
pub fn results_path(out: &Path) -> PathBuf {
    out.join("results.jsonl")
}

/// The records of every finished run, in plan order.
fn collect(runs: &[PlannedRun], root: &Path) -> Result<Vec<CompareRecord>> {
    let mut records = Vec::new();
    for run in runs {
        let dir = root.join(&run.id);
        let Some(summary) = RunSummary::finished(&dir) else {
            continue;
        };
        let Some(final_val_loss) = summary.final_val_loss else {
            return Err(Error::Invalid(format!(
                "{}: finished without a validation loss",
                dir.display()
            )));
        };
        records.push(CompareRecord {
            run: run.id.clone(),
            arm: run.arm.name.clone(),
            seed: run.seed,
            iters: run.iters,
            steps: summary.steps,
            tokens: summary.tokens,
            train_flops: summary.train_flops,
            final_val_loss,
            wall_s: own_wall_s(&run_budget(run, root), &summary),
            params_total: summary.params.total,
        });
    }
    Ok(records)
}

/// Reads a results file written by [`run_compare`].
pub fn read_results(path: &Path) -> Result<Vec<CompareRecord>> {
    read_records(path, "compare record")
}
