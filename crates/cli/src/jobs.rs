//! Job lists: `strata sweep|compare --write-jobs FILE` writes one `strata job <job.json>` line
//! per run, and `strata job` trains them (see `strata_sweep::job_files`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_sweep::job_files::{JobOutcome, run_job_file, write_job_files};
use strata_sweep::registry::Job;
use strata_tensor::{Error, Result};

/// Writes each job's file and the list `file`: one shell line per run, the runs trained from
/// their first step before the cooldown branches (which need their source finished).
pub fn write_list(jobs: &[Job], file: &Path) -> Result<()> {
    let files = write_job_files(jobs)?;
    let exe = std::env::current_exe().map_err(Error::io("current executable"))?;
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut text = String::new();
    for job in &files {
        let path = std::path::absolute(&job.path).map_err(Error::io(&job.path))?;
        text += &format!("{} job {}\n", quote(&exe), quote(&path));
    }
    strata_train::checkpoint_io::write_atomic(file, text.as_bytes())?;
    let branches = files.iter().filter(|f| f.branch).count();
    let sources = files.len() - branches;
    println!("wrote {} ({} lines)", file.display(), files.len());
    if branches > 0 {
        println!(
            "lines 1-{sources} train runs from their first step; lines {}-{} are cooldown \
             branches of them: start those after the first ones finish (Slurm: a second \
             array with --dependency=afterok on the first)",
            sources + 1,
            files.len()
        );
    }
    println!("when every line has run, collect the results with --report-only");
    Ok(())
}

/// Trains the runs of `files` one after another; a branch whose source has not finished is
/// an error (after the others ran).
pub fn run(files: &[PathBuf], stop: &Arc<AtomicBool>) -> Result<()> {
    let mut waiting = Vec::new();
    for file in files {
        match run_job_file(file, stop.clone())? {
            JobOutcome::Trained => tracing::info!(job = %file.display(), "trained"),
            JobOutcome::AlreadyFinished => {
                tracing::info!(job = %file.display(), "already finished; skipped")
            }
            JobOutcome::Busy(why) => tracing::info!(job = %file.display(), "skipped: {why}"),
            JobOutcome::SourceNotFinished(source) => waiting.push((file, source)),
        }
    }
    match waiting.first() {
        None => Ok(()),
        Some((file, source)) => Err(Error::Invalid(format!(
            "{}: a cooldown branch of {}, which has not finished: run that run's line first, \
             then this one again",
            file.display(),
            source.display()
        ))),
    }
}
