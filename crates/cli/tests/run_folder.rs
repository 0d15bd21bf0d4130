//! Run folders through the real binary: a second writer is refused with the holder's pid,
//! `--overwrite` spares folders with user files, recovery messages say what to run, a
//! finished run resumes to nothing, old checkpoints are pruned, and an export folder is
//! replaced only with `--overwrite` and only when it holds nothing but an earlier export.

mod common;

use common::{Fixture, checkpoint_name, snapshot, strata_run};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// `s` as a `&str`, for argument lists.
fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Waits until `path` exists, failing if `child` exits first.
fn wait_for(child: &mut Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("strata train exited ({status}) before the test could use it");
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear in 60 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_writer_is_refused_while_a_run_trains() {
    let fx = Fixture::new(1_000_000);
    let run = fx.path().join("run");
    let mut child = fx.train_cmd(&run, &[]).spawn().unwrap();
    wait_for(&mut child, &run.join("checkpoints").join("LATEST"));
    let pid = child.id().to_string();

    // While it trains, no second run may overwrite or continue it.
    fx.train(&run, &["--overwrite"])
        .fails_with(&[s(&run), "in use", &pid, "train"]);
    fx.train(&run, &["--resume"])
        .fails_with(&[s(&run), "in use", &pid]);

    // Killed, it holds nothing (the kernel drops the lock; the lock file stays behind).
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(run.join("strata.lock").exists());
    fx.train(&run, &["--overwrite", "--set", "train.max_iters=10"])
        .ok();
    assert_eq!(common::summary(&run)["steps"], 10);
    assert!(!run.join("strata.lock").exists());
}

#[test]
fn a_run_killed_before_its_first_checkpoint_says_how_to_recover() {
    let fx = Fixture::new(1_000_000);
    let run = fx.path().join("run");
    // Evaluations (and so checkpoints) only at step 0, which is never checkpointed.
    let no_checkpoints = ["--set", "train.eval_interval=1000000"];
    let mut child = fx.train_cmd(&run, &no_checkpoints).spawn().unwrap();
    wait_for(&mut child, &run.join("metrics.jsonl"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run.join("checkpoints").join("LATEST").exists());

    fx.train(&run, &["--resume"])
        .fails_with(&[s(&run), "no checkpoint", "--overwrite"]);
    let plain = fx
        .train(&run, &[])
        .fails_with(&[s(&run), "left no checkpoint", "--overwrite"]);
    assert!(!plain.stderr.contains("pass --resume"), "{}", plain.stderr);
    fx.train(&run, &["--overwrite", "--set", "train.max_iters=10"])
        .ok();
    assert_eq!(common::summary(&run)["steps"], 10);
    assert!(
        common::hidden_entries(&run).is_empty(),
        "{:?}",
        common::hidden_entries(&run)
    );
}

#[test]
fn overwrite_spares_user_files_and_an_edited_checkpoint_is_refused() {
    let fx = Fixture::new(10);
    let run = fx.path().join("run");
    fx.train(&run, &[]).ok();
    let notes = run.join("notes.txt");
    std::fs::write(&notes, "what I changed").unwrap();
    let before = snapshot(&run);
    fx.train(&run, &["--overwrite"])
        .fails_with(&[s(&run), "notes.txt", "nothing was deleted"]);
    assert!(before == snapshot(&run), "nothing may be deleted");

    let meta = run
        .join("checkpoints")
        .join(checkpoint_name(10))
        .join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace("\"step\": 10", "\"step\": 20")).unwrap();
    strata_run(fx.path(), &["info", s(&run)]).fails_with(&["meta.json", "edited"]);
}

#[test]
fn an_export_is_replaced_only_with_overwrite_and_never_over_user_files() {
    let fx = Fixture::new(4);
    let run = fx.path().join("run");
    fx.train(&run, &[]).ok();
    let out = fx.path().join("hf");
    let export = |extra: &[&str]| {
        let mut args = vec!["export", s(&run), "--format", "hf-gpt2", s(&out)];
        args.extend_from_slice(extra);
        strata_run(fx.path(), &args)
    };
    export(&[]).ok();
    export(&[]).fails_with(&[s(&out), "holds an earlier export", "--overwrite"]);
    export(&["--overwrite"]).ok();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&out);
    export(&["--overwrite"]).fails_with(&[
        s(&out),
        "notes.txt",
        "--overwrite replaces only earlier exports",
    ]);
    assert!(before == snapshot(&out), "nothing may be replaced");
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let fx = Fixture::new(10);
    let run = fx.path().join("run");
    fx.train(&run, &[]).ok();
    let before = snapshot(&run);
    let again = fx.train(&run, &["--resume"]).ok();
    assert!(
        again.stderr.contains("already finished"),
        "{}",
        again.stderr
    );
    assert!(
        before == snapshot(&run),
        "summary, metrics and checkpoints stay byte-identical"
    );
}

#[test]
fn keep_last_prunes_old_checkpoints() {
    let fx = Fixture::new(40);
    let run = fx.path().join("run");
    fx.train(&run, &["--set", "train.keep_last=0"])
        .fails_with(&["train.keep_last", "at least 1"]);
    fx.train(&run, &["--set", "train.keep_last=1"]).ok();
    let checkpoints = run.join("checkpoints");
    let left: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert!(left.contains(&checkpoint_name(40)), "{left:?}");
    assert!(left.len() <= 2, "the latest and at most the best: {left:?}");
}
