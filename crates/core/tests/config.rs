//! Config parsing and validation errors name the field and the expectation.

mod common;

use common::tiny;
use strata_core::ModelConfig;

fn parse(text: &str) -> Result<ModelConfig, String> {
    toml::from_str::<ModelConfig>(text).map_err(|e| e.to_string())
}

#[test]
fn unknown_and_mistyped_keys_are_refused_by_name() {
    let base = "n_layer = 2\nn_head = 2\nd_model = 8\nblock_size = 4\n";
    assert!(parse(base).is_ok());
    let err = parse(&format!("{base}n_layers = 3\n")).unwrap_err();
    assert!(err.contains("n_layers"), "{err}");
    let err = parse(&base.replace("n_head = 2", "n_head = \"two\"")).unwrap_err();
    assert!(err.contains("n_head") || err.contains("integer"), "{err}");
    let err = parse(&format!("{base}norm = \"batchnorm\"\n")).unwrap_err();
    assert!(
        err.contains("batchnorm") && err.contains("layernorm"),
        "{err}"
    );
}

#[test]
fn impossible_shapes_are_refused_with_field_and_expectation() {
    let mut c = tiny(None);
    c.n_head = 3;
    let err = c.validate("configs/x.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "configs/x.toml: field `model.d_model`: expected a positive multiple of n_head = 3 (or an explicit head_dim), found 16"
    );
    for (k, p, field) in [(0, 1, "model.dwa.dilation"), (1, 0, "model.dwa.period")] {
        let err = tiny(Some((k, p)))
            .validate("f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    let mut c = tiny(None);
    c.dropout = 1.0;
    assert!(
        c.validate("f")
            .unwrap_err()
            .to_string()
            .contains("model.dropout")
    );
    let mut c = tiny(None);
    c.vocab_size = 0;
    assert!(c.validate("f").is_err());
}

#[test]
fn first_difference_names_the_field() {
    let a = tiny(None);
    let mut b = tiny(None);
    assert_eq!(a.first_difference(&b), None);
    b.d_model = 32;
    assert_eq!(a.first_difference(&b).unwrap(), "model.d_model: 16 vs 32");
}

#[test]
fn training_flops_match_a_hand_count() {
    // nanoGPT's CPU model: vocab 65, 4 layers, width 128, GELU MLP 512, context 64.
    let c: strata_core::ModelConfig =
        toml::from_str("vocab_size = 65\nn_layer = 4\nn_head = 4\nd_model = 128\nblock_size = 64")
            .unwrap();
    // Per layer: q, k, v, out (4 · 128²) + fc and proj (2 · 128 · 512) = 196608 weights.
    assert_eq!(strata_core::flops::matmul_weights_per_layer(&c), 196_608.0);
    // Forward per token: 2 · (4 · 196608 + 65 · 128) + 2 · 4 · 64 · 128 = 1655040 FLOPs.
    assert_eq!(
        strata_core::flops::forward_flops_per_token(&c, 64),
        1_655_040.0
    );
    // A training step of 12 x 64 tokens: three forward passes.
    assert_eq!(
        strata_core::flops::train_flops_per_step(&c, 12, 64),
        3.0 * 1_655_040.0 * 768.0
    );
    // Heads wider than the stream (growth keeps head_dim explicit): 8 heads of 32 over a
    // width of 128 give an attention width of 256. Per layer 4 · 128 · 256 + 2 · 128 · 512,
    // and the scores and weighted values cost 2 · 4 · 64 · 256 per token.
    let mut wide_heads = c.clone();
    wide_heads.n_head = 8;
    wide_heads.head_dim = Some(32);
    assert_eq!(
        strata_core::flops::matmul_weights_per_layer(&wide_heads),
        262_144.0
    );
    assert_eq!(
        strata_core::flops::forward_flops_per_token(&wide_heads, 64),
        2.0 * (4.0 * 262_144.0 + 65.0 * 128.0) + 2.0 * 4.0 * 64.0 * 256.0
    );
    // Shared blocks still compute once per layer.
    let mut shared = c.clone();
    shared.sharing = Some(strata_core::SharingConfig {
        blocks: Some(1),
        ..Default::default()
    });
    assert_eq!(
        strata_core::flops::forward_flops_per_token(&shared, 64),
        strata_core::flops::forward_flops_per_token(&c, 64)
    );
}
