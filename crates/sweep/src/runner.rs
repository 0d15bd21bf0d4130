//! Running a sweep: every planned run in its own run folder, finished runs skipped,
//! interrupted ones resumed from their latest checkpoint, and one results file.
//!
//! Skipping, resuming and training (here or in parallel child processes) is the shared
//! [`crate::registry`].

use crate::config::SweepConfig;
use crate::plan::{PlannedRun, plan};
use crate::registry::{Job, Launch, own_wall_s, read_records, train_all, write_records};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_tensor::{Error, Result};
use strata_train::run_lock::RunLock;
use strata_train::{RunConfig, RunSummary};

/// What every run contributes to the results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRecord {
    /// Run folder name.
    pub run: String,
    /// Variant name.
    pub variant: String,
    /// Blocks.
    pub n_layer: usize,
    /// Residual width.
    pub d_model: usize,
    /// Heads.
    pub n_head: usize,
    /// Seed (the variants of one seed are paired).
    #[serde(default)]
    pub seed: u64,
    /// Every parameter (tied embedding once).
    pub params_total: usize,
    /// Parameters without embeddings: the N of the fits.
    pub params_non_embedding: usize,
    /// The planned token budget.
    pub token_budget: u64,
    /// Tokens actually trained on (whole steps): the D of the fits.
    pub tokens: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Training FLOPs, counted per step (attention included; `strata_core::flops`).
    pub train_flops: f64,
    /// Wall-clock seconds (evaluations included).
    pub wall_s: f64,
    /// Final validation loss.
    pub final_val_loss: f64,
    /// Best validation loss over the run's evaluations.
    pub best_val_loss: f64,
    /// The run's complete config.
    pub config: RunConfig,
}

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The sweep folder: `runs/<id>/` and `results.jsonl`.
    pub out: PathBuf,
    /// Runs at once.
    pub jobs: usize,
    /// The `strata` binary for parallel child processes (`None`: train in this process).
    pub executable: Option<PathBuf>,
    /// Progress bars for in-process runs.
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current run has saved a checkpoint.
    pub stop: Arc<AtomicBool>,
}

impl SweepOptions {
    /// Options writing into `out`, one run at a time in this process.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            jobs: 1,
            executable: None,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a sweep did.
#[derive(Clone, Debug)]
pub struct SweepOutcome {
    /// Runs trained (or continued) now.
    pub trained: usize,
    /// Runs that were already finished.
    pub skipped: usize,
    /// Every finished run, in plan order.
    pub records: Vec<SweepRecord>,
}

/// Runs every planned run of `sweep` that is not finished yet, then writes
/// `results.jsonl` (one [`SweepRecord`] per finished run) in the sweep folder.
pub fn run_sweep(sweep: &SweepConfig, options: &SweepOptions) -> Result<SweepOutcome> {
    let _lock = RunLock::acquire(&options.out, "sweep")?;
    let jobs = plan_jobs(sweep, &options.out)?;
    let launch = Launch {
        jobs: options.jobs,
        executable: options.executable.clone(),
        progress: options.progress,
        stop: options.stop.clone(),
    };
    let done = train_all(&jobs, &launch, "sweep", &sweep.name)?;
    let records = collect_results(sweep, &options.out)?;
    Ok(SweepOutcome {
        trained: done.trained,
        skipped: done.skipped,
        records,
    })
}

/// The jobs of every planned run of `sweep`, in run folders under `out/runs` (created).
pub fn plan_jobs(sweep: &SweepConfig, out: &Path) -> Result<Vec<Job>> {
    let runs = plan(sweep)?;
    let root = out.join("runs");
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    Ok(runs.iter().map(|r| job_of(r, &root)).collect())
}

/// The records of every finished run of `sweep` in `out`, read from the run folders (so
/// runs trained elsewhere, e.g. from job files, count), also written to `results.jsonl`.
pub fn collect_results(sweep: &SweepConfig, out: &Path) -> Result<Vec<SweepRecord>> {
    let runs = plan(sweep)?;
    let records = collect(&runs, &out.join("runs"))?;
    write_records(&out.join("results.jsonl"), &records)?;
    Ok(records)
}

/// The job of a planned run in the sweep's `runs` folder.
fn job_of(run: &PlannedRun, root: &Path) -> Job {
    Job {
        id: run.id.clone(),
        dir: root.join(&run.id),
        config: run.config.clone(),
        branch_of: run.branch_of.as_ref().map(|id| root.join(id)),
        init_from: None,
    }
}

/// The records of every finished run, in plan order.
fn collect(runs: &[PlannedRun], root: &Path) -> Result<Vec<SweepRecord>> {
    let mut records = Vec::new();
    for run in runs {
        let dir = root.join(&run.id);
        let Some(summary) = RunSummary::finished(&dir) else {
            continue;
        };
        let (Some(final_val), Some(best_val)) = (summary.final_val_loss, summary.best_val_loss)
        else {
            return Err(Error::Invalid(format!(
                "{}: finished without a validation loss",
                dir.display()
            )));
        };
        records.push(SweepRecord {
            run: run.id.clone(),
            variant: run.variant.name.clone(),
            n_layer: run.size.n_layer,
            d_model: run.size.d_model,
            n_head: run.size.n_head,
            seed: run.seed,
            params_total: summary.params.total,
            params_non_embedding: summary.params.non_embedding,
            token_budget: run.tokens,
            tokens: summary.tokens,
            steps: summary.steps,
            train_flops: summary.train_flops,
            wall_s: own_wall_s(&job_of(run, root), &summary),
            final_val_loss: final_val,
            best_val_loss: best_val,
            config: strata_train::checkpoint::load_meta(&dir)?.config,
        });
    }
    Ok(records)
}

/// Reads a results file written by [`run_sweep`].
pub fn read_results(path: &Path) -> Result<Vec<SweepRecord>> {
    read_records(path, "sweep record")
}
