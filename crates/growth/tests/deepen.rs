//! Identity-block insertion: same logits for baseline and DenseFormer models, moments
//! renumbered with zeros for the new blocks, training goes on, bad positions are refused.

mod common;

use common::*;
use strata_core::ModelConfig;
use strata_growth::GrowthOp;

/// Relative logit tolerance in f32.
const TOL: f64 = 1e-5;

/// A 3-layer model, with `extra` appended to its TOML.
fn model(extra: &str) -> ModelConfig {
    config(&format!(
        "vocab_size = 13\nn_layer = 3\nn_head = 2\nd_model = 16\nblock_size = 8\nbias = true\n{extra}"
    ))
}

#[test]
fn inserted_identity_blocks_keep_the_function() {
    let cases = [
        ("", vec![0, 2, 3, 3]),
        ("norm = \"rmsnorm\"\nmlp = \"swiglu\"\n", vec![1]),
        ("[dwa]\ndilation = 1\nperiod = 1\n", vec![0, 1, 3]),
        ("[dwa]\ndilation = 2\nperiod = 1\n", vec![1, 1]),
        ("[dwa]\ndilation = 2\nperiod = 3\n", vec![2; 6]),
        ("[dwa]\ndilation = 1\nperiod = 2\n", vec![0, 0, 3, 3]),
        (
            "tied_embeddings = false\n[lora]\nrank = 2\ntargets = [\"attn\", \"attnproj\", \"mlp\", \"mlpproj\", \"head\"]\n",
            vec![1, 3],
        ),
    ];
    for (extra, after) in cases {
        let config = model(extra);
        let (vs, original) = random_model(&config, 21);
        let op = GrowthOp::InsertBlocks {
            after: after.clone(),
        };
        let grown = op.apply(&snapshot(&vs, &config), 5).unwrap();
        assert_eq!(grown.config.n_layer, 3 + after.len());
        let (_, model) = build(&grown);
        assert_same_logits(&original, &model, &tokens(2, 8, 13, 8), TOL);
    }
}

#[test]
fn moments_move_with_their_blocks_and_start_at_zero_for_new_ones() {
    let config = model("[dwa]\ndilation = 1\nperiod = 1\n");
    let (vs, _) = random_model(&config, 4);
    let mut snap = snapshot(&vs, &config);
    snap.moments = Some(random_moments(&snap.params, 9));
    let grown = GrowthOp::InsertBlocks { after: vec![1] }
        .apply(&snap, 1)
        .unwrap();
    let old = snap.moments.as_ref().unwrap();
    let new = grown.moments.as_ref().unwrap();
    // Old layer 1 is new layer 2; new layer 1 is the identity block.
    assert!(new.exp_avg["h.2.mlp.c_fc.weight"].equal(&old.exp_avg["h.1.mlp.c_fc.weight"]));
    assert!(
        new.exp_avg_sq["h.0.attn.c_attn.weight"].equal(&old.exp_avg_sq["h.0.attn.c_attn.weight"])
    );
    for (name, t) in &new.exp_avg {
        if name.starts_with("h.1.") || name.starts_with("dwa.1.") {
            assert_eq!(
                t.abs().sum(tch::Kind::Double).double_value(&[]),
                0.0,
                "{name}"
            );
        }
    }
    // The DWA after old layer 2 (new layer 3) reads one more entry, whose moment is zero.
    let old_dwa: Vec<f64> = Vec::try_from(&old.exp_avg["dwa.2.alpha"]).unwrap();
    let new_dwa: Vec<f64> =
        Vec::try_from(new.exp_avg["dwa.3.alpha"].to_kind(tch::Kind::Double)).unwrap();
    assert_eq!(new_dwa.len(), old_dwa.len() + 1);
    assert_eq!(new_dwa[2], 0.0);
    let kept: Vec<f64> = [0, 1, 3, 4].iter().map(|&i| new_dwa[i]).collect();
    let expected: Vec<f64> = old_dwa.iter().map(|&v| v as f32 as f64).collect();
    assert_eq!(kept, expected);
}

#[test]
fn deepened_models_keep_training() {
    let config = model("[dwa]\ndilation = 1\nperiod = 1\n");
    let (vs, _) = random_model(&config, 2);
    let grown = GrowthOp::InsertBlocks { after: vec![3] }
        .apply(&snapshot(&vs, &config), 1)
        .unwrap();
    let (vs, model) = build(&grown);
    let (first, last) = train_a_little(&vs, &model, &tokens(4, 8, 13, 6), 30);
    assert!(last < first * 0.8, "loss {first} -> {last}");
}

#[test]
fn bad_insertions_are_refused_with_the_reason() {
    let cases = [
        ("", vec![4], "position 4 is out of range"),
        ("", vec![], "lists no position"),
        (
            "[dwa]\ndilation = 2\nperiod = 2\n",
            vec![1],
            "multiple of lcm(k, p) = 2",
        ),
    ];
    for (extra, after, expected) in cases {
        let err = GrowthOp::InsertBlocks { after }
            .grown_config(&model(extra))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    }
}

#[test]
fn an_identity_block_keeps_its_lora_a_so_the_adapter_learns() {
    let config = model("[lora]\nrank = 2\n");
    let (vs, _) = random_model(&config, 3);
    let grown = GrowthOp::InsertBlocks { after: vec![1] }
        .apply(&snapshot(&vs, &config), 1)
        .unwrap();
    let p = &grown.params;
    let norm = |name: &str| p[name].abs().sum(tch::Kind::Double).double_value(&[]);
    for linear in ["attn.c_proj", "mlp.c_proj"] {
        assert_eq!(norm(&format!("h.1.{linear}.weight")), 0.0);
        assert_eq!(norm(&format!("h.1.{linear}.lora_b")), 0.0);
        assert!(norm(&format!("h.1.{linear}.lora_a")) > 0.0, "{linear}");
    }
}
