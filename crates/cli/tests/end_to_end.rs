//! `strata train` → `info` → `eval` → `sample` on a tiny model, through the real binary.

mod common;

use common::{BLOCK_SIZE, D_MODEL, Fixture, N_LAYER, checkpoint_name, strata_run};
use std::collections::BTreeSet;
use std::path::Path;

/// Parses `step S: train loss T, val loss V (B batches per split)` from `strata eval`.
fn parse_eval(stdout: &str) -> (u64, String, String, usize) {
    let line = stdout.trim();
    let parsed = (|| {
        let rest = line.strip_prefix("step ")?;
        let (step, rest) = rest.split_once(": train loss ")?;
        let (train, rest) = rest.split_once(", val loss ")?;
        let (val, rest) = rest.split_once(" (")?;
        let batches = rest.strip_suffix(" batches per split)")?;
        Some((
            step.parse().ok()?,
            train.to_owned(),
            val.to_owned(),
            batches.parse().ok()?,
        ))
    })();
    parsed.unwrap_or_else(|| panic!("unexpected `strata eval` output: {stdout:?}"))
}

/// Checks a loss printed by `strata eval` against the full-precision value recorded in the
/// run: finite, and equal to it at the printed precision.
#[track_caller]
fn assert_printed_loss(printed: &str, recorded: f64, what: &str) {
    let value: f64 = printed
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {printed:?} is not a number: {e}"));
    assert!(value.is_finite(), "{what}: {printed} is not finite");
    let decimals = printed.split_once('.').map_or(0, |(_, d)| d.len());
    assert_eq!(
        printed,
        format!("{recorded:.decimals$}"),
        "{what}: eval printed {printed}, the run recorded {recorded}"
    );
    // The printed value is the recorded one rounded to `decimals` places.
    let tolerance = 0.5 * 10f64.powi(-(decimals as i32)) + 1e-6;
    assert!(
        (value - recorded).abs() <= tolerance,
        "{what}: eval printed {printed}, the run recorded {recorded}"
    );
}

/// The value of the text line of `strata info` that starts with `label`.
fn info_field<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label).map(str::trim))
        .unwrap_or_else(|| panic!("`strata info` has no {label:?} line:\n{stdout}"))
}

/// Parameter count of the tiny config: tied token embedding and learned positions, per
/// block 4·d² attention + 8·d² MLP weights and two LayerNorm gains (no biases), a final
/// LayerNorm.
fn expected_params(vocab: usize) -> (u64, u64) {
    let (l, d) = (N_LAYER, D_MODEL);
    let non_embedding = 12 * l * d * d + (2 * l + 1) * d;
    let total = non_embedding + (vocab + BLOCK_SIZE) * d;
    (total as u64, non_embedding as u64)
}

#[test]
fn train_info_eval_sample() {
    let fx = Fixture::new(20);
    let run = fx.path().join("run");
    let cwd = fx.path();

    // --- train
    let trained = fx.train(&run, &[]).ok();
    let printed: serde_json::Value = serde_json::from_str(&trained.stdout).unwrap_or_else(|e| {
        panic!(
            "train should print its summary as JSON ({e}):\n{}",
            trained.stdout
        )
    });
    let summary = common::summary(&run);
    assert_eq!(
        printed, summary,
        "printed summary differs from summary.json"
    );
    assert_eq!(summary["steps"], 20);
    assert_eq!(summary["interrupted"], false);
    for file in ["metrics.jsonl", "summary.json", "config.toml", "loss.png"] {
        let path = run.join(file);
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(len > 0, "{} is missing or empty", path.display());
    }
    let png = std::fs::read(run.join("loss.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "loss.png is not a PNG"
    );
    let checkpoints = run.join("checkpoints");
    for step in [10, 20] {
        let dir = checkpoints.join(checkpoint_name(step));
        assert!(
            dir.join("meta.json").is_file(),
            "{} is missing",
            dir.display()
        );
    }
    let latest = std::fs::read_to_string(checkpoints.join("LATEST")).unwrap();
    assert_eq!(latest.trim(), checkpoint_name(20));
    assert!(
        common::hidden_entries(&run).is_empty(),
        "{:?}",
        common::hidden_entries(&run)
    );

    let metrics = common::metrics(&run);
    let train_steps: Vec<u64> = common::records(&metrics, "train")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        train_steps,
        (1..=20).collect::<Vec<_>>(),
        "one train record per step"
    );
    let evals = common::records(&metrics, "eval");
    assert_eq!(evals.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 10, 20]);
    let eval_at = |step: u64| {
        let record = evals.iter().find(|r| r.0 == step).unwrap().1;
        (
            record["loss"].as_f64().unwrap(),
            record["val_loss"].as_f64().unwrap(),
        )
    };
    let (train_20, val_20) = eval_at(20);
    assert_eq!(summary["final_val_loss"].as_f64(), Some(val_20));
    assert_eq!(summary["final_train_loss"].as_f64(), Some(train_20));

    // --- info
    let text = std::fs::read_to_string(&fx.corpus).unwrap();
    let vocab = text.chars().collect::<BTreeSet<_>>().len();
    let (total, non_embedding) = expected_params(vocab);
    assert_eq!(summary["params"]["total"], total);
    assert_eq!(summary["params"]["non_embedding"], non_embedding);

    let info = strata_run(cwd, &["info".as_ref(), run.as_os_str()]).ok();
    assert_eq!(info_field(&info.stdout, "step"), "20 (1280 tokens)");
    assert_eq!(
        info_field(&info.stdout, "parameters"),
        format!("{total} total, {non_embedding} non-embedding")
    );
    assert!(
        info_field(&info.stdout, "checkpoint").ends_with(&checkpoint_name(20)),
        "info should resolve the run folder to its latest checkpoint:\n{}",
        info.stdout
    );
    assert!(
        info.stdout.contains(&format!("{vocab} tokens")),
        "{}",
        info.stdout
    );

    let first = checkpoints.join(checkpoint_name(10));
    let info = strata_run(
        cwd,
        &["info".as_ref(), first.as_os_str(), "--json".as_ref()],
    )
    .ok();
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(info["step"], 10);
    assert_eq!(info["params"]["total"], total);
    assert_eq!(info["best_val_loss"].as_f64(), Some(eval_at(10).1));

    // --- eval: the latest checkpoint, then an earlier one, against the recorded losses
    for (path, step) in [(run.as_path(), 20), (first.as_path(), 10)] {
        let out = strata_run(
            cwd,
            &[
                "eval".as_ref(),
                path.as_os_str(),
                "--device".as_ref(),
                "cpu".as_ref(),
            ],
        )
        .ok();
        let (printed_step, train, val, batches) = parse_eval(&out.stdout);
        assert_eq!(printed_step, step);
        assert_eq!(batches, 2, "eval should use the run's eval_iters");
        let (train_rec, val_rec) = eval_at(step);
        assert_printed_loss(&val, val_rec, &format!("val loss at step {step}"));
        assert_printed_loss(&train, train_rec, &format!("train loss at step {step}"));
    }

    // --- sample
    let sample = |extra: &[&str]| {
        let mut args = vec![
            "sample",
            run.to_str().unwrap(),
            "--prompt",
            "ROMEO:",
            "--tokens",
            "30",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--device", "cpu"]);
        let out = strata_run(cwd, &args).ok();
        let text = out
            .stdout
            .strip_suffix('\n')
            .unwrap_or(&out.stdout)
            .to_owned();
        assert!(
            text.starts_with("ROMEO:"),
            "sample should start with the prompt: {text:?}"
        );
        assert_eq!(
            text.chars().count(),
            "ROMEO:".len() + 30,
            "a char-level sample of 30 tokens should add 30 characters: {text:?}"
        );
        text
    };
    let greedy = sample(&["--temperature", "0", "--seed", "1"]);
    assert_eq!(
        greedy,
        sample(&["--temperature", "0", "--seed", "1"]),
        "greedy is deterministic"
    );
    assert_eq!(
        greedy,
        sample(&["--temperature", "0", "--seed", "2"]),
        "greedy ignores the seed"
    );
    assert_eq!(
        greedy,
        sample(&["--temperature", "1", "--top-k", "1", "--seed", "3"]),
        "top-k 1 keeps only the most likely token, as greedy does"
    );
    let hot_1 = sample(&["--temperature", "1", "--seed", "1"]);
    assert_eq!(
        hot_1,
        sample(&["--temperature", "1", "--seed", "1"]),
        "same seed, same sample"
    );
    let hot_2 = sample(&["--temperature", "1", "--seed", "2"]);
    assert_ne!(hot_1, hot_2, "--seed should change a temperature-1 sample");
    assert_ne!(
        hot_1, greedy,
        "a temperature-1 sample should not be the greedy one"
    );
}

/// `strata info` and `eval` resolve a run folder given relative to the working directory.
#[test]
fn relative_run_folder() {
    let fx = Fixture::new(10);
    fx.train(Path::new("rel-run"), &[]).ok();
    let info = strata_run(fx.path(), &["info", "rel-run", "--json"]).ok();
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(info["step"], 10);
    let out = strata_run(
        fx.path(),
        &["eval", "rel-run", "--batches", "1", "--device", "cpu"],
    )
    .ok();
    let (step, _, val, batches) = parse_eval(&out.stdout);
    assert_eq!((step, batches), (10, 1));
    assert!(val.parse::<f64>().unwrap().is_finite());
}
