//! Model behaviour: DenseFormer = baseline at init, causality, gradients, a float64 oracle.

mod common;

use common::{build, copy_weights, tiny, tokens};
use strata_core::{Gpt, MlpKind, NormKind, PositionKind, SampleOptions};
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor, nn};

#[test]
fn a_fresh_denseformer_computes_exactly_what_the_baseline_computes() {
    let idx = tokens(2, 8, 11, 1);
    for (k, p) in [(1, 1), (2, 1), (1, 2), (2, 2), (4, 5)] {
        let base_cfg = tiny(None);
        let (base_vs, base) = build(&base_cfg, 3);
        let (dense_vs, dense) = build(&tiny(Some((k, p))), 4);
        copy_weights(&base_vs, &dense_vs);
        // Without autograd (preallocated buffer) and with it (live outputs).
        let want = tch::no_grad(|| base.forward(&idx, false).unwrap());
        let got = tch::no_grad(|| dense.forward(&idx, false).unwrap());
        assert_eq!(got.max_abs_diff(&want).unwrap(), 0.0, "{k}x{p} no-grad");
        let got = dense.forward(&idx, true).unwrap();
        assert!(got.requires_grad());
        assert_eq!(got.max_abs_diff(&want).unwrap(), 0.0, "{k}x{p} autograd");
    }
}

/// A change applied to a model config.
type ConfigEdit = Box<dyn Fn(&mut strata_core::ModelConfig)>;

#[test]
fn changing_a_later_token_never_changes_earlier_logits() {
    let variants: Vec<ConfigEdit> = vec![
        Box::new(|_| {}),
        Box::new(|c| {
            c.dwa = Some(strata_core::DwaConfig {
                dilation: 1,
                period: 1,
            })
        }),
        Box::new(|c| {
            c.positions = PositionKind::Rotary;
            c.norm = NormKind::Rmsnorm;
            c.mlp = MlpKind::Swiglu;
            c.tied_embeddings = false;
            c.bias = true;
        }),
        Box::new(|c| {
            c.positions = PositionKind::Rotary;
            c.norm = NormKind::Rmsnorm;
            c.qk_norm = true;
            c.mlp = MlpKind::Relu2;
            c.tied_embeddings = false;
            c.logit_softcap = Some(3.0);
        }),
    ];
    for (v, edit) in variants.iter().enumerate() {
        let mut cfg = tiny(None);
        edit(&mut cfg);
        let (vs, model) = build(&cfg, 5);
        // Train a moment-free perturbation: make DWA weights non-trivial.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.starts_with("dwa") {
                    let r = t.randn_like();
                    t.copy_(&r);
                }
            }
        });
        let idx = tokens(1, 8, 11, 2);
        let base = tch::no_grad(|| model.forward(&idx, false).unwrap());
        for t in 0..7 {
            let changed = idx.copy();
            let _ = changed
                .get(0)
                .get(t + 1)
                .fill_((idx.int64_value(&[0, t + 1]) + 1) % 11);
            let out = tch::no_grad(|| model.forward(&changed, false).unwrap());
            let earlier = out.narrow(1, 0, t + 1);
            let want = base.narrow(1, 0, t + 1);
            assert!(
                earlier.max_abs_diff(&want).unwrap() < 1e-6,
                "variant {v} t={t}"
            );
            let later = out.narrow(1, t + 1, 1);
            assert!(later.max_abs_diff(&base.narrow(1, t + 1, 1)).unwrap() > 1e-6);
        }
    }
}

#[test]
fn every_dwa_weight_receives_a_gradient() {
    let cfg = tiny(Some((1, 1)));
    let (vs, model) = build(&cfg, 6);
    let idx = tokens(2, 8, 11, 3);
    let targets = tokens(2, 8, 11, 4);
    model.loss(&idx, &targets, true).unwrap().backward();
    let mut seen = 0;
    for (name, t) in vs.variables() {
        if name.starts_with("dwa.") {
            let g = t.grad();
            assert!(g.defined(), "{name} has no gradient");
            for (j, v) in g.to_f64_vec().unwrap().iter().enumerate() {
                assert!(v.abs() > 0.0 && v.is_finite(), "{name}[{j}] gradient {v}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

/// The baseline's forward pass written out in float64 with explicit loops over heads and a
/// masked softmax: an oracle independent of scaled_dot_product_attention and layer_norm.
fn oracle_logits(vs: &nn::VarStore, cfg: &strata_core::ModelConfig, idx: &Tensor) -> Tensor {
    let w = |n: &str| vs.variables()[n].to_kind(Kind::Double);
    let d = cfg.d_model as i64;
    let t = idx.size()[1];
    let norm = |x: &Tensor, g: &Tensor| {
        let mu = x.mean_dim(-1, true, Kind::Double);
        let var = (x - &mu).square().mean_dim(-1, true, Kind::Double);
        (x - mu) / (var + 1e-5).sqrt() * g
    };
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu));
    let mut x = w("wte.weight")
        .index_select(0, &idx.reshape([-1]))
        .reshape([idx.size()[0], t, d])
        + w("wpe.weight").index_select(0, &pos);
    let mask = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1);
    for l in 0..cfg.n_layer {
        let p = |n: &str| w(&format!("h.{l}.{n}"));
        let h = norm(&x, &p("ln_1.weight"));
        let qkv = h.matmul(&p("attn.c_attn.weight").tr());
        let hd = d / cfg.n_head as i64;
        let mut heads = Vec::new();
        for head in 0..cfg.n_head as i64 {
            let q = qkv.narrow(2, head * hd, hd);
            let k = qkv.narrow(2, d + head * hd, hd);
            let v = qkv.narrow(2, 2 * d + head * hd, hd);
            let scores = q.matmul(&k.transpose(1, 2)) / (hd as f64).sqrt();
            let scores = scores.masked_fill(&mask, f64::NEG_INFINITY);
            heads.push(scores.softmax(-1, Kind::Double).matmul(&v));
        }
        x = &x + Tensor::cat(&heads, -1).matmul(&p("attn.c_proj.weight").tr());
        let h = norm(&x, &p("ln_2.weight"));
        let fc = h.matmul(&p("mlp.c_fc.weight").tr());
        let gelu: Tensor = &fc * 0.5 * ((&fc / 2f64.sqrt()).erf() + 1.0);
        x = &x + gelu.matmul(&p("mlp.c_proj.weight").tr());
    }
    norm(&x, &w("ln_f.weight")).matmul(&w("wte.weight").tr())
}

#[test]
fn the_baseline_matches_a_float64_oracle() {
    let cfg = tiny(None);
    let (vs, model) = build(&cfg, 8);
    let idx = tokens(2, 8, 11, 9);
    let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
    let want = oracle_logits(&vs, &cfg, &idx);
    let err = got.max_rel_diff(&want).unwrap();
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn parameter_counts_match_a_hand_count() {
    // nanoGPT's CPU recipe: 4 layers, width 128, vocab 65, block 64, tied, no biases.
    let mut cfg = tiny(None);
    (
        cfg.vocab_size,
        cfg.n_layer,
        cfg.n_head,
        cfg.d_model,
        cfg.block_size,
    ) = (65, 4, 4, 128, 64);
    let (_vs, model) = build(&cfg, 1);
    let d = 128;
    let per_block = 2 * d + 3 * d * d + d * d + 2 * 4 * d * d;
    let embedding = 65 * d + 64 * d;
    let counts = model.param_count();
    assert_eq!(counts.total, embedding + 4 * per_block + d);
    assert_eq!(counts.non_embedding, 4 * per_block + d);
    // DenseFormer 1x1 adds 2 + 3 + 4 + 5 weights.
    cfg.dwa = Some(strata_core::DwaConfig {
        dilation: 1,
        period: 1,
    });
    let (_vs, dense) = build(&cfg, 1);
    assert_eq!(dense.param_count().total, counts.total + 14);
}

#[test]
fn the_dwa_weight_matrix_starts_as_the_identity_pattern() {
    let (_vs, model) = build(&tiny(Some((2, 1))), 1);
    let m = model.dwa_weight_matrix().unwrap();
    assert_eq!(m.len(), 3);
    // Row i: DWA after block i averages stack indices j <= i+1 with j ≡ i+1 (mod 2).
    assert_eq!(m[0], vec![None, Some(1.0), None, None]);
    assert_eq!(m[1], vec![Some(0.0), None, Some(1.0), None]);
    assert_eq!(m[2], vec![None, Some(0.0), None, Some(1.0)]);
}

#[test]
fn sampling_is_seeded_and_greedy_at_zero_temperature() {
    let (_vs, model) = build(&tiny(None), 2);
    let opts = SampleOptions {
        temperature: 1.0,
        top_k: Some(3),
        seed: 9,
    };
    let a = model.generate(&[1, 2], 12, &opts).unwrap();
    let b = model.generate(&[1, 2], 12, &opts).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 14);
    assert!(a.iter().all(|&t| (0..11).contains(&t)));
    let greedy = model
        .generate(
            &[1, 2],
            1,
            &SampleOptions {
                temperature: 0.0,
                top_k: None,
                seed: 0,
            },
        )
        .unwrap();
    let logits = tch::no_grad(|| {
        model
            .forward(&Tensor::from_slice(&[1i64, 2]).unsqueeze(0), false)
            .unwrap()
    });
    assert_eq!(
        greedy[2],
        logits.get(0).get(1).argmax(-1, false).int64_value(&[])
    );
    assert!(model.generate(&[], 1, &opts).is_err());
}

#[test]
fn inputs_longer_than_a_block_are_refused() {
    let (_vs, model) = build(&tiny(None), 2);
    let err = model.forward(&tokens(1, 9, 11, 1), false).unwrap_err();
    assert!(err.to_string().contains("block_size"), "{err}");
    let _: &dyn nn::ModuleT = &model as &Gpt;
}
