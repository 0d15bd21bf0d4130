//! `strata experiment repetition` end to end on the tiny model: the report's paired
//! differences from the baseline, and a second call that reuses every run through the run
//! registry instead of training again.

mod common;

use common::{BLOCK_SIZE, Fixture, strata_run};

#[test]
fn a_study_reports_paired_differences_and_reuses_its_runs() {
    let fx = Fixture::new(10);
    let eval_tokens = (4 * BLOCK_SIZE).to_string();
    let args = [
        "experiment",
        "repetition",
        "--config",
        "tiny.toml",
        "--seeds",
        "2",
        "--steps",
        "6",
        "--eval-interval",
        "3",
        "--eval-tokens",
        &eval_tokens,
        "--out",
        "runs",
        "--docs",
        "docs",
        "--quiet",
    ];
    let first = strata_run(fx.path(), &args).ok();
    assert!(
        !first.stderr.contains("reusing a finished run"),
        "{}",
        first.stderr
    );
    let doc = std::fs::read_to_string(fx.path().join("docs/repetition.md")).unwrap();
    assert!(
        doc.contains("## Paired differences from `from scratch, 4 layers`"),
        "{doc}"
    );
    assert!(
        doc.contains(&format!("same {eval_tokens} held-out tokens")),
        "{doc}"
    );
    for variant in ["repeat 1-1-2-2", "interleave 1-2-1-2", "identity 1-I-2-I"] {
        let row = doc
            .lines()
            .filter(|l| l.starts_with(&format!("| {variant} |")))
            .nth(1)
            .unwrap_or_else(|| panic!("no paired row for {variant}:\n{doc}"));
        let verdicts = [
            "no difference resolved",
            "lower loss than the baseline",
            "higher loss than the baseline",
        ];
        assert!(
            verdicts.iter().any(|v| row.ends_with(&format!("| {v} |"))),
            "{row}"
        );
    }
    // The 2-layer source is not a variant of the baseline: no paired row.
    assert_eq!(doc.matches("| 2-layer source").count(), 0, "{doc}");
    // Two seeds x (source, three grown models, scratch): every run reused the second time.
    let again = strata_run(fx.path(), &args).ok();
    assert_eq!(
        again.stderr.matches("reusing a finished run").count(),
        10,
        "{}",
        again.stderr
    );
    let doc_again = std::fs::read_to_string(fx.path().join("docs/repetition.md")).unwrap();
    assert_eq!(doc, doc_again);
}

#[test]
fn the_growth_study_lists_what_each_run_changes_and_reuses_its_runs() {
    let fx = Fixture::new(10);
    // Two blocks, so that the deepening path can start from one.
    let text = std::fs::read_to_string(&fx.config).unwrap();
    let two_blocks = with_line(&text, "n_layer = ", "n_layer = 2");
    std::fs::write(fx.path().join("two.toml"), two_blocks).unwrap();
    let args = growth_args("two.toml");
    strata_run(fx.path(), &args).ok();
    let doc = std::fs::read_to_string(fx.path().join("docs/growth.md")).unwrap();
    let row = |label: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| {label} | 1 |")))
            .unwrap_or_else(|| panic!("no run row for {label}:\n{doc}"))
            .to_owned()
    };
    // Each run's settings are its changes to the recipe, written as `--set` overrides.
    let deepen = row("deeper: half the layers, identity blocks inserted");
    for part in [
        "model.n_layer=1",
        "op = \"insert_blocks\"",
        "after = [1]",
        "step = 4",
        "train.learning_rate=",
    ] {
        assert!(deepen.contains(part), "{part} missing from {deepen}");
    }
    let widen = row("wider: half the residual width and heads, Net2WiderNet");
    for part in [
        "model.d_model=16",
        "model.head_dim=8",
        "model.mlp_hidden=64",
    ] {
        assert!(widen.contains(part), "{part} missing from {widen}");
    }
    assert!(!widen.contains("train.seed"), "{widen}");
    let again = strata_run(fx.path(), &args).ok();
    assert!(
        !again.stderr.contains("training it again"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read_to_string(fx.path().join("docs/growth.md")).unwrap(),
        doc
    );
}

#[test]
fn the_growth_study_sweeps_every_rate_of_a_muon_recipe_and_grows_the_modern_block() {
    let fx = Fixture::new(10);
    let mut text = std::fs::read_to_string(&fx.config).unwrap();
    for (prefix, line) in [
        ("n_layer = ", "n_layer = 2"),
        ("mlp = ", "mlp = \"relu2\""),
        (
            "norm = ",
            "norm = \"rmsnorm\"\nqk_norm = true\nzero_init_projections = true",
        ),
        ("positions = ", "positions = \"rotary\""),
        (
            "tied_embeddings = ",
            "tied_embeddings = false\nzero_init_head = true",
        ),
    ] {
        text = with_line(&text, prefix, line);
    }
    text += "\n[train.optimizer]\nkind = \"muon\"\nmuon_lr = 0.02\nembedding_lr = 0.01\n";
    std::fs::write(fx.path().join("modern.toml"), text).unwrap();
    let args = growth_args("modern.toml");
    strata_run(fx.path(), &args).ok();
    let doc = std::fs::read_to_string(fx.path().join("docs/growth.md")).unwrap();
    assert!(doc.contains("from scratch (Muon lr "), "{doc}");
    // The sweep moves Muon's rate and the AdamW groups' rates together: the rates around the
    // recipe's 0.02 are trained, and they do not all end at the same loss (scaling only
    // `train.learning_rate` would leave every group's rate, and so the run, unchanged).
    let sweep: Vec<(String, String)> = doc
        .split("## Learning-rate sweep")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| peak"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[2].to_owned())
        })
        .take_while(|(rate, _)| !rate.is_empty())
        .collect();
    for rate in ["1e-2", "2e-2", "4e-2"] {
        assert!(
            sweep.iter().any(|(r, _)| r.starts_with(rate)),
            "{rate}: {sweep:?}"
        );
    }
    let mut losses: Vec<&String> = sweep.iter().map(|(_, loss)| loss).collect();
    losses.dedup();
    assert!(losses.len() > 1, "{sweep:?}");
    // The chosen rates (not the recipe's here) scale Muon's and the embeddings' rate alike.
    let chosen = doc
        .lines()
        .find(|l| l.starts_with("| from scratch (Muon lr ") && l.contains(" | 1 |"))
        .unwrap_or_else(|| panic!("no scratch run row:\n{doc}"));
    let value = |field: &str| -> f64 {
        let start = chosen
            .find(field)
            .unwrap_or_else(|| panic!("{field}: {chosen}"))
            + field.len();
        chosen[start..]
            .split([' ', '`'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (muon, embedding) = (
        value("train.optimizer.muon_lr="),
        value("train.optimizer.embedding_lr="),
    );
    assert!((muon / embedding - 2.0).abs() < 1e-9, "{chosen}");
    // Every growth path ran on the modern block.
    for label in [
        "deeper: half the layers, identity blocks inserted",
        "wider: half the residual width and heads, Net2WiderNet",
        "wider MLP: a quarter of the MLP units, Net2WiderNet",
    ] {
        assert!(
            doc.lines()
                .any(|l| l.starts_with(&format!("| {label} | 1 |"))),
            "{label}:\n{doc}"
        );
    }
}

/// `strata experiment growth` of `config` in a fixture: one seed of 8 steps, evaluated every
/// 4 steps on 64 tokens, runs in `runs/` and the report in `docs/`.
fn growth_args(config: &str) -> Vec<&str> {
    vec![
        "experiment",
        "growth",
        "--config",
        config,
        "--seeds",
        "1",
        "--steps",
        "8",
        "--eval-interval",
        "4",
        "--eval-tokens",
        "64",
        "--out",
        "runs",
        "--docs",
        "docs",
        "--quiet",
    ]
}

/// `text` with every line that starts with `prefix` replaced by `line`.
fn with_line(text: &str, prefix: &str, line: &str) -> String {
    text.lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}
