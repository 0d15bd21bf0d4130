//! The trainer end to end: learning, checkpoints, exact resume, and refusals.

mod common;

use common::{checkpoint_val_loss, corpus, load_model, tiny_config};
use strata_tensor::TensorExt;
use strata_train::metrics::read_records;
use strata_train::{RunOptions, train};

/// The `drive_trainer` example, run as a test so that CI runs it, not only builds it.
#[allow(dead_code)]
#[path = "../examples/drive_trainer.rs"]
mod drive_trainer;

#[test]
fn the_drive_trainer_example_runs_to_its_end() {
    drive_trainer::main().unwrap();
}

#[test]
fn loss_falls_when_overfitting_a_tiny_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("repetitive.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(100),
    )
    .unwrap();
    let mut config = tiny_config(&text, 60, false, 0.0);
    config.train.learning_rate = 1e-2;
    config.train.min_lr = 1e-3;
    let summary = train(
        config,
        &RunOptions::new("tiny.toml", dir.path().join("run")),
    )
    .unwrap();
    let records = read_records(&dir.path().join("run/metrics.jsonl")).unwrap();
    let evals: Vec<f64> = records
        .iter()
        .filter(|r| r.kind == "eval")
        .map(|r| r.loss.unwrap())
        .collect();
    assert_eq!(evals.len(), 7, "evals at 0, 10, ..., 60");
    assert!(
        evals[0] > 3.0,
        "a fresh model is near ln(29 chars) = 3.37: {}",
        evals[0]
    );
    assert!(
        *evals.last().unwrap() < 0.5,
        "the model memorised the text: {evals:?}"
    );
    assert_eq!(summary.steps, 60);
    for name in [
        "loss.png",
        "loss.svg",
        "summary.json",
        "config.toml",
        "checkpoints/LATEST",
    ] {
        assert!(dir.path().join("run").join(name).exists(), "{name} written");
    }
}

#[test]
fn a_checkpoint_round_trip_gives_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(&corpus(dir.path()), 12, true, 0.0);
    let run = dir.path().join("run");
    train(config.clone(), &RunOptions::new("tiny.toml", &run)).unwrap();
    let (ckpt, _va, a) = load_model(&run).unwrap();
    let (_, _vb, b) = load_model(&run.join("checkpoints/step-000012")).unwrap();
    let idx = tch::Tensor::from_slice(&[1i64, 5, 9, 2, 7]).unsqueeze(0);
    let la = tch::no_grad(|| a.forward(&idx, false).unwrap());
    let lb = tch::no_grad(|| b.forward(&idx, false).unwrap());
    assert_eq!(la.max_abs_diff(&lb).unwrap(), 0.0);
    // The reloaded model reproduces the loss the run recorded at its last evaluation.
    let val = checkpoint_val_loss(&run);
    let records = read_records(&run.join("metrics.jsonl")).unwrap();
    let last_eval = records.iter().rev().find(|r| r.kind == "eval").unwrap();
    assert_eq!(val.mean.to_bits(), last_eval.val_loss.unwrap().to_bits());
    assert_eq!(ckpt.meta.step, 12);
    // DWA weights moved away from the identity and were saved.
    let dwa = a.dwa_weight_matrix().unwrap();
    assert!(dwa[1][0].unwrap().abs() > 0.0);
}

#[test]
fn resuming_with_another_config_or_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = corpus(dir.path());
    let run = dir.path().join("run");
    train(
        tiny_config(&text, 3, false, 0.0),
        &RunOptions::new("tiny.toml", &run),
    )
    .unwrap();

    let mut wider = tiny_config(&text, 6, false, 0.0);
    wider.model.d_model = 64;
    let mut options = RunOptions::new("wide.toml", &run);
    options.resume = Some(run.clone());
    let err = train(wider, &options).unwrap_err().to_string();
    assert!(
        err.contains("model.d_model: 32 vs 64") && err.contains("wide.toml"),
        "{err}"
    );

    let mut bytes = tiny_config(&text, 6, false, 0.0);
    bytes.data.tokenizer = strata_train::tokenizer::TokenizerKind::Byte;
    let err = train(bytes, &options).unwrap_err().to_string();
    assert!(
        err.contains("data.tokenizer") && err.contains("Byte"),
        "{err}"
    );
}

#[test]
fn truncated_or_corrupt_checkpoints_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(
        tiny_config(&corpus(dir.path()), 2, false, 0.0),
        &RunOptions::new("tiny.toml", &run),
    )
    .unwrap();
    let model = run.join("checkpoints/step-000002/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();

    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_model(&run).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    let mut flipped = bytes.clone();
    let mid = flipped.len() - 40;
    flipped[mid] ^= 0xFF;
    std::fs::write(&model, &flipped).unwrap();
    let err = load_model(&run).err().unwrap().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn bad_data_and_folders_are_refused_before_any_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let text = corpus(dir.path());
    let out = dir.path().join("never");

    let missing = tiny_config(&dir.path().join("nope.txt"), 2, false, 0.0);
    let err = train(missing, &RunOptions::new("tiny.toml", &out))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.txt"), "{err}");

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = train(
        tiny_config(&empty, 2, false, 0.0),
        &RunOptions::new("t", &out),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "to be or not to be, that is the question").unwrap();
    let err = train(
        tiny_config(&short, 2, false, 0.0),
        &RunOptions::new("t", &out),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("short.txt") && err.contains("17"),
        "names the file and block_size + 1: {err}"
    );
    assert!(!out.exists(), "nothing was written for refused runs");

    // An output folder that cannot be created (its parent is a file).
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let err = train(
        tiny_config(&text, 2, false, 0.0),
        &RunOptions::new("t", blocker.join("run")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("file/run") || err.contains("file"), "{err}");

    // An existing run is not clobbered unless asked to overwrite it.
    let run = dir.path().join("run");
    train(
        tiny_config(&text, 1, false, 0.0),
        &RunOptions::new("t", &run),
    )
    .unwrap();
    let err = train(
        tiny_config(&text, 1, false, 0.0),
        &RunOptions::new("t", &run),
    )
    .unwrap_err();
    assert!(
        matches!(&err, strata_tensor::Error::RunFolderTaken { dir, has_checkpoint: true } if dir == &run),
        "{err}"
    );
    // The library's wording names no command-line flag (the CLI adds those).
    assert!(err.to_string().contains("already holds a run") && !err.to_string().contains("--"));
}

#[test]
fn impossible_model_shapes_are_refused_with_the_config_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = corpus(dir.path());
    let out = dir.path().join("never");
    let mut heads = tiny_config(&text, 2, false, 0.0);
    heads.model.n_head = 3;
    let err = train(heads, &RunOptions::new("configs/mine.toml", &out))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "configs/mine.toml: field `model.d_model`: expected a positive multiple of n_head = 3 (or an explicit head_dim), found 32"
    );
    let mut period = tiny_config(&text, 2, true, 0.0);
    period.model.dwa.as_mut().unwrap().period = 0;
    let err = train(period, &RunOptions::new("configs/mine.toml", &out))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.dwa.period") && err.contains("p >= 1"),
        "{err}"
    );
    assert!(!out.exists());
}
