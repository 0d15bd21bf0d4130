//! `strata merge` through the real binary: merged and expanded checkpoints work with `eval`,
//! `info`, `sample` and `train --init-from`, and bad merges are refused clearly.

mod common;

use common::{Fixture, strata_run};
use std::path::Path;

/// The `val loss` printed by `strata eval` for `run`.
fn val_loss(fx: &Fixture, run: &Path) -> String {
    let out = strata_run(fx.path(), &["eval".as_ref(), run.as_os_str()]).ok();
    out.stdout
        .split("val loss ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected eval output {:?}", out.stdout))
        .to_owned()
}

/// The total parameter count printed by `strata info`.
fn params(fx: &Fixture, run: &Path) -> u64 {
    let out = strata_run(fx.path(), &["info".as_ref(), run.as_os_str()]).ok();
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("parameters"))
        .expect("a parameters line")
        .trim();
    line.split(' ').next().unwrap().parse().unwrap()
}

/// Writes `name` into the fixture folder and runs `strata merge --config name --out out`.
fn merge(fx: &Fixture, name: &str, text: &str, out: &str) -> common::Output {
    std::fs::write(fx.path().join(name), text).unwrap();
    strata_run(fx.path(), &["merge", "--config", name, "--out", out])
}

#[test]
fn merged_and_expanded_checkpoints_are_normal_runs() {
    let fx = Fixture::new(10);
    let base = fx.path().join("base");
    fx.train(&base, &[]).ok();
    for (name, seed) in [("ft-a", "2"), ("ft-b", "3")] {
        let seed = format!("train.seed={seed}");
        fx.train(
            &fx.path().join(name),
            &["--init-from", "base", "--set", &seed],
        )
        .ok();
    }
    // Fine-tunes start from the base's weights, so they moved away from it, not from scratch.
    assert_ne!(val_loss(&fx, &fx.path().join("ft-a")), val_loss(&fx, &base));

    // Task arithmetic with every λ = 0 is the base itself.
    merge(
        &fx,
        "zero.toml",
        "base = \"base\"\nmodels = [\"ft-a\", \"ft-b\"]\nmethod = \"task_arithmetic\"\nweights = [0.0, 0.0]\n",
        "zero",
    )
    .ok();
    assert_eq!(val_loss(&fx, &fx.path().join("zero")), val_loss(&fx, &base));

    // A TIES merge evaluates, samples, and trains further.
    let ties = merge(
        &fx,
        "ties.toml",
        "base = \"base\"\nmodels = [\"ft-a\", \"ft-b\"]\nmethod = \"ties\"\ndensity = 0.5\n\
         [[groups]]\ntensors = \"h.*.mlp.*\"\ndensity = 0.2\n",
        "ties",
    )
    .ok();
    assert!(ties.stdout.contains("wrote"), "{}", ties.stdout);
    let merged = fx.path().join("ties");
    assert!(merged.join("merge.toml").exists());
    let loss: f64 = val_loss(&fx, &merged).parse().unwrap();
    assert!(loss.is_finite());
    strata_run(
        fx.path(),
        &["sample", "ties", "--tokens", "20", "--prompt", "ROMEO:"],
    )
    .ok();
    fx.train(&fx.path().join("ties-more"), &["--init-from", "ties"])
        .ok();

    // Layer plans: copies double the blocks; tied layers keep the base's parameter count.
    merge(
        &fx,
        "copy.toml",
        "[layers]\nsource = \"base\"\nplan = \"1-1\"\n",
        "copy",
    )
    .ok();
    merge(
        &fx,
        "tied.toml",
        "[layers]\nsource = \"base\"\nplan = \"1-1\"\ntied = true\n",
        "tied",
    )
    .ok();
    let (p_base, p_copy, p_tied) = (
        params(&fx, &base),
        params(&fx, &fx.path().join("copy")),
        params(&fx, &fx.path().join("tied")),
    );
    assert_eq!(p_tied, p_base);
    assert!(p_copy > p_base);
    fx.train(&fx.path().join("tied-more"), &["--init-from", "tied"])
        .ok();
}

#[test]
fn bad_merges_name_the_file_field_and_expectation() {
    let fx = Fixture::new(2);
    fx.train(&fx.path().join("base"), &[]).ok();
    fx.train(&fx.path().join("deep"), &["--set", "model.n_layer=2"])
        .ok();
    merge(
        &fx,
        "unknown.toml",
        "models = [\"base\"]\nmethod = \"average\"\n",
        "x",
    )
    .fails_with(&["unknown.toml", "unknown variant `average`"]);
    merge(
        &fx,
        "range.toml",
        "[layers]\nsource = \"base\"\nplan = \"1-2\"\n",
        "x",
    )
    .fails_with(&["range.toml", "field `layers`", "source has 1 layers"]);
    merge(
        &fx,
        "arch.toml",
        "base = \"base\"\nmodels = [\"deep\"]\nmethod = \"task_arithmetic\"\n",
        "x",
    )
    .fails_with(&["deep", "another architecture", "model.n_layer: 2 vs 1"]);
    merge(
        &fx,
        "missing.toml",
        "base = \"base\"\nmodels = [\"nowhere\"]\nmethod = \"dare\"\n",
        "x",
    )
    .fails_with(&["nowhere"]);
    merge(
        &fx,
        "lambda.toml",
        "base = \"base\"\nmodels = [\"base\"]\nmethod = \"dare\"\nweights = [1.0, 2.0]\n",
        "x",
    )
    .fails_with(&[
        "lambda.toml",
        "field `weights`",
        "1 entries (one per model)",
    ]);
    // A group glob is checked against the models' tensor names before anything is merged.
    merge(
        &fx,
        "glob.toml",
        "base = \"base\"\nmodels = [\"base\"]\nmethod = \"ties\"\n\
         [[groups]]\ntensors = \"h.*.ffn.*\"\ndensity = 0.2\n",
        "x",
    )
    .fails_with(&[
        "glob.toml",
        "field `groups[0].tensors`",
        "\"h.*.ffn.*\", which matches no tensor",
    ]);
    assert!(
        !fx.path().join("x").exists(),
        "a refused merge writes nothing"
    );
}
