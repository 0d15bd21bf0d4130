//! Job files: the runs of a sweep or comparison as one `job.json` per run folder, for a job
//! runner elsewhere (a Slurm array, a loop on several machines that share the study folder).
//! [`run_job_file`] trains one: a finished run is skipped, a run folder locked by another
//! worker is left to it (the lock prevents double work), an interrupted run is continued, and
//! a cooldown branch whose source has not finished says so instead of training.
//!
//! After the jobs, the study's report-only mode collects the finished runs from their folders.

use crate::registry::{
    ChildJob, Job, is_done, resumable, run_options, same_run, train_one, write_job_file,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_tensor::{Error, Result};
use strata_train::{RunConfig, RunSummary};

/// A job file written by [`write_job_files`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFile {
    /// The `job.json` file.
    pub path: PathBuf,
    /// The run's id (its folder's name).
    pub id: String,
    /// Whether the run is a cooldown branch, which needs its source run finished first.
    pub branch: bool,
}

/// What [`run_job_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// The run was trained (or continued) to its end, or stopped by a signal after saving.
    Trained,
    /// The run had already finished with these settings; nothing was done.
    AlreadyFinished,
    /// Another process holds the run folder's lock (its message); nothing was done.
    Busy(String),
    /// The run is a cooldown branch of this source run folder, which has not finished.
    SourceNotFinished(PathBuf),
}

/// Writes each job's `run.toml` and `job.json` into its run folder; returns the job files,
/// the runs trained from their first step before the cooldown branches. (A job file's
/// `resume` is decided again when it runs.)
pub fn write_job_files(jobs: &[Job]) -> Result<Vec<JobFile>> {
    let (sources, branches): (Vec<&Job>, Vec<&Job>) =
        jobs.iter().partition(|j| j.branch_of.is_none());
    let mut files = Vec::with_capacity(jobs.len());
    for job in sources.into_iter().chain(branches) {
        let path = write_job_file(job, None)?;
        files.push(JobFile {
            path,
            id: job.id.clone(),
            branch: job.branch_of.is_some(),
        });
    }
    Ok(files)
}

/// Trains the run of the job file `file` unless it is finished, busy or waiting for its
/// source (see the module documentation); `stop` asks it to save and stop.
pub fn run_job_file(file: &Path, stop: Arc<AtomicBool>) -> Result<JobOutcome> {
    let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
    let order: ChildJob = serde_json::from_str(&text).map_err(|e| {
        Error::data(
            file,
            format!("not a job file (config, out, branch_of, init_from): {e}"),
        )
    })?;
    let config = RunConfig::load(&order.config, &[])?;
    let job = Job {
        id: order
            .out
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        dir: order.out.clone(),
        config: config.clone(),
        branch_of: order.branch_of.clone(),
        init_from: order.init_from.clone(),
    };
    if is_done(&job) {
        return Ok(JobOutcome::AlreadyFinished);
    }
    if let Some(source) = &job.branch_of
        && RunSummary::finished(source).is_none()
    {
        return Ok(JobOutcome::SourceNotFinished(source.clone()));
    }
    let continuing = resumable(&job.dir) && same_run(&job.dir, &config);
    let options = run_options(
        &order.config,
        &job.dir,
        continuing,
        job.init_from.as_deref(),
        &stop,
    );
    match train_one(config, &options, job.branch_of.as_deref()) {
        Ok(()) => Ok(JobOutcome::Trained),
        Err(busy @ Error::RunFolderLocked { .. }) => Ok(JobOutcome::Busy(busy.to_string())),
        Err(err) => Err(err),
    }
}
