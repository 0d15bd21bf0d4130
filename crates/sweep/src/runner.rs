//! Running a sweep: every planned run in its own run folder, finished runs skipped,
//! interrupted ones resumed from their latest checkpoint, and one results file.
//!
//! With `jobs = 1` runs train in this process, one after another. With more jobs and an
//! executable (the `strata` binary), independent runs train in parallel child processes
//! (`strata train --config <run>/run.toml`), each with `cores / jobs` threads.

use crate::config::SweepConfig;
use crate::plan::{PlannedRun, plan};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use strata_tensor::{Error, Result};
use strata_train::run_lock::RunLock;
use strata_train::{RunConfig, RunOptions, RunSummary};

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

/// True when `dir` holds a checkpoint to continue.
fn resumable(dir: &Path) -> bool {
    strata_train::run_folder::has_checkpoint(dir)
}

/// True when the run in `dir` was trained with `config` (its `run.toml`; the thread count
/// of a child process aside).
fn same_run(dir: &Path, config: &RunConfig) -> bool {
    match RunConfig::load(&dir.join("run.toml"), &[]) {
        Ok(mut saved) => {
            saved.train.threads = config.train.threads;
            saved == *config
        }
        Err(_) => false,
    }
}

/// Runs every planned run of `sweep` that is not finished yet, then writes
/// `results.jsonl` (one [`SweepRecord`] per finished run) in the sweep folder.
pub fn run_sweep(sweep: &SweepConfig, options: &SweepOptions) -> Result<SweepOutcome> {
    let runs = plan(sweep)?;
    let _lock = RunLock::acquire(&options.out, "sweep")?;
    let root = options.out.join("runs");
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    let pending: Vec<&PlannedRun> = runs
        .iter()
        .filter(|r| {
            let dir = root.join(&r.id);
            let done = RunSummary::finished(&dir).is_some();
            if done && !same_run(&dir, &r.config) {
                tracing::warn!(run = %r.id, "finished with other settings; training it again");
                return true;
            }
            !done
        })
        .collect();
    let skipped = runs.len() - pending.len();
    tracing::info!(
        sweep = %sweep.name,
        runs = runs.len(),
        finished = skipped,
        "sweep planned"
    );
    match (&options.executable, options.jobs) {
        (Some(exe), jobs) if jobs > 1 => run_children(exe, &pending, &root, options)?,
        _ => {
            for (i, run) in pending.iter().enumerate() {
                if options.stop.load(Ordering::SeqCst) {
                    break;
                }
                tracing::info!(run = %run.id, index = i + 1, of = pending.len(), "sweep run");
                run_in_process(run, &root.join(&run.id), options)?;
            }
        }
    }
    if options.stop.load(Ordering::SeqCst) {
        return Err(Error::Invalid(format!(
            "sweep interrupted; run the same command again to continue ({} runs were finished before)",
            skipped
        )));
    }
    let records = collect(&runs, &root)?;
    write_results(&options.out.join("results.jsonl"), &records)?;
    Ok(SweepOutcome {
        trained: pending.len(),
        skipped,
        records,
    })
}

/// Trains one run here, continuing its checkpoint if it has one.
fn run_in_process(run: &PlannedRun, dir: &Path, options: &SweepOptions) -> Result<()> {
    let mut train = RunOptions::new(dir.join("run.toml"), dir);
    train.progress = options.progress;
    train.stop = options.stop.clone();
    if resumable(dir) && same_run(dir, &run.config) {
        train.resume = Some(dir.to_path_buf());
    } else {
        train.overwrite = true;
    }
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    std::fs::write(dir.join("run.toml"), run.config.to_toml())
        .map_err(Error::io(dir.join("run.toml")))?;
    strata_train::train(run.config.clone(), &train)?;
    Ok(())
}

/// Trains the pending runs in up to `options.jobs` child processes.
fn run_children(
    exe: &Path,
    pending: &[&PlannedRun],
    root: &Path,
    options: &SweepOptions,
) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / options.jobs).max(1);
    let mut queue = pending.iter();
    let mut children: Vec<(String, Child)> = Vec::new();
    loop {
        while children.len() < options.jobs && !options.stop.load(Ordering::SeqCst) {
            let Some(run) = queue.next() else { break };
            let dir = root.join(&run.id);
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
            let mut config = run.config.clone();
            config.train.threads = threads;
            let continuing = resumable(&dir) && same_run(&dir, &run.config);
            let file = dir.join("run.toml");
            std::fs::write(&file, config.to_toml()).map_err(Error::io(&file))?;
            let mut command = Command::new(exe);
            command
                .arg("train")
                .arg("--config")
                .arg(&file)
                .arg("--out")
                .arg(&dir)
                .arg("--quiet");
            if continuing {
                command.arg("--resume");
            } else {
                command.arg("--overwrite");
            }
            let child = command.spawn().map_err(Error::io(exe))?;
            tracing::info!(run = %run.id, pid = child.id(), "sweep run started");
            children.push((run.id.clone(), child));
        }
        if children.is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut still = Vec::new();
        for (id, mut child) in children {
            match child.try_wait().map_err(Error::io(exe))? {
                // A child stopped by a signal exits non-zero after saving its checkpoint.
                Some(status) if !status.success() && !options.stop.load(Ordering::SeqCst) => {
                    return Err(Error::Invalid(format!(
                        "sweep run {id} failed ({status}); see {}",
                        root.join(&id).display()
                    )));
                }
                Some(status) if !status.success() => {
                    tracing::warn!(run = %id, %status, "sweep run stopped")
                }
                Some(_) => tracing::info!(run = %id, "sweep run finished"),
                None => still.push((id, child)),
            }
        }
        children = still;
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
            params_total: summary.params.total,
            params_non_embedding: summary.params.non_embedding,
            token_budget: run.tokens,
            tokens: summary.tokens,
            steps: summary.steps,
            train_flops: summary.train_flops,
            wall_s: summary.wall_s,
            final_val_loss: final_val,
            best_val_loss: best_val,
            config: strata_train::checkpoint::load(&dir)?.meta.config,
        });
    }
    Ok(records)
}

/// Writes the records as JSON lines, atomically.
fn write_results(path: &Path, records: &[SweepRecord]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text += &serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?;
        text.push('\n');
    }
    strata_train::checkpoint_io::write_atomic(path, text.as_bytes())
}

/// Reads a results file written by [`run_sweep`].
pub fn read_results(path: &Path) -> Result<Vec<SweepRecord>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::data(path, format!("line {}: not a sweep record: {e}", i + 1)))
        })
        .collect()
}
