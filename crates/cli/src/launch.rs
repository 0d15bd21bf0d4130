//! `strata train --nproc N`: the N ranks of one data-parallel run on this machine, started as
//! torchrun starts PyTorch's (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
//! `MASTER_ADDR`, `MASTER_PORT`), each a `strata train` with the same arguments.
//!
//! Rank 0 keeps the terminal's output (progress bar, summary); the others are quiet but for
//! their log. When a rank fails, the others fail at their next collective; any still running
//! after [`GRACE`] are killed. A stop signal to this process is passed on to every rank, and
//! the ranks agree to stop after the same step (rank 0 saves).

use std::ffi::OsString;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strata_tensor::{Error, Result};

/// How long the other ranks get to stop on their own after one failed.
const GRACE: Duration = Duration::from_secs(10);

/// This process's arguments without `--nproc N` (or `--nproc=N`).
fn rank_arguments() -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--nproc" {
            args.next();
        } else if !arg.to_string_lossy().starts_with("--nproc=") {
            out.push(arg);
        }
    }
    out
}

/// A TCP port on the loopback interface that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("127.0.0.1:0"))?
        .port();
    Ok(port)
}

/// Starts rank `rank` of `nproc`, meeting at `port`.
fn start_rank(rank: usize, nproc: usize, port: u16, args: &[OsString]) -> Result<Child> {
    let exe = std::env::current_exe().map_err(Error::io("current executable"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", nproc.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("LOCAL_WORLD_SIZE", nproc.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    if rank > 0 {
        if !args.iter().any(|a| a == "--quiet") {
            cmd.arg("--quiet");
        }
        cmd.stdout(Stdio::null());
    }
    cmd.spawn().map_err(Error::io("strata train (a rank)"))
}

/// Runs `nproc` ranks of this `strata train` command and waits for them all; `stop` (the
/// signal flag) is passed on to them.
pub fn run(nproc: usize, stop: &AtomicBool) -> Result<()> {
    if std::env::var_os("WORLD_SIZE").is_some() {
        return Err(Error::Invalid(
            "--nproc starts its own ranks, but this process is already one (WORLD_SIZE is \
             set): drop --nproc under torchrun, Slurm or another launcher"
                .to_owned(),
        ));
    }
    let port = free_port()?;
    let args = rank_arguments();
    tracing::info!(nproc, port, "starting the ranks of a data-parallel run");
    let mut children: Vec<Option<Child>> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        match start_rank(rank, nproc, port, &args) {
            Ok(child) => children.push(Some(child)),
            Err(err) => {
                children.iter_mut().flatten().for_each(kill);
                return Err(err);
            }
        }
    }
    let (mut first_failure, mut forwarded) = (None::<(usize, ExitStatus)>, false);
    let mut failed_at = None::<Instant>;
    while children.iter().any(Option::is_some) {
        if stop.load(Ordering::SeqCst) && !forwarded {
            children
                .iter()
                .flatten()
                .for_each(strata_sweep::registry::ask_to_stop);
            forwarded = true;
        }
        let mut failed_now = Vec::new();
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child
                .try_wait()
                .map_err(Error::io("strata train (a rank)"))?
            {
                if !status.success() {
                    failed_now.push((rank, status));
                }
                *slot = None;
            }
        }
        if first_failure.is_none() && !failed_now.is_empty() {
            first_failure = cause(&failed_now);
            failed_at = Some(Instant::now());
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            tracing::warn!(
                "killing the ranks still running {} s after one failed",
                GRACE.as_secs()
            );
            children.iter_mut().flatten().for_each(kill);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match first_failure {
        Some(_) if stop.load(Ordering::SeqCst) => Ok(()),
        Some((rank, status)) => Err(Error::Distributed {
            rank,
            message: format!(
                "exited with {status}; the run folder keeps its last good checkpoint (resume it \
                 with --resume)"
            ),
        }),
        None => Ok(()),
    }
}

/// Of ranks found failed in the same poll, the one that most likely failed first: one ended by
/// a signal (the others then exit with an error about it), else the lowest rank.
fn cause(failed: &[(usize, ExitStatus)]) -> Option<(usize, ExitStatus)> {
    use std::os::unix::process::ExitStatusExt;
    failed
        .iter()
        .find(|(_, status)| status.signal().is_some())
        .or_else(|| failed.first())
        .copied()
}

/// Ends a rank at once and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_rank_ended_by_a_signal_is_named_before_ranks_that_exited_after_it() {
        let (error, killed) = (ExitStatus::from_raw(1 << 8), ExitStatus::from_raw(9));
        assert_eq!(cause(&[(0, error), (1, killed)]), Some((1, killed)));
        assert_eq!(cause(&[(0, error), (2, error)]), Some((0, error)));
        assert_eq!(cause(&[]), None);
    }
}
