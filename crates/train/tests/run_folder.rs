//! Run folders that cannot be corrupted: one writer at a time, `--overwrite` that deletes only
//! what strata wrote, recovery that leads somewhere, and housekeeping of temporaries and old
//! checkpoints.

mod common;

use common::{corpus, tiny_config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_tensor::Error;
use strata_train::checkpoint;
use strata_train::run_folder::{prune_checkpoints, remove_stale_temporaries};
use strata_train::run_lock::{LOCK_FILE, RunLock};
use strata_train::{RunConfig, RunOptions, RunSummary, train};

/// Every file under `dir` (relative path -> contents).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The checkpoint folder names under `<run>/checkpoints`, sorted.
fn checkpoint_folders(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    names
}

/// A tiny run of `iters` steps over a corpus in `dir`.
fn tiny(dir: &Path, iters: u64) -> RunConfig {
    tiny_config(&corpus(dir), iters, false, 0.0)
}

/// Options resuming the run folder `run`.
fn resume(run: &Path) -> RunOptions {
    let mut options = RunOptions::new("tiny.toml", run);
    options.resume = Some(run.to_path_buf());
    options
}

#[test]
fn a_held_lock_refuses_a_second_writer_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 10);
    let run = dir.path().join("run");
    let lock = RunLock::acquire(&run, "test-holder").unwrap();
    assert!(run.join(LOCK_FILE).is_file());

    // A second lock on the same folder is refused, even from this process.
    let err = RunLock::acquire(&run, "other").unwrap_err().to_string();
    let pid = std::process::id().to_string();
    assert!(err.contains(&pid) && err.contains("test-holder"), "{err}");

    // So are training, overwriting and resuming into it; nothing is written.
    let before = snapshot(&run);
    for overwrite in [false, true] {
        let mut options = RunOptions::new("tiny.toml", &run);
        options.overwrite = overwrite;
        let err = train(config.clone(), &options).unwrap_err().to_string();
        assert!(
            err.contains(&run.display().to_string())
                && err.contains(&pid)
                && err.contains("in use"),
            "{err}"
        );
    }
    assert_eq!(before, snapshot(&run), "a refused writer must not write");

    // Released (the lock file goes with it), the folder takes a run.
    drop(lock);
    assert!(!run.join(LOCK_FILE).exists());
    train(config, &RunOptions::new("tiny.toml", &run)).unwrap();
    assert!(
        !run.join(LOCK_FILE).exists(),
        "a finished run releases its lock"
    );
}

#[test]
fn a_lock_left_by_a_dead_process_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // What a killed holder leaves: the file, but no lock (the kernel released it).
    std::fs::write(
        run.join(LOCK_FILE),
        r#"{"pid":999999,"command":"strata train","what":"train"}"#,
    )
    .unwrap();
    let lock = RunLock::acquire(&run, "train").unwrap();
    let text = std::fs::read_to_string(lock.path()).unwrap();
    assert!(
        text.contains(&format!("\"pid\":{}", std::process::id())),
        "{text}"
    );
}

#[test]
fn overwrite_refuses_a_folder_holding_files_strata_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 10);
    let run = dir.path().join("run");
    train(config.clone(), &RunOptions::new("tiny.toml", &run)).unwrap();
    let mut overwrite = RunOptions::new("tiny.toml", &run);
    overwrite.overwrite = true;

    for notes in [run.join("notes.txt"), run.join("checkpoints/why.md")] {
        std::fs::write(&notes, "my notes").unwrap();
        let before = snapshot(&run);
        let err = train(config.clone(), &overwrite).unwrap_err().to_string();
        let name = notes.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.contains(&name) && err.contains("nothing was deleted"),
            "{err}"
        );
        assert_eq!(before, snapshot(&run), "nothing may be deleted");
        std::fs::remove_file(&notes).unwrap();
    }

    // Without them the old run is replaced.
    let mut shorter = config;
    shorter.train.max_iters = 5;
    shorter.train.eval_interval = 5;
    train(shorter, &overwrite).unwrap();
    assert_eq!(checkpoint_folders(&run), ["step-000005"]);
}

#[test]
fn overwrite_keeps_the_config_file_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 5);
    let run = dir.path().join("run");
    train(config.clone(), &RunOptions::new("tiny.toml", &run)).unwrap();
    // A sweep writes the config into the run folder and trains from it.
    let file = run.join("run.toml");
    std::fs::write(&file, config.to_toml()).unwrap();
    let mut overwrite = RunOptions::new(&file, &run);
    overwrite.overwrite = true;
    train(config, &overwrite).unwrap();
    assert!(
        file.is_file(),
        "the config being read must survive --overwrite"
    );
}

#[test]
fn an_edited_meta_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 20);
    let run = dir.path().join("run");
    let mut first = RunOptions::new("tiny.toml", &run);
    first.stop_after = Some(10);
    train(config.clone(), &first).unwrap();
    let meta = run.join("checkpoints/step-000010/meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    assert!(text.contains("\"step\": 10"), "{text}");
    std::fs::write(&meta, text.replace("\"step\": 10", "\"step\": 20")).unwrap();

    let err = train(config, &resume(&run)).unwrap_err().to_string();
    assert!(
        err.contains("step-000010") && err.contains("meta.json") && err.contains("edited"),
        "{err}"
    );
    assert!(
        !run.join("checkpoints/step-000020").exists(),
        "nothing may be trained from an edited checkpoint"
    );
}

#[test]
fn resume_before_the_first_checkpoint_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 10);
    let run = dir.path().join("run");
    // What a run killed before its first checkpoint leaves: its config, some metrics and a
    // half-written checkpoint under a temporary name.
    std::fs::create_dir_all(run.join("checkpoints/.step-000010.tmp-4242")).unwrap();
    std::fs::write(run.join("config.toml"), config.to_toml()).unwrap();
    std::fs::write(
        run.join("metrics.jsonl"),
        "{\"step\":1,\"kind\":\"train\",\"loss\":3.3,\"elapsed_s\":0.1}\n",
    )
    .unwrap();

    // Typed refusals, whose facts the command line words with its flags.
    let err = train(config.clone(), &resume(&run)).unwrap_err();
    assert!(
        matches!(&err, Error::NothingToResume { dir } if *dir == run),
        "{err:?}"
    );
    assert!(err.to_string().contains("no checkpoint"), "{err}");
    let err = train(config.clone(), &RunOptions::new("tiny.toml", &run)).unwrap_err();
    assert!(
        matches!(&err, Error::RunFolderTaken { dir, has_checkpoint: false } if *dir == run),
        "there is nothing to resume: {err:?}"
    );
    assert!(err.to_string().contains("left no checkpoint"), "{err}");

    let mut overwrite = RunOptions::new("tiny.toml", &run);
    overwrite.overwrite = true;
    let summary = train(config, &overwrite).unwrap();
    assert_eq!(summary.steps, 10);
}

#[test]
fn a_lost_latest_falls_back_to_the_newest_checkpoint_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 30);
    let run = dir.path().join("run");
    let mut first = RunOptions::new("tiny.toml", &run);
    first.stop_after = Some(25);
    train(config.clone(), &first).unwrap();
    assert_eq!(
        checkpoint_folders(&run),
        ["step-000010", "step-000020", "step-000025"]
    );
    std::fs::remove_file(run.join("checkpoints/LATEST")).unwrap();
    let newest = run.join("checkpoints/step-000025");
    assert_eq!(checkpoint::resolve(&run).unwrap(), newest);

    // A damaged newest checkpoint is passed over for the one before it.
    let model = newest.join("model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_eq!(
        checkpoint::resolve(&run).unwrap(),
        run.join("checkpoints/step-000020")
    );
    let summary = train(config, &resume(&run)).unwrap();
    assert_eq!(summary.steps, 30);
    assert!(!summary.interrupted);
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 10);
    let run = dir.path().join("run");
    let done = train(config.clone(), &RunOptions::new("tiny.toml", &run)).unwrap();
    let before = snapshot(&run);
    let again = train(config, &resume(&run)).unwrap();
    assert_eq!(
        before,
        snapshot(&run),
        "summary, metrics and checkpoints stay byte-identical"
    );
    // Read back from summary.json, so equal to within float parsing.
    let (again, done) = (again.final_val_loss.unwrap(), done.final_val_loss.unwrap());
    assert!(
        (again - done).abs() <= 1e-12 * done.abs(),
        "{again} vs {done}"
    );
}

#[test]
fn a_run_that_died_before_its_summary_gets_one_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 10);
    let run = dir.path().join("run");
    let done = train(config.clone(), &RunOptions::new("tiny.toml", &run)).unwrap();
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();

    // Killed between the last checkpoint and the summary.
    std::fs::remove_file(run.join("summary.json")).unwrap();
    assert!(RunSummary::finished(&run).is_none());
    let resumed = train(config.clone(), &resume(&run)).unwrap();
    // The final losses come back from the metrics log (JSON), so to within float parsing.
    let bits = |s: &RunSummary| {
        let round = |v: Option<f64>| v.map(|v| format!("{v:.12e}"));
        (
            s.steps,
            round(s.final_train_loss),
            round(s.final_val_loss),
            round(s.best_val_loss),
        )
    };
    assert_eq!(bits(&resumed), bits(&done));
    assert!(done.final_val_loss.is_some());
    assert_eq!(
        metrics,
        std::fs::read(run.join("metrics.jsonl")).unwrap(),
        "the logged evaluation is reused, not repeated"
    );
    let written = RunSummary::finished(&run).expect("a finished summary");
    assert_eq!(bits(&written), bits(&done));

    // A summary blanked by an earlier resume is repaired the same way.
    let path = run.join("summary.json");
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    value["final_train_loss"] = serde_json::Value::Null;
    value["final_val_loss"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    assert!(RunSummary::finished(&run).is_none());
    train(config, &resume(&run)).unwrap();
    assert_eq!(bits(&RunSummary::finished(&run).unwrap()), bits(&done));
}

#[test]
fn stale_temporaries_are_removed_and_interrupted_replacements_restored() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let checkpoints = run.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    let mkdir = |name: &str| {
        let path = checkpoints.join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("model.safetensors"), name).unwrap();
        path
    };
    let write = |path: PathBuf| std::fs::write(path, "x").unwrap();
    // Strata's own leftovers.
    let half_written = mkdir(".step-000030.tmp-4242");
    mkdir("step-000010");
    let replaced_old = mkdir(".step-000010.old-4242");
    let replacement = mkdir(".step-000010.tmp-4242");
    let interrupted_old = mkdir(".step-000020.old-77");
    let interrupted_new = mkdir(".step-000020.tmp-77");
    let ours_in_run = [
        run.join(".summary.json.tmp-4242"),
        run.join(".metrics.jsonl.tmp-1"),
        run.join(".loss.tmp-4242.png"),
        run.join(".strata-write-probe-4242"),
        checkpoints.join(".LATEST.tmp-4242"),
    ];
    for path in &ours_in_run {
        write(path.clone());
    }
    // Names strata never writes, which must survive.
    let theirs = [
        run.join(".notes.tmp-4242"),
        run.join(".hidden"),
        checkpoints.join(".step-000010.tmp-abc"),
        run.join("notes.txt"),
    ];
    for path in &theirs {
        write(path.clone());
    }

    remove_stale_temporaries(&run);

    for gone in [&half_written, &replaced_old, &replacement, &interrupted_new] {
        assert!(!gone.exists(), "{} should be removed", gone.display());
    }
    for gone in &ours_in_run {
        assert!(!gone.exists(), "{} should be removed", gone.display());
    }
    assert!(!interrupted_old.exists());
    assert_eq!(
        std::fs::read_to_string(checkpoints.join("step-000020/model.safetensors")).unwrap(),
        ".step-000020.old-77",
        "the complete copy of an interrupted replacement is put back"
    );
    assert_eq!(
        std::fs::read_to_string(checkpoints.join("step-000010/model.safetensors")).unwrap(),
        "step-000010"
    );
    for kept in &theirs {
        assert!(kept.exists(), "{} is not strata's", kept.display());
    }
}

#[test]
fn a_writer_taking_the_lock_clears_what_a_killed_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), 20);
    let run = dir.path().join("run");
    let mut first = RunOptions::new("tiny.toml", &run);
    first.stop_after = Some(10);
    train(config.clone(), &first).unwrap();
    let half_written = run.join("checkpoints/.step-000015.tmp-4242");
    std::fs::create_dir_all(&half_written).unwrap();
    std::fs::write(half_written.join("model.safetensors"), "torn").unwrap();
    train(config, &resume(&run)).unwrap();
    assert!(!half_written.exists());
}

/// Writes a metrics log with `(step, val_loss)` evaluations into `run`.
fn write_evals(run: &Path, evals: &[(u64, f64)]) {
    let lines: String = evals
        .iter()
        .map(|(step, val)| {
            format!(
                "{{\"step\":{step},\"kind\":\"eval\",\"loss\":1.0,\"val_loss\":{val},\"elapsed_s\":1.0}}\n"
            )
        })
        .collect();
    std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
}

#[test]
fn pruning_keeps_the_newest_the_latest_and_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let steps = [10u64, 20, 30, 40, 50, 60];
    for step in steps {
        std::fs::create_dir_all(run.join(format!("checkpoints/step-{step:06}"))).unwrap();
    }
    // Step 20 has the best validation loss; step 60 is a leftover of an abandoned future.
    write_evals(
        run,
        &[
            (10, 2.0),
            (20, 1.0),
            (30, 1.5),
            (40, 1.4),
            (50, 1.3),
            (60, 0.5),
        ],
    );
    prune_checkpoints(run, 2, 50, &[]);
    assert_eq!(
        checkpoint_folders(run),
        ["step-000020", "step-000040", "step-000050", "step-000060"]
    );
    prune_checkpoints(run, 1, 50, &[]);
    assert_eq!(
        checkpoint_folders(run),
        ["step-000020", "step-000050", "step-000060"]
    );

    // Without a readable metrics log the best one is unknown, so nothing is pruned.
    std::fs::write(run.join("metrics.jsonl"), "not json\n").unwrap();
    std::fs::create_dir_all(run.join("checkpoints/step-000030")).unwrap();
    prune_checkpoints(run, 1, 50, &[]);
    assert_eq!(checkpoint_folders(run).len(), 4);
}

#[test]
fn keep_last_prunes_during_training() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny(dir.path(), 40);
    config.train.keep_last = Some(2);
    let run = dir.path().join("run");
    train(config, &RunOptions::new("tiny.toml", &run)).unwrap();
    let left = checkpoint_folders(&run);
    assert!(
        left.ends_with(&["step-000030".to_owned(), "step-000040".to_owned()]),
        "{left:?}"
    );
    assert!(left.len() <= 3, "{left:?}");
    // Whatever else survived is the best validation checkpoint.
    let records = strata_train::metrics::read_records(&run.join("metrics.jsonl")).unwrap();
    let best = records
        .iter()
        .filter(|r| r.kind == "eval" && r.step > 0)
        .min_by(|a, b| a.val_loss.unwrap().total_cmp(&b.val_loss.unwrap()))
        .unwrap()
        .step;
    assert!(left.contains(&format!("step-{best:06}")), "{left:?}");
    let expected = if best >= 30 { 2 } else { 3 };
    assert_eq!(left.len(), expected, "{left:?}");
}

#[test]
fn keep_last_must_be_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = tiny(dir.path(), 10).to_toml();
    text = text.replace("[train]\n", "[train]\nkeep_last = 0\n");
    let err = RunConfig::parse(&text, "tiny.toml", "tiny", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiny.toml") && err.contains("train.keep_last") && err.contains("at least 1"),
        "{err}"
    );
}
