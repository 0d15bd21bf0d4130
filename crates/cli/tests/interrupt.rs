//! Ctrl-C (SIGINT), SIGTERM and SIGHUP during `strata train` save a checkpoint and exit with
//! 128 + the signal's number; a second signal during the save is ignored; `--resume` finishes
//! the run.

mod common;

use common::{Fixture, checkpoint_name, hidden_entries, records, strata_run};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Steps of the interrupted run: long enough to interrupt, short enough to finish quickly.
const MAX_ITERS: u64 = 400;
/// Evaluation (and checkpoint) interval.
const EVAL_INTERVAL: u64 = 50;
/// The interrupt is sent once the metrics log shows this many steps.
const PROGRESS: u64 = 15;

/// A model a few times bigger than the fixture's, so that a step takes milliseconds.
fn overrides() -> Vec<String> {
    [
        "model.n_layer=2".to_owned(),
        "model.d_model=64".to_owned(),
        "model.block_size=32".to_owned(),
        "train.batch_size=8".to_owned(),
        format!("train.max_iters={MAX_ITERS}"),
        format!("train.eval_interval={EVAL_INTERVAL}"),
    ]
    .into_iter()
    .flat_map(|o| ["--set".to_owned(), o])
    .collect()
}

/// The highest step of a `train` record in a (possibly half-written) metrics log.
fn last_logged_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "train")
        .filter_map(|r| r["step"].as_u64())
        .max()
}

/// Sends `signal` (`INT`, `TERM`, `HUP`) to `pid`; SIGINT is what Ctrl-C in a terminal sends.
fn send(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Starts `cmd` and waits until its metrics log shows [`PROGRESS`] steps.
fn start_and_wait_for_progress(run: &Path, mut cmd: std::process::Command) -> (Child, String) {
    let what = common::describe(&cmd);
    let mut child = cmd.spawn().expect("cannot start strata train");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if last_logged_step(run).is_some_and(|s| s >= PROGRESS) {
            return (child, what);
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = common::wait(child, &what, Duration::from_secs(1));
            panic!(
                "{what} exited ({status}) before it could be interrupted:\n{}",
                out.stderr
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} made no progress within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks that a run stopped by a signal exited with `code`, not by the signal itself, and
/// left a complete checkpoint of its stop step that `LATEST` names; returns that step.
#[track_caller]
fn assert_stopped_and_saved(fx: &Fixture, run: &Path, stopped: &common::Output, code: i32) -> u64 {
    assert_eq!(
        (stopped.status.code(), stopped.status.signal()),
        (Some(code), None),
        "{}: expected exit status {code}; stderr:\n{}",
        stopped.what,
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("corrupted") && !stopped.stderr.contains("free()"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("saving a checkpoint"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("stopped early"),
        "{}",
        stopped.stderr
    );
    let summary = common::summary(run);
    let printed: serde_json::Value = serde_json::from_str(&stopped.stdout).unwrap();
    assert_eq!(printed, summary);
    assert_eq!(summary["interrupted"], true, "{summary}");
    let stop = summary["steps"].as_u64().unwrap();
    assert!(
        (PROGRESS..MAX_ITERS).contains(&stop),
        "stopped at step {stop}, expected between {PROGRESS} and {MAX_ITERS}"
    );
    let checkpoints = run.join("checkpoints");
    let latest = std::fs::read_to_string(checkpoints.join("LATEST")).unwrap();
    assert_eq!(
        latest.trim(),
        checkpoint_name(stop),
        "LATEST should name the stop checkpoint"
    );
    let saved = checkpoints.join(checkpoint_name(stop));
    for file in ["meta.json", "model.safetensors", "optimizer.safetensors"] {
        assert!(
            saved.join(file).is_file(),
            "{} is missing",
            saved.join(file).display()
        );
    }
    let info = strata_run(
        fx.path(),
        &["info".as_ref(), saved.as_os_str(), "--json".as_ref()],
    )
    .ok();
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(
        info["step"], stop,
        "the checkpoint should record the stop step"
    );
    let leftovers = hidden_entries(run);
    assert!(
        leftovers.is_empty(),
        "temporary files left after the stop: {leftovers:?}"
    );
    stop
}

/// `(step, loss, val_loss)` of every record of `kind`, for bit-exact comparisons.
fn losses(run: &Path, kind: &str) -> Vec<(u64, Option<f64>, Option<f64>)> {
    records(&common::metrics(run), kind)
        .into_iter()
        .map(|(step, r)| (step, r["loss"].as_f64(), r["val_loss"].as_f64()))
        .collect()
}

#[test]
fn ctrl_c_saves_and_resume_finishes() {
    let fx = Fixture::new(MAX_ITERS);
    let run = fx.path().join("run");
    let args = overrides();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // --- start, wait for progress, interrupt
    let (child, what) = start_and_wait_for_progress(&run, fx.train_cmd(&run, &args));
    send("INT", child.id());
    let stopped = common::wait(child, &what, Duration::from_secs(60));

    // --- the documented behaviour: a checkpoint, then exit status 130 (128 + SIGINT)
    let stop = assert_stopped_and_saved(&fx, &run, &stopped, 130);
    assert!(
        stopped.stderr.contains(&format!("step={stop}")),
        "the stop message should name step {stop}:\n{}",
        stopped.stderr
    );
    let checkpoints = run.join("checkpoints");
    let before = common::metrics(&run);
    let logged: Vec<u64> = records(&before, "train").iter().map(|r| r.0).collect();
    assert_eq!(
        logged,
        (1..=stop).collect::<Vec<_>>(),
        "metrics up to the stop step"
    );

    // --- resume from the run folder's latest checkpoint and finish
    let resumed = fx.train(&run, &[&args[..], &["--resume"]].concat()).ok();
    assert!(
        resumed.stderr.contains("resuming") && resumed.stderr.contains(&checkpoint_name(stop)),
        "should resume from {}:\n{}",
        checkpoint_name(stop),
        resumed.stderr
    );
    let summary = common::summary(&run);
    assert_eq!(summary["steps"], MAX_ITERS, "{summary}");
    assert_eq!(summary["interrupted"], false, "{summary}");
    let latest = std::fs::read_to_string(checkpoints.join("LATEST")).unwrap();
    assert_eq!(latest.trim(), checkpoint_name(MAX_ITERS));
    let leftovers = hidden_entries(&run);
    assert!(
        leftovers.is_empty(),
        "temporary files left after resuming: {leftovers:?}"
    );

    // Metrics continue: every step once, in order, nothing repeated after the resume point.
    let after = common::metrics(&run);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "records before the stop are kept as they were"
    );
    let train_steps: Vec<u64> = records(&after, "train").iter().map(|r| r.0).collect();
    assert_eq!(train_steps, (1..=MAX_ITERS).collect::<Vec<_>>());
    let eval_steps: Vec<u64> = records(&after, "eval").iter().map(|r| r.0).collect();
    let expected: Vec<u64> = (0..=MAX_ITERS).step_by(EVAL_INTERVAL as usize).collect();
    assert_eq!(eval_steps, expected);

    // Resuming is exact: the same losses as a run that was never interrupted.
    let straight = fx.path().join("straight");
    fx.train(&straight, &args).ok();
    assert_eq!(
        losses(&run, "eval"),
        losses(&straight, "eval"),
        "eval losses differ after resume"
    );
    assert_eq!(
        losses(&run, "train"),
        losses(&straight, "train"),
        "train losses differ after resume"
    );
}

#[test]
fn sigterm_and_sighup_save_and_exit_with_128_plus_the_signal() {
    let args = overrides();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (signal, code) in [("TERM", 143), ("HUP", 129)] {
        let fx = Fixture::new(MAX_ITERS);
        let run = fx.path().join("run");
        let (child, what) = start_and_wait_for_progress(&run, fx.train_cmd(&run, &args));
        send(signal, child.id());
        let stopped = common::wait(child, &what, Duration::from_secs(60));
        assert!(
            stopped.stderr.contains(&format!("SIG{signal}")),
            "the stop message should name SIG{signal}:\n{}",
            stopped.stderr
        );
        assert_stopped_and_saved(&fx, &run, &stopped, code);
    }
}

#[test]
fn a_second_signal_during_the_save_neither_crashes_nor_loses_the_checkpoint() {
    let args = overrides();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The second signal follows the first at once or after a short pause, so that across
    // the repetitions it lands while the step finishes and while the checkpoint is written.
    for pause_ms in [0, 1, 2, 5, 10, 20] {
        let fx = Fixture::new(MAX_ITERS);
        let run = fx.path().join("run");
        let (child, what) = start_and_wait_for_progress(&run, fx.train_cmd(&run, &args));
        send("INT", child.id());
        std::thread::sleep(Duration::from_millis(pause_ms));
        send("INT", child.id());
        let stopped = common::wait(child, &what, Duration::from_secs(60));
        assert_stopped_and_saved(&fx, &run, &stopped, 130);
    }
}
