//! Run configs: shipped files parse; bad keys and values are refused by name.

mod common;

use common::BASE;
use strata_train::RunConfig;

#[test]
fn every_shipped_config_parses_and_the_cpu_recipe_is_nanogpts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let study_file = path.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("sweep-") || n.starts_with("compare-")
        });
        if study_file {
            continue; // sweep and compare files, tested by strata-sweep and strata-compare
        }
        RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let c = RunConfig::load(&root.join("nanogpt-cpu.toml"), &[]).unwrap();
    let (m, t) = (&c.model, &c.train);
    assert_eq!(
        (m.n_layer, m.n_head, m.d_model, m.block_size),
        (4, 4, 128, 64)
    );
    assert_eq!(
        (
            t.batch_size,
            t.max_iters,
            t.warmup_iters,
            t.eval_interval,
            t.eval_iters
        ),
        (12, 2000, 100, 250, 20)
    );
    assert_eq!(
        (
            t.learning_rate,
            t.min_lr,
            t.beta2,
            t.weight_decay,
            m.dropout
        ),
        (1e-3, 1e-4, 0.99, 0.1, 0.0)
    );
    let twin = RunConfig::load(&root.join("denseformer-cpu.toml"), &[]).unwrap();
    let mut twin_model = twin.model.clone();
    twin_model.dwa = None;
    assert_eq!(twin_model, c.model, "the twin differs only by its DWA");
    assert_eq!(twin.train, c.train);
}

#[test]
fn overrides_set_nested_fields_and_unknown_keys_are_named() {
    let c = RunConfig::parse(
        BASE,
        "x.toml",
        "x",
        &["train.max_iters=7".into(), "model.dwa.dilation=2".into()],
    )
    .unwrap();
    assert_eq!(c.train.max_iters, 7);
    assert_eq!(c.model.dwa.unwrap().dilation, 2);
    assert_eq!(c.name, "x");
    let err = RunConfig::parse(BASE, "x.toml", "x", &["train.max_iter=7".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.toml with override train.max_iter=7") && err.contains("max_iter"),
        "{err}"
    );
    let err = RunConfig::parse(
        &BASE.replace("n_layer = 2", "n_layers = 2"),
        "x.toml",
        "x",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("x.toml") && err.contains("n_layers"),
        "{err}"
    );
    let err = RunConfig::parse(
        &BASE.replace("batch_size = 2", "batch_size = \"big\""),
        "x.toml",
        "x",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("batch_size"), "{err}");
    let err = RunConfig::parse(BASE, "x.toml", "x", &["model.n_layer.deep=1".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.n_layer"), "{err}");
}

#[test]
fn impossible_values_name_field_and_expectation() {
    let err = RunConfig::parse(
        &BASE.replace("eval_iters = 1", "eval_iters = 0"),
        "x.toml",
        "x",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "x.toml: field `train.eval_iters`: expected at least 1 batch, found 0"
    );
    let err = RunConfig::parse(BASE, "x.toml", "x", &["data.val_fraction=1.5".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.val_fraction"), "{err}");
}

#[test]
fn the_modern_preset_has_the_cpu_recipes_size_data_and_budget() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let recipe = RunConfig::load(&root.join("nanogpt-cpu.toml"), &[]).unwrap();
    let modern = RunConfig::load(&root.join("modern-cpu.toml"), &[]).unwrap();
    let size = |c: &RunConfig| {
        let (m, t) = (&c.model, &c.train);
        (
            (m.n_layer, m.n_head, m.d_model, m.block_size, m.mlp_hidden()),
            (
                t.batch_size,
                t.max_iters,
                t.warmup_iters,
                t.lr_decay_iters,
                t.seed,
            ),
            (
                t.eval_interval,
                t.eval_iters,
                t.schedule,
                t.min_lr / t.learning_rate,
            ),
        )
    };
    assert_eq!(size(&modern), size(&recipe));
    assert_eq!(modern.data, recipe.data);
    let m = &modern.model;
    assert!(m.qk_norm && m.zero_init_projections && m.zero_init_head);
    assert!(!m.tied_embeddings && m.logit_softcap.is_some());
    assert_eq!(
        (m.mlp, m.norm, m.positions),
        (
            strata_core::MlpKind::Relu2,
            strata_core::NormKind::Rmsnorm,
            strata_core::PositionKind::Rotary
        )
    );
    let t = &modern.train;
    assert_eq!((t.beta1, t.beta2, t.eps), (0.9, 0.95, 1e-10));
    assert_eq!(
        t.optimizer.kind,
        strata_train::optimizer::OptimizerKind::Muon
    );
}
