//! A diverging run never poisons its run folder: NaN or infinite weights and losses never
//! become a checkpoint, `LATEST` or a metrics line; the run stops with an error naming the step
//! and the last good checkpoint; `eval` and `sample` refuse a checkpoint with non-finite
//! weights.

mod common;

use common::{Fixture, checkpoint_name, strata_run};
use std::path::Path;
use strata_train::checkpoint;
use tch::{Device, Tensor};

/// A learning rate whose first AdamW update turns the weights infinite (the step size
/// overflows f32), so the run diverges at once and the same way every time.
const HUGE_LR: &str = "train.learning_rate=1e300";

/// `--set` flags for `overrides`.
fn sets(overrides: &[&str]) -> Vec<String> {
    overrides
        .iter()
        .flat_map(|o| ["--set".to_owned(), (*o).to_owned()])
        .collect()
}

/// Trains the fixture's run to step 10 (one checkpoint, `step-000010`).
fn good_run(fx: &Fixture, run: &Path) {
    let args = sets(&["train.max_iters=10"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fx.train(run, &args).ok();
    assert_eq!(latest(run).as_deref(), Some(checkpoint_name(10).as_str()));
}

/// The checkpoint `LATEST` names, if any.
fn latest(run: &Path) -> Option<String> {
    std::fs::read_to_string(run.join("checkpoints").join("LATEST"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The checkpoint folders of a run.
fn checkpoint_folders(run: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    names
}

/// Every metrics line holds only finite numbers (NaN would have been written as `null`).
#[track_caller]
fn assert_metrics_finite(run: &Path) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(!text.contains("null"), "metrics.jsonl holds null:\n{text}");
    for record in common::metrics(run) {
        for (key, value) in record.as_object().unwrap() {
            if let Some(number) = value.as_f64() {
                assert!(number.is_finite(), "{key} = {number} in {record}");
            }
        }
    }
}

/// Resumes the good run at step 10 with a huge learning rate and `extra` overrides; returns
/// the failed output.
fn resume_diverging(fx: &Fixture, run: &Path, extra: &[&str]) -> common::Output {
    let args = sets(&[&[HUGE_LR, "train.max_iters=20"], extra].concat());
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--resume");
    fx.train(run, &args)
}

#[test]
fn weights_that_diverge_are_never_saved() {
    let fx = Fixture::new(20);
    let run = fx.path().join("run");
    good_run(&fx, &run);
    // A checkpoint every step, evaluations every 10: the first update after the resume makes
    // the weights infinite, and the checkpoint due right after it must be refused.
    let out = resume_diverging(&fx, &run, &["train.checkpoint_interval=1"]);
    let last_good = run.join("checkpoints").join(checkpoint_name(10));
    out.fails_with(&[
        "training diverged at step 11",
        "NaN or infinite",
        "tensor `",
        &last_good.display().to_string(),
    ]);
    assert_eq!(latest(&run).as_deref(), Some(checkpoint_name(10).as_str()));
    assert_eq!(checkpoint_folders(&run), [checkpoint_name(10)]);
    assert_metrics_finite(&run);
    // The good checkpoint still evaluates.
    strata_run(
        fx.path(),
        &[
            "eval".as_ref(),
            run.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
        ],
    )
    .ok();
}

#[test]
fn an_evaluation_that_diverges_stops_the_run() {
    let fx = Fixture::new(20);
    let run = fx.path().join("run");
    good_run(&fx, &run);
    // The run ends at step 11: its training loss (of the weights before the update) is
    // finite, the evaluation of the updated weights is not.
    let out = resume_diverging(&fx, &run, &["train.max_iters=11"]);
    out.fails_with(&[
        "training diverged at step 11",
        "evaluation",
        "NaN",
        &checkpoint_name(10),
    ]);
    assert_eq!(latest(&run).as_deref(), Some(checkpoint_name(10).as_str()));
    assert_eq!(checkpoint_folders(&run), [checkpoint_name(10)]);
    assert_metrics_finite(&run);
    assert!(
        !run.join("summary.json").exists() || common::summary(&run)["steps"] == 10,
        "summary.json should not describe the diverged run"
    );
}

#[test]
fn a_run_that_diverges_before_any_checkpoint_says_so() {
    let fx = Fixture::new(20);
    let run = fx.path().join("run");
    let args = sets(&[HUGE_LR]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Step 1's loss comes from the initial weights; step 2's from the infinite ones.
    fx.train(&run, &args).fails_with(&[
        "training diverged at step 2",
        "training loss is",
        "no good checkpoint",
    ]);
    assert_eq!(latest(&run), None);
    assert!(checkpoint_folders(&run).is_empty());
    assert_metrics_finite(&run);
}

#[test]
fn eval_sample_and_resume_refuse_non_finite_weights() {
    let fx = Fixture::new(10);
    let run = fx.path().join("run");
    good_run(&fx, &run);

    // Poison one weight of the good checkpoint and save it through the library's own path
    // (which does not check) into another run folder.
    let good = checkpoint::load(&run).unwrap();
    let (vs, _model) = checkpoint::load_model(&good, Device::Cpu).unwrap();
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    let poisoned = names[names.len() / 2].clone();
    let variables = vs.variables();
    let weight = &variables[&poisoned];
    tch::no_grad(|| {
        let _ = weight.flatten(0, -1).get(0).fill_(f64::NAN);
    });
    let optimizer: Vec<(String, Tensor)> = good
        .loaded
        .optimizer
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let bad_run = fx.path().join("bad");
    let bad = checkpoint::save(&bad_run, &vs, optimizer, &good.meta).unwrap();

    let needles = [
        bad.display().to_string(),
        format!("tensor `{poisoned}`"),
        "NaN or infinite".to_owned(),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    let cpu = ["--device", "cpu"];
    let eval = [&["eval", bad_run.to_str().unwrap()], &cpu[..]].concat();
    strata_run(fx.path(), &eval).fails_with(&needles);
    let sample = [&["sample", bad_run.to_str().unwrap()], &cpu[..]].concat();
    let out = strata_run(fx.path(), &sample).fails_with(&needles);
    assert!(
        out.stdout.trim().is_empty(),
        "sample printed {:?}",
        out.stdout
    );

    // Continuing it would only continue the divergence.
    let args = sets(&["train.max_iters=20"]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--resume");
    let before = common::snapshot(&bad_run);
    fx.train(&bad_run, &args).fails_with(&needles);
    assert!(
        common::snapshot(&bad_run) == before,
        "resuming a poisoned checkpoint must write nothing"
    );
}
