//! The run registry shared by `strata sweep` and `strata compare`: every planned run in its
//! own run folder, a finished run with the same settings skipped, an interrupted one resumed
//! from its latest checkpoint, and pending runs trained here one after another or in
//! parallel child processes.
//!
//! A child process is started through a library entry point, not a command line: the parent
//! writes `job.json` into the run folder and starts the given executable (the `strata`
//! binary) with [`CHILD_ENV`] naming that file. The executable's `main` calls
//! [`run_child_if_requested`] first, which trains the job and reports how it went.

use crate::queue::Queue;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use strata_tensor::{Error, Result};
use strata_train::{RunConfig, RunOptions, RunSummary};

/// The environment variable that names a child process's job file.
pub const CHILD_ENV: &str = "STRATA_CHILD_JOB";

/// One planned run: its folder and its complete config.
#[derive(Clone, Debug)]
pub struct Job {
    /// Run folder name (unique among the jobs of one registry).
    pub id: String,
    /// The run folder.
    pub dir: PathBuf,
    /// The complete run config.
    pub config: RunConfig,
    /// The run folder of the warmup-stable-decay run this job is a cooldown branch of
    /// ([`strata_train::branch::cooldown`]); `None` for a run trained from its first step.
    pub branch_of: Option<PathBuf>,
    /// A checkpoint whose weights and model the run starts from (`RunOptions::init_from`).
    pub init_from: Option<PathBuf>,
}

/// How pending jobs are trained.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Runs at once.
    pub jobs: usize,
    /// The executable for parallel child processes (`None`: train in this process).
    pub executable: Option<PathBuf>,
    /// Progress bars for in-process runs.
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current runs have saved a checkpoint.
    pub stop: Arc<AtomicBool>,
}

/// What a child process is asked to do (the contents of `job.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChildJob {
    /// The run config file (the folder's `run.toml`).
    pub(crate) config: PathBuf,
    /// The run folder.
    pub(crate) out: PathBuf,
    /// Continue the folder's latest checkpoint instead of starting afresh.
    pub(crate) resume: bool,
    /// The source run folder when the job is a cooldown branch.
    #[serde(default)]
    pub(crate) branch_of: Option<PathBuf>,
    /// The checkpoint the run starts from, if any.
    #[serde(default)]
    pub(crate) init_from: Option<PathBuf>,
}

/// True when `dir` holds a checkpoint to continue.
pub(crate) fn resumable(dir: &Path) -> bool {
    strata_train::run_folder::has_checkpoint(dir)
}

/// True when the run in `dir` was trained with `config` (its `run.toml`; the thread count
/// of a child process aside).
pub(crate) fn same_run(dir: &Path, config: &RunConfig) -> bool {
    match RunConfig::load(&dir.join("run.toml"), &[]) {
        Ok(mut saved) => {
            saved.train.threads = config.train.threads;
            saved == *config
        }
        Err(_) => false,
    }
}

/// True when `job` has finished with its current settings; a run finished with other
/// settings is logged and counts as not done (it is trained again).
pub fn is_done(job: &Job) -> bool {
    let done = RunSummary::finished(&job.dir).is_some();
    if done && !same_run(&job.dir, &job.config) {
        tracing::warn!(run = %job.id, "finished with other settings; training it again");
        return false;
    }
    done
}

/// The jobs that are not done, in the given order.
pub fn pending(jobs: &[Job]) -> Vec<&Job> {
    jobs.iter().filter(|j| !is_done(j)).collect()
}

/// Trains `pending` as `launch` says: in this process one after another, or (with more
/// than one job and an executable) in up to `launch.jobs` child processes, each with
/// `cores / jobs` threads; in their order, a cooldown branch once its source has finished.
/// Returns early, without error, when `launch.stop` is set.
pub fn train_jobs(pending: &[&Job], launch: &Launch, what: &str) -> Result<()> {
    let mut queue = Queue::new(pending);
    match (&launch.executable, launch.jobs) {
        (Some(exe), jobs) if jobs > 1 => run_children(exe, &mut queue, launch, what),
        _ => {
            let mut index = 0;
            while !launch.stop.load(Ordering::SeqCst) {
                let Some(job) = queue.next_ready() else {
                    return queue.all_started();
                };
                index += 1;
                tracing::info!(run = %job.id, index, of = pending.len(), "{what} run");
                run_in_process(job, launch)?;
                queue.finished(job);
            }
            Ok(())
        }
    }
}

/// What [`train_all`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trained {
    /// Jobs trained (or continued) now.
    pub trained: usize,
    /// Jobs that were already finished.
    pub skipped: usize,
}

/// Trains every job of `jobs` that is not done, in their order, a cooldown branch as soon as
/// its source has finished ([`train_jobs`]). `what` and `name` word the log and the
/// interruption error ("sweep", its name).
pub fn train_all(jobs: &[Job], launch: &Launch, what: &str, name: &str) -> Result<Trained> {
    let todo = pending(jobs);
    let done = Trained {
        trained: todo.len(),
        skipped: jobs.len() - todo.len(),
    };
    tracing::info!(
        name,
        runs = jobs.len(),
        finished = done.skipped,
        "{what} planned"
    );
    train_jobs(&todo, launch, what)?;
    if launch.stop.load(Ordering::SeqCst) {
        return Err(Error::Invalid(format!(
            "{what} interrupted; run the same command again to continue ({} runs were \
             finished before)",
            done.skipped
        )));
    }
    Ok(done)
}

/// The wall seconds a finished job spent itself. A cooldown branch's summary also counts its
/// source's time up to the branch point (the checkpoint it resumed); that time is taken off.
/// When the source's checkpoint cannot be read, the summary's figure is kept with a warning.
pub fn own_wall_s(job: &Job, summary: &RunSummary) -> f64 {
    let Some(source) = &job.branch_of else {
        return summary.wall_s;
    };
    let train = &job.config.train;
    let at = strata_train::checkpoint::checkpoint_dir(source, train.decay_start(train.max_iters));
    match strata_train::checkpoint::load_meta(&at) {
        Ok(meta) => summary.wall_s - meta.elapsed_s,
        Err(err) => {
            tracing::warn!(run = %job.id, "wall time includes the source's: {err}");
            summary.wall_s
        }
    }
}

/// Writes the folder's `run.toml` (with `threads`) and returns whether its checkpoint is
/// continued.
pub(crate) fn prepare(job: &Job, threads: Option<usize>) -> Result<(PathBuf, bool)> {
    std::fs::create_dir_all(&job.dir).map_err(Error::io(&job.dir))?;
    let continuing = resumable(&job.dir) && same_run(&job.dir, &job.config);
    let mut config = job.config.clone();
    if let Some(threads) = threads {
        config.train.threads = threads;
    }
    let file = job.dir.join("run.toml");
    std::fs::write(&file, config.to_toml()).map_err(Error::io(&file))?;
    Ok((file, continuing))
}

/// The training options of a job in `dir` from its `run.toml`: continuing its checkpoint,
/// or starting afresh (from `init_from`'s weights when given).
pub(crate) fn run_options(
    file: &Path,
    dir: &Path,
    continuing: bool,
    init_from: Option<&Path>,
    stop: &Arc<AtomicBool>,
) -> RunOptions {
    let mut train = RunOptions::new(file, dir);
    train.stop = stop.clone();
    if continuing {
        train.resume = Some(dir.to_path_buf());
    } else {
        train.overwrite = true;
        train.init_from = init_from.map(Path::to_path_buf);
    }
    train
}

/// Trains one job here, continuing its checkpoint if it has one.
fn run_in_process(job: &Job, launch: &Launch) -> Result<()> {
    let (file, continuing) = prepare(job, None)?;
    let mut train = run_options(
        &file,
        &job.dir,
        continuing,
        job.init_from.as_deref(),
        &launch.stop,
    );
    train.progress = launch.progress;
    train_one(job.config.clone(), &train, job.branch_of.as_deref())
}

/// Trains one run: a cooldown branch of `branch_of` when given, else `config` itself.
pub(crate) fn train_one(
    config: RunConfig,
    options: &RunOptions,
    branch_of: Option<&Path>,
) -> Result<()> {
    match branch_of {
        Some(source) => strata_train::branch::cooldown(
            source,
            config.train.max_iters,
            &options.out_dir,
            options,
        )?,
        None => strata_train::train(config, options)?,
    };
    Ok(())
}

/// Writes `job`'s `run.toml` (with `threads`) and its `job.json` (continuing its checkpoint
/// when it has one with the same settings) into its run folder; returns the job file.
pub(crate) fn write_job_file(job: &Job, threads: Option<usize>) -> Result<PathBuf> {
    let (config, resume) = prepare(job, threads)?;
    let order = ChildJob {
        config,
        out: job.dir.clone(),
        resume,
        branch_of: job.branch_of.clone(),
        init_from: job.init_from.clone(),
    };
    let file = job.dir.join("job.json");
    let json = serde_json::to_string_pretty(&order).map_err(|e| Error::Invalid(e.to_string()))?;
    strata_train::checkpoint_io::write_atomic(&file, json.as_bytes())?;
    Ok(file)
}

/// Trains the pending jobs in up to `launch.jobs` child processes.
fn run_children(exe: &Path, queue: &mut Queue, launch: &Launch, what: &str) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / launch.jobs).max(1);
    let mut children: Vec<(&Job, Child)> = Vec::new();
    let mut stop_forwarded = false;
    loop {
        while children.len() < launch.jobs && !launch.stop.load(Ordering::SeqCst) {
            let Some(job) = queue.next_ready() else { break };
            let file = write_job_file(job, Some(threads))?;
            let child = Command::new(exe)
                .env(CHILD_ENV, &file)
                .spawn()
                .map_err(Error::io(exe))?;
            tracing::info!(run = %job.id, pid = child.id(), "{what} run started");
            children.push((job, child));
        }
        if children.is_empty() {
            if launch.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            return queue.all_started();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        if launch.stop.load(Ordering::SeqCst) && !stop_forwarded {
            // A signal sent to this process alone (not its process group) reaches the
            // children only this way; one that already had it ignores the second.
            children.iter().for_each(|(_, child)| ask_to_stop(child));
            stop_forwarded = true;
        }
        let mut still = Vec::new();
        for (job, mut child) in children {
            match child.try_wait().map_err(Error::io(exe))? {
                Some(status) if !status.success() && !launch.stop.load(Ordering::SeqCst) => {
                    return Err(Error::Invalid(format!(
                        "{what} run {} failed ({status}); see {}",
                        job.id,
                        job.dir.display()
                    )));
                }
                // A child stopped by a signal exits non-zero after saving its checkpoint.
                Some(status) if !status.success() => {
                    tracing::warn!(run = %job.id, %status, "{what} run stopped")
                }
                Some(_) => {
                    queue.finished(job);
                    tracing::info!(run = %job.id, "{what} run finished")
                }
                None => still.push((job, child)),
            }
        }
        children = still;
    }
}

/// Asks a child process to stop as a Ctrl-C would: SIGTERM on Unix, which a strata run
/// answers by saving a checkpoint and exiting. Elsewhere the child is left to finish.
pub fn ask_to_stop(child: &Child) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) only sends a signal. The pid is our own child's, which has not been
        // waited for yet, so it cannot have been reused by another process.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        if sent != 0 {
            tracing::warn!(pid, "could not forward the stop signal to a child run");
        }
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// In a child process started by [`train_jobs`] (the [`CHILD_ENV`] variable is set), trains
/// the job its file names and returns how that went; otherwise `None`. `stop` is called
/// only in a child, to install its stop flag (e.g. a Ctrl-C handler).
pub fn run_child_if_requested(stop: impl FnOnce() -> Arc<AtomicBool>) -> Option<Result<()>> {
    let file = PathBuf::from(std::env::var_os(CHILD_ENV)?);
    Some(run_child(&file, stop()))
}

/// Trains the job of the job file `file`.
fn run_child(file: &Path, stop: Arc<AtomicBool>) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
    let job: ChildJob = serde_json::from_str(&text)
        .map_err(|e| Error::data(file, format!("not a child job (config, out, resume): {e}")))?;
    let config = RunConfig::load(&job.config, &[])?;
    let options = run_options(
        &job.config,
        &job.out,
        job.resume,
        job.init_from.as_deref(),
        &stop,
    );
    train_one(config, &options, job.branch_of.as_deref())
}

/// Writes `records` as JSON lines to `path`, atomically.
pub fn write_records<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text += &serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?;
        text.push('\n');
    }
    strata_train::checkpoint_io::write_atomic(path, text.as_bytes())
}

/// Reads a JSON-lines file written by [`write_records`]; `what` names a record in errors.
pub fn read_records<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::data(path, format!("line {}: not a {what}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_child_asked_to_stop_receives_sigterm() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        ask_to_stop(&child);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
