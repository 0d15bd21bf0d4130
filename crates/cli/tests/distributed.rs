//! Multi-process data-parallel training over libtorch's c10d (Gloo, loopback TCP), 2 ranks on
//! CPU: `strata train --nproc 2` equals one process splitting each batch across 2 workers,
//! bitwise (same chunks, same summation order); a run resumes under another world size; a
//! killed rank stops the others with a message and leaves the last good checkpoint; ranks
//! given different runs, an unreachable master and a batch the world size does not divide
//! are refused in bounded time.

mod common;

use common::{Fixture, Output, checkpoint_name, metrics, records, strata, wait};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use strata_train::checkpoint;

/// Seconds any rank waits for another in these tests.
const RANK_TIMEOUT_S: &str = "20";

/// `--set` flags for `overrides`.
fn sets(overrides: &[&str]) -> Vec<String> {
    overrides
        .iter()
        .flat_map(|o| ["--set".to_owned(), (*o).to_owned()])
        .collect()
}

/// Trains the fixture's config into `run` with `extra` arguments and `overrides`.
fn train(fx: &Fixture, run: &Path, extra: &[&str], overrides: &[&str]) -> Output {
    let flags = sets(overrides);
    let mut cmd = fx.train_cmd(run, extra);
    cmd.args(&flags)
        .env("STRATA_DIST_TIMEOUT_S", RANK_TIMEOUT_S);
    wait(cmd.spawn().unwrap(), "strata train", common::TIMEOUT)
}

/// The weights of `run`'s checkpoint at `step`, sorted by name.
fn weights(run: &Path, step: u64) -> Vec<(String, tch::Tensor)> {
    let dir = run.join("checkpoints").join(checkpoint_name(step));
    let mut model = checkpoint::load(&dir).unwrap().loaded.model;
    model.sort_by(|a, b| a.0.cmp(&b.0));
    model
}

/// The largest absolute difference between two runs' weights at `step`.
fn max_weight_difference(a: &Path, b: &Path, step: u64) -> f64 {
    let (a, b) = (weights(a, step), weights(b, step));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// The training losses a run logged, by step.
fn train_losses(run: &Path) -> Vec<(u64, f64)> {
    let log = metrics(run);
    records(&log, "train")
        .into_iter()
        .map(|(step, r)| (step, r["loss"].as_f64().unwrap()))
        .collect()
}

/// The lr schedule depends on `lr_decay_iters` only, so runs of different lengths share it.
const SCHEDULE: &str = "train.lr_decay_iters=20";

#[test]
fn two_ranks_equal_one_process_with_two_workers_bitwise() {
    let fx = Fixture::new(20);
    let single = fx.path().join("single");
    // One process, two single-threaded workers, each on half of every batch of 4 rows.
    train(&fx, &single, &[], &["train.threads=2", SCHEDULE]).ok();
    // Two processes, one single-threaded worker each, each on its half of every batch: the
    // gradients summed while backward runs (c10d's Reducer), then after it (the default).
    for (overlap, says) in [
        (
            "true",
            "gradients summed across the ranks while backward runs",
        ),
        ("false", "joining the process group"),
    ] {
        let ranks = fx.path().join(format!("ranks-overlap-{overlap}"));
        let setting = format!("train.overlap_grad_sync={overlap}");
        let out = train(
            &fx,
            &ranks,
            &["--nproc", "2"],
            &["train.threads=1", SCHEDULE, &setting],
        )
        .ok();
        assert!(out.stderr.contains(says), "{}", out.stderr);
        if overlap == "false" {
            assert!(
                !out.stderr.contains("while backward runs"),
                "{}",
                out.stderr
            );
        }
        assert_eq!(max_weight_difference(&single, &ranks, 20), 0.0, "{setting}");
        assert_eq!(train_losses(&single), train_losses(&ranks), "{setting}");
        assert_eq!(train_losses(&ranks).len(), 20);
        // Only rank 0 wrote, once: one metrics line per step, one summary.
        let summary = common::summary(&ranks);
        assert_eq!(summary["steps"], 20);
    }
}

#[test]
fn a_run_resumes_under_another_world_size() {
    let fx = Fixture::new(20);
    let (single, ranks) = (fx.path().join("single"), fx.path().join("ranks"));
    train(&fx, &single, &[], &["train.threads=2", SCHEDULE]).ok();
    train(
        &fx,
        &ranks,
        &["--nproc", "2"],
        &["train.threads=1", "train.max_iters=10", SCHEDULE],
    )
    .ok();
    train(
        &fx,
        &ranks,
        &["--resume"],
        &["train.threads=2", "train.max_iters=20", SCHEDULE],
    )
    .ok();
    // Same global batches and summation order here; in general equal to float rounding.
    let diff = max_weight_difference(&single, &ranks, 20);
    assert!(diff <= 1e-6, "weights differ by {diff}");
}

/// Starts a practically endless `--nproc 2` run into `run` and waits for its first checkpoint;
/// returns the launcher and the run's `LATEST` file.
fn long_run_with_a_checkpoint(fx: &Fixture, run: &Path) -> (std::process::Child, PathBuf) {
    let mut cmd = fx.train_cmd(run, &["--nproc", "2"]);
    cmd.env("STRATA_DIST_TIMEOUT_S", RANK_TIMEOUT_S);
    let launcher = cmd.spawn().unwrap();
    let latest = run.join("checkpoints").join("LATEST");
    let deadline = Instant::now() + common::TIMEOUT;
    while !latest.exists() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint within {:?}",
            common::TIMEOUT
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (launcher, latest)
}

/// The process ids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether process `pid` was started with `RANK=<rank>`.
fn has_rank(pid: u32, rank: &str) -> bool {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ
        .split(|b| *b == 0)
        .any(|var| var == format!("RANK={rank}").as_bytes())
}

#[test]
#[cfg(target_os = "linux")]
fn killing_a_rank_stops_the_others_and_keeps_the_last_checkpoint() {
    let fx = Fixture::new(1_000_000);
    let run = fx.path().join("run");
    let (launcher, latest) = long_run_with_a_checkpoint(&fx, &run);
    let rank1 = children(launcher.id())
        .into_iter()
        .find(|&pid| has_rank(pid, "1"))
        .expect("rank 1 is a child of the launcher");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &rank1.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let out = wait(launcher, "strata train --nproc 2", common::TIMEOUT);
    assert!(
        !out.status.success(),
        "the launcher succeeded:\n{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    // Rank 0 names the failed collective; the launcher names the rank that died first.
    assert!(
        out.stderr
            .contains("another rank stopped, was killed or timed out"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("rank 1"), "{}", out.stderr);
    // The last good checkpoint reads back, with finite weights.
    let name = std::fs::read_to_string(&latest).unwrap();
    let dir = run.join("checkpoints").join(name.trim());
    let ckpt = checkpoint::load(&dir).unwrap();
    for (name, tensor) in &ckpt.loaded.model {
        let finite = tensor.isfinite().all().int64_value(&[]) == 1;
        assert!(finite, "{name} is not finite");
    }
}

/// Starts rank `rank` of 2 by hand (as torchrun would) with `overrides`, meeting at `port`.
fn start_rank(fx: &Fixture, rank: usize, port: u16, overrides: &[&str]) -> std::process::Child {
    let mut cmd = strata(fx.path());
    cmd.arg("train")
        .arg("--config")
        .arg(&fx.config)
        .arg("--out")
        .arg(fx.path().join("run"))
        .arg("--quiet")
        .args(sets(overrides))
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("STRATA_DIST_TIMEOUT_S", RANK_TIMEOUT_S);
    cmd.spawn().unwrap()
}

/// A loopback port nothing listens on (free a moment ago).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn ranks_given_different_runs_are_refused() {
    let fx = Fixture::new(20);
    let port = free_port();
    let rank0 = start_rank(&fx, 0, port, &[]);
    let rank1 = start_rank(&fx, 1, port, &["train.learning_rate=1e-3"]);
    for (rank, child) in [(0, rank0), (1, rank1)] {
        let out = wait(child, &format!("rank {rank}"), common::TIMEOUT);
        out.fails_with(&[&format!("rank {rank}"), "were given different runs"]);
    }
}

#[test]
fn an_unreachable_master_is_an_error_in_bounded_time() {
    let fx = Fixture::new(20);
    let started = Instant::now();
    let mut cmd = strata(fx.path());
    cmd.args(["train", "--quiet", "--config"])
        .arg(&fx.config)
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", free_port().to_string())
        .env("STRATA_DIST_TIMEOUT_S", "2");
    let out = wait(cmd.spawn().unwrap(), "rank 1 alone", common::TIMEOUT);
    out.fails_with(&["rank 1", "could not join", "MASTER_ADDR:MASTER_PORT"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_world_size_that_does_not_divide_the_batch_is_refused() {
    let fx = Fixture::new(20);
    let out = train(&fx, &fx.path().join("run"), &["--nproc", "3"], &[]);
    out.fails_with(&["train.batch_size", "multiple of the world size 3"]);
}

#[test]
#[cfg(unix)]
fn a_stop_signal_stops_every_rank_after_the_same_step_and_rank_0_saves() {
    let fx = Fixture::new(1_000_000);
    let run = fx.path().join("run");
    let (launcher, latest) = long_run_with_a_checkpoint(&fx, &run);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = wait(launcher, "strata train --nproc 2", common::TIMEOUT);
    assert_eq!(out.status.code(), Some(143), "{}", out.stderr);
    // Both ranks stopped after the same step, and rank 0 saved it.
    let stops: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("stopped early; the run can be resumed"))
        .collect();
    assert_eq!(stops.len(), 2, "{}", out.stderr);
    let steps = common::summary(&run)["steps"].as_u64().unwrap();
    assert!(
        stops.iter().all(|l| l.ends_with(&format!("step={steps}"))),
        "{stops:?}"
    );
    let name = std::fs::read_to_string(&latest).unwrap();
    assert_eq!(name.trim(), checkpoint_name(steps));
    // And the run resumes, on 2 ranks again.
    let more = format!("train.max_iters={}", steps + 5);
    train(&fx, &run, &["--nproc", "2", "--resume"], &[&more]).ok();
    assert_eq!(common::summary(&run)["steps"].as_u64(), Some(steps + 5));
}
