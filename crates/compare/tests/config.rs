//! Comparison files: the shipped ones load, bad ones are refused with the file, the field
//! and the reason, and the plan pairs the arms of a seed.

use std::path::{Path, PathBuf};
use strata_compare::CompareConfig;
use strata_compare::plan::plan;

/// A base run config and a comparison over it in `dir`, with `extra` appended to the
/// comparison text; returns the comparison file.
fn write(dir: &Path, extra: &str) -> PathBuf {
    let base = "[model]\nn_layer = 1\nn_head = 2\nd_model = 16\nblock_size = 16\n\
        [data]\ntokenizer = \"char\"\n\
        [train]\nbatch_size = 4\nmax_iters = 10\nlearning_rate = 3e-3\nmin_lr = 3e-4\n\
        warmup_iters = 50\neval_interval = 5\neval_iters = 2\ndevice = \"cpu\"\n";
    std::fs::write(dir.join("base.toml"), base).unwrap();
    let file = dir.join("cmp.toml");
    std::fs::write(&file, format!("base = \"base.toml\"\n{extra}")).unwrap();
    file
}

const ARMS: &str = "[[arms]]\nname = \"baseline\"\n\
    [[arms]]\nname = \"dwa\"\nset = [\"model.dwa.dilation=1\", \"model.dwa.period=1\"]\n";

/// Loads a comparison made of `head` and `arms`; the error text on failure.
fn load(head: &str, arms: &str) -> Result<CompareConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    CompareConfig::load(&write(dir.path(), &format!("{head}\n{arms}"))).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_comparisons_load_and_plan() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for name in [
        "compare-dwa-cpu.toml",
        "compare-smoke.toml",
        "compare-modern-cpu.toml",
        "compare-modern-lr-cpu.toml",
        "compare-depth-cpu.toml",
        "compare-depth-modern-cpu.toml",
        "compare-recipe-lr-cpu.toml",
        "compare-depth-lr-cpu.toml",
    ] {
        let config = CompareConfig::load(&configs.join(name)).unwrap();
        assert!(config.seeds.len() >= 2, "{name}");
        let runs = plan(&config).unwrap();
        assert!(!runs.is_empty());
    }
    let dwa = CompareConfig::load(&configs.join("compare-dwa-cpu.toml")).unwrap();
    assert!(dwa.seeds.len() >= 5);
    let runs = plan(&dwa).unwrap();
    let model = &runs[0].config.model;
    assert_eq!(model.n_layer, 12);
    assert!((96..=128).contains(&model.d_model));
    // Every depth method gets an arm whose model has it on.
    let depth = CompareConfig::load(&configs.join("compare-depth-cpu.toml")).unwrap();
    let runs = plan(&depth).unwrap();
    let labels: std::collections::BTreeSet<String> =
        runs.iter().map(|r| r.config.model.variant_name()).collect();
    for want in [
        "baseline",
        "denseformer-1x1",
        "vres",
        "laurel-rw",
        "laurel-lr16",
        "shc4",
        "dhc4",
    ] {
        assert!(labels.contains(want), "{want} missing from {labels:?}");
    }
    // The retrofit arms switch DWA on inside their 600-step run, and a budget that ends at
    // the switch or before is a plain branch of it.
    for (arm, at) in [
        ("denseformer-1x1-late-150", 150),
        ("denseformer-1x1-late-450", 450),
    ] {
        let of_arm: Vec<_> = runs.iter().filter(|r| r.arm.name == arm).collect();
        let source = of_arm.iter().find(|r| r.source).unwrap();
        assert_eq!(source.config.growth.len(), 1, "{arm}");
        assert_eq!(source.config.growth[0].step, at);
        assert_eq!(source.config.growth[0].op.label(), "add_depth(dwa 1x1)");
        let short = of_arm.iter().find(|r| r.iters == 150).unwrap();
        assert!(
            short.config.growth.is_empty(),
            "{arm}: the 150-step budget grew"
        );
    }
    let modern = CompareConfig::load(&configs.join("compare-depth-modern-cpu.toml")).unwrap();
    let runs = plan(&modern).unwrap();
    assert!(
        runs.iter()
            .all(|r| r.config.model.qk_norm && !r.config.model.tied_embeddings)
    );
}

#[test]
fn one_seed_is_refused_with_the_reason() {
    let err = load("seeds = [1]\nbudgets = [10]", ARMS).unwrap_err();
    assert!(err.contains("cmp.toml") && err.contains("`seeds`"), "{err}");
    assert!(err.contains("no paired noise estimate"), "{err}");
    let err = load("seeds = [1, 1]\nbudgets = [10]", ARMS).unwrap_err();
    assert!(err.contains("distinct seeds"), "{err}");
}

#[test]
fn variants_that_change_the_data_or_tokenizer_are_refused() {
    for item in [
        "data.tokenizer=\\\"bpe\\\"",
        "data.path=\\\"other.txt\\\"",
        "train.seed=5",
        "model.block_size=32",
        "train.eval_iters=50",
    ] {
        let arms =
            format!("[[arms]]\nname = \"baseline\"\n[[arms]]\nname = \"v\"\nset = [\"{item}\"]\n");
        let err = load("seeds = [1, 2]\nbudgets = [10]", &arms).unwrap_err();
        let shown = item.replace('\\', "");
        assert!(err.contains("arms[1].set"), "{err}");
        assert!(err.contains(&shown), "{item}: {err}");
        assert!(err.contains("not be comparable"), "{err}");
    }
    // Training choices are what variants are for.
    let arms = "[[arms]]\nname = \"baseline\"\n[[arms]]\nname = \"v\"\n\
        set = [\"train.learning_rate=2e-3\", \"model.n_layer=2\"]\n";
    load("seeds = [1, 2]\nbudgets = [10]", arms).unwrap();
}

#[test]
fn other_bad_fields_are_named() {
    let cases = [
        ("seeds = [1, 2]\nbudgets = []", ARMS, "`budgets`"),
        ("seeds = [1, 2]\nbudgets = [0]", ARMS, "`budgets`"),
        (
            "seeds = [1, 2]\nbudgets = [10]",
            "[[arms]]\nname = \"baseline\"\n",
            "a baseline and at least one variant",
        ),
        (
            "seeds = [1, 2]\nbudgets = [10]\naa = true",
            "[[arms]]\nname = \"baseline\"\n[[arms]]\nname = \"baseline-aa\"\n",
            "A/A arm",
        ),
        (
            "seeds = [1, 2]\nbudgets = [10]\ntarget_loss = -1.0",
            ARMS,
            "`target_loss`",
        ),
        (
            "seeds = [1, 2]\nbudgets = [10]\nbootstrap = 5",
            ARMS,
            "`bootstrap`",
        ),
        ("seeds = [1, 2]\nbudget = [10]", ARMS, "budget"),
        (
            "seeds = [1, 2]\nbudgets = [10]",
            "[[arms]]\nname = \"a b\"\n[[arms]]\nname = \"c\"\n",
            "arms.name",
        ),
    ];
    for (head, arms, needle) in cases {
        let err = load(head, arms).unwrap_err();
        assert!(
            err.contains("cmp.toml") && err.contains(needle),
            "{head}: {err}"
        );
    }
}

#[test]
fn the_plan_pairs_the_arms_of_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        &format!(
            "seeds = [3, 4]\nbudgets = [640, 1280]\nbudget_unit = \"tokens\"\n\
             baseline_extra_budgets = [2560]\naa = true\nevals_per_run = 2\n{ARMS}"
        ),
    );
    let compare = CompareConfig::load(&file).unwrap();
    let runs = plan(&compare).unwrap();
    // Baseline and A/A: 3 budgets x 2 seeds; the variant 2 x 2. Tokens become steps of
    // 4 x 16 tokens, longest first.
    assert_eq!(runs.len(), 6 + 4 + 6);
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        &ids[..3],
        ["baseline-s3-i40", "baseline-s3-i20", "baseline-s3-i10"]
    );
    assert!(ids.contains(&"dwa-s4-i10") && ids.contains(&"baseline-aa-s4-i40"));
    // Seed by seed: all of seed 3's runs (8) before seed 4's, so a study stopped early holds
    // whole seeds.
    assert_eq!(ids[3], "dwa-s3-i20");
    assert_eq!(ids[8], "baseline-s4-i40");
    assert!(runs[..8].iter().all(|r| r.seed == 3) && runs[8..].iter().all(|r| r.seed == 4));
    assert!(!ids.contains(&"dwa-s4-i40"));
    assert!(runs[0].source && !runs[1].source);
    for r in &runs {
        let t = &r.config.train;
        assert_eq!(
            (t.seed, t.max_iters, t.lr_decay_iters),
            (r.seed, r.iters, Some(r.iters))
        );
        assert_eq!(t.warmup_iters, r.iters / 10);
        assert_eq!(t.eval_interval, r.iters / 2);
        assert_eq!(r.config.name, r.id);
    }
    // The A/A twin is the baseline under another name; the variant differs only in its DWA.
    let find = |id: &str| runs.iter().find(|r| r.id == id).unwrap().config.clone();
    let mut twin = find("baseline-aa-s3-i20");
    twin.name = "baseline-s3-i20".to_owned();
    assert_eq!(twin, find("baseline-s3-i20"));
    let mut dwa = find("dwa-s3-i20");
    assert!(dwa.model.dwa.is_some());
    dwa.model.dwa = None;
    dwa.name = "baseline-s3-i20".to_owned();
    assert_eq!(dwa, find("baseline-s3-i20"));
}

#[test]
fn keeping_some_arms_plans_the_same_runs_for_them_and_refuses_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let arms =
        format!("{ARMS}[[arms]]\nname = \"laurel\"\nset = ['model.depth.laurel.kind=\"rw\"']\n");
    let file = write(
        dir.path(),
        &format!("seeds = [1, 2]\nbudgets = [10, 20]\n{arms}"),
    );
    let whole = CompareConfig::load(&file).unwrap();
    let mut part = whole.clone();
    part.keep_arms(&["laurel".to_owned()], "cmp.toml").unwrap();
    let names: Vec<&str> = part.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["baseline", "laurel"]);
    // The kept arms' runs are exactly the whole comparison's runs of those arms, so a later
    // run of every arm reuses them.
    let kept = plan(&part).unwrap();
    let all = plan(&whole).unwrap();
    let of_kept: Vec<_> = all
        .iter()
        .filter(|r| !r.id.starts_with("dwa-"))
        .map(|r| (r.id.clone(), r.config.clone()))
        .collect();
    let kept: Vec<_> = kept
        .iter()
        .map(|r| (r.id.clone(), r.config.clone()))
        .collect();
    assert_eq!(kept, of_kept);
    for (names, needle) in [
        (vec!["nope".to_owned()], "`nope`"),
        (vec!["baseline".to_owned()], "at least one variant"),
    ] {
        let err = whole
            .clone()
            .keep_arms(&names, "cmp.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cmp.toml") && err.contains(needle) && err.contains("arms"),
            "{err}"
        );
    }
    let err = whole
        .clone()
        .keep_arms(&["nope".to_owned()], "cmp.toml")
        .unwrap_err();
    assert!(
        err.to_string().contains("`baseline`, `dwa`, `laurel`"),
        "{err}"
    );
}
