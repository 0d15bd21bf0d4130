//! Bad input to `strata` fails with status 1 and an error on stderr that names the problem.

mod common;

use common::{Fixture, snapshot, strata_run};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `path` as `&str`, for argument lists.
fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn config_errors_name_the_file_and_field() {
    let fx = Fixture::new(10);
    let config = s(&fx.config);
    let out = fx.path().join("run");

    // Unknown key in the file: the file, the line and the key.
    let text = std::fs::read_to_string(&fx.config).unwrap();
    let bad = fx.path().join("bad-key.toml");
    std::fs::write(
        &bad,
        text.replace("n_head = 2\n", "n_head = 2\nn_heads = 4\n"),
    )
    .unwrap();
    let mut cmd = common::strata(fx.path());
    cmd.args(["train", "--config", s(&bad), "--out", s(&out)]);
    common::run(&mut cmd).fails_with(&[s(&bad), "n_heads", "line 6"]);

    // Unknown keys and wrong types through --set: the file, the override and the field.
    let cases: [(&str, &[&str]); 5] = [
        ("train.max_iter=5", &["train.max_iter=5", "max_iter"]),
        ("trian.max_iters=5", &["trian.max_iters=5", "trian"]),
        (
            "train.max_iters=lots",
            &["train.max_iters=lots", "\"lots\"", "train.max_iters"],
        ),
        ("model.n_layer=1.5", &["model.n_layer=1.5", "model.n_layer"]),
        ("train.max_iters", &["train.max_iters", "key=value"]),
    ];
    for (item, needles) in cases {
        let mut cmd = common::strata(fx.path());
        cmd.args(["train", "--config", config, "--out", s(&out), "--set", item]);
        common::run(&mut cmd).fails_with(&[&[config][..], needles].concat());
    }

    // A value that parses but is out of range: the field and the value.
    let mut cmd = common::strata(fx.path());
    cmd.args([
        "train",
        "--config",
        config,
        "--out",
        s(&out),
        "--set",
        "train.batch_size=0",
    ]);
    common::run(&mut cmd).fails_with(&[config, "train.batch_size", "at least 1"]);

    // A missing config file.
    let missing = fx.path().join("no-such-config.toml");
    let mut cmd = common::strata(fx.path());
    cmd.args(["train", "--config", s(&missing), "--out", s(&out)]);
    common::run(&mut cmd).fails_with(&[s(&missing), "No such file"]);

    // A missing corpus.
    let corpus = fx.path().join("no-such-corpus.txt");
    let set = format!("data.path='{}'", corpus.display());
    fx.train(&out, &["--set", &set])
        .fails_with(&[s(&corpus), "no such file"]);

    assert!(
        !out.exists(),
        "failed runs should not create the run folder"
    );
}

#[test]
fn commands_on_a_folder_that_is_not_a_checkpoint() {
    let fx = Fixture::new(10);
    let folder = fx.path().join("not-a-checkpoint");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("notes.txt"), "hello").unwrap();
    for command in ["eval", "info", "sample"] {
        strata_run(fx.path(), &[command, s(&folder)]).fails_with(&[s(&folder), "meta.json"]);
    }
    let missing = fx.path().join("missing");
    for command in ["eval", "info", "sample"] {
        strata_run(fx.path(), &[command, s(&missing)]).fails_with(&[s(&missing), "does not exist"]);
    }
    strata_run(fx.path(), &["info", s(&fx.corpus)]).fails_with(&[s(&fx.corpus), "not a folder"]);
    assert_eq!(
        snapshot(&folder).len(),
        1,
        "the folder should be left alone"
    );
}

#[test]
fn resume_without_a_checkpoint() {
    let fx = Fixture::new(10);
    // No run folder at all: bare --resume means the run folder's latest checkpoint.
    let out = fx.path().join("fresh");
    fx.train(&out, &["--resume"])
        .fails_with(&[s(&out), "checkpoint"]);
    assert!(
        !out.exists(),
        "a failed resume should not create the run folder"
    );

    // An empty run folder, and an explicit checkpoint path that does not exist.
    std::fs::create_dir(&out).unwrap();
    fx.train(&out, &["--resume"])
        .fails_with(&[s(&out), "meta.json"]);
    assert!(
        snapshot(&out).is_empty(),
        "a failed resume should not write into the run folder"
    );
    let gone = out.join("checkpoints").join("step-000005");
    fx.train(&out, &["--resume", s(&gone)])
        .fails_with(&[s(&gone), "does not exist"]);

    // A run folder with a checkpoints/ folder but no checkpoint in it yet.
    std::fs::create_dir(out.join("checkpoints")).unwrap();
    fx.train(&out, &["--resume"])
        .fails_with(&[s(&out), "no checkpoint"]);
}

#[test]
fn existing_run_needs_overwrite() {
    let fx = Fixture::new(20);
    let run = fx.path().join("run");
    fx.train(&run, &[]).ok();
    let before = snapshot(&run);

    fx.train(&run, &["--set", "train.max_iters=10"])
        .fails_with(&[s(&run), "--overwrite", "--resume"]);
    assert!(
        before == snapshot(&run),
        "the existing run must be left untouched"
    );

    // With --overwrite the old run is replaced, not merged.
    fx.train(&run, &["--set", "train.max_iters=10", "--overwrite"])
        .ok();
    assert_eq!(common::summary(&run)["steps"], 10);
    let checkpoints = run.join("checkpoints");
    assert!(checkpoints.join("step-000010").is_dir());
    assert!(
        !checkpoints.join("step-000020").exists(),
        "the old run's checkpoints should be gone"
    );
    let last = common::metrics(&run).last().unwrap()["step"].as_u64();
    assert_eq!(last, Some(10), "the old run's metrics should be gone");
}

#[test]
fn unwritable_output_folder() {
    let fx = Fixture::new(10);
    let locked = fx.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(locked.join("probe"), b"x").is_ok() {
        eprintln!("skipping: this user can write into a 0o555 folder (root)");
        return;
    }
    let inside = locked.join("run");
    fx.train(&inside, &[])
        .fails_with(&[s(&inside), "not writable"]);
    fx.train(&locked, &[])
        .fails_with(&[s(&locked), "not writable"]);
    assert!(snapshot(&locked).is_empty());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}
