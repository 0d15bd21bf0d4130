//! The modern block's options (QK-norm, squared ReLU, GPT-2's tanh GELU, zero-initialised projections and head,
//! logit soft-capping): each against a float64 forward pass written out here, independently of
//! the model's layers, plus their initial values and their errors.

mod common;

use common::{build, tiny, tokens};
use strata_core::{Gpt, MlpKind, ModelConfig, NormKind, PositionKind};
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor, nn};

/// Replaces every weight (not only norms) by normal values with std 0.3, so that options
/// that zero tensors at init are checked on a trained-looking model.
fn randomise_all(vs: &nn::VarStore, seed: u64) {
    strata_tensor::seeded(seed, || {
        tch::no_grad(|| {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, mut t) in vars {
                if !name.contains("ln_") {
                    let r = t.randn_like() * 0.3;
                    t.copy_(&r);
                }
            }
        })
    });
}

/// RMS or layer norm of the last dimension in float64, with gain `g` (none for QK-norm).
fn norm64(x: &Tensor, kind: NormKind, g: Option<&Tensor>, eps: f64) -> Tensor {
    let y = match kind {
        NormKind::Layernorm => {
            let mu = x.mean_dim(-1, true, Kind::Double);
            let var = (x - &mu).square().mean_dim(-1, true, Kind::Double);
            (x - mu) / (var + eps).sqrt()
        }
        NormKind::Rmsnorm => x / (x.square().mean_dim(-1, true, Kind::Double) + eps).sqrt(),
    };
    match g {
        Some(g) => y * g,
        None => y,
    }
}

/// Rotates `x` `[B, T, hd]` pair by pair: channel `i` with channel `i + hd/2` by angle
/// `t · 10000^(-2i/hd)`, each angle computed as a plain f64.
fn rotate64(x: &Tensor) -> Tensor {
    let (t, hd) = (x.size()[1], x.size()[2]);
    let half = hd / 2;
    let mut cos = vec![0f64; (t * half) as usize];
    let mut sin = cos.clone();
    for p in 0..t {
        for i in 0..half {
            let angle = p as f64 * 10000f64.powf(-2.0 * i as f64 / hd as f64);
            cos[(p * half + i) as usize] = angle.cos();
            sin[(p * half + i) as usize] = angle.sin();
        }
    }
    let cos = Tensor::from_slice(&cos).view([1, t, half]);
    let sin = Tensor::from_slice(&sin).view([1, t, half]);
    let (a, b) = (x.narrow(2, 0, half), x.narrow(2, half, half));
    Tensor::cat(&[&a * &cos - &b * &sin, &b * &cos + &a * &sin], 2)
}

/// The whole forward pass in float64 with explicit loops over heads and a masked softmax,
/// for every option this file tests.
fn oracle(vs: &nn::VarStore, cfg: &ModelConfig, idx: &Tensor) -> Tensor {
    let vars = vs.variables();
    let w = |n: &str| vars[n].to_kind(Kind::Double);
    let (d, t) = (cfg.d_model as i64, idx.size()[1]);
    let eps = cfg.norm_eps();
    let mut x = w("wte.weight")
        .index_select(0, &idx.reshape([-1]))
        .reshape([idx.size()[0], t, d]);
    if cfg.positions == PositionKind::Learned {
        x += w("wpe.weight").narrow(0, 0, t);
    }
    let mask = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1);
    for l in 0..cfg.n_layer {
        let p = |n: &str| w(&format!("h.{l}.{n}"));
        let h = norm64(&x, cfg.norm, Some(&p("ln_1.weight")), eps);
        let qkv = h.matmul(&p("attn.c_attn.weight").tr());
        let hd = d / cfg.n_head as i64;
        let mut heads = Vec::new();
        for head in 0..cfg.n_head as i64 {
            let mut q = qkv.narrow(2, head * hd, hd);
            let mut k = qkv.narrow(2, d + head * hd, hd);
            let v = qkv.narrow(2, 2 * d + head * hd, hd);
            if cfg.qk_norm {
                q = norm64(&q, NormKind::Rmsnorm, None, f64::from(f32::EPSILON));
                k = norm64(&k, NormKind::Rmsnorm, None, f64::from(f32::EPSILON));
            }
            if cfg.positions == PositionKind::Rotary {
                (q, k) = (rotate64(&q), rotate64(&k));
            }
            let scores = q.matmul(&k.transpose(1, 2)) / (hd as f64).sqrt();
            let scores = scores.masked_fill(&mask, f64::NEG_INFINITY);
            heads.push(scores.softmax(-1, Kind::Double).matmul(&v));
        }
        x = &x + Tensor::cat(&heads, -1).matmul(&p("attn.c_proj.weight").tr());
        let h = norm64(&x, cfg.norm, Some(&p("ln_2.weight")), eps);
        let fc = h.matmul(&p("mlp.c_fc.weight").tr());
        let act = match cfg.mlp {
            MlpKind::Relu2 => fc.clamp_min(0.0).square(),
            MlpKind::Gelu => &fc * 0.5 * ((&fc / 2f64.sqrt()).erf() + 1.0),
            // GPT-2's gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            MlpKind::GeluTanh => {
                let inner = (&fc + fc.pow_tensor_scalar(3) * 0.044715)
                    * (2.0 / std::f64::consts::PI).sqrt();
                &fc * 0.5 * (inner.tanh() + 1.0)
            }
            other => panic!("the oracle has no {other:?} MLP"),
        };
        x = &x + act.matmul(&p("mlp.c_proj.weight").tr());
    }
    let head = if cfg.tied_embeddings {
        w("wte.weight")
    } else {
        w("lm_head.weight")
    };
    let logits = norm64(&x, cfg.norm, Some(&w("ln_f.weight")), eps).matmul(&head.tr());
    match cfg.logit_softcap {
        Some(cap) => (logits / cap).tanh() * cap,
        None => logits,
    }
}

/// Each option alone, and all of them together with rotary positions and RMSNorm.
fn option_configs() -> Vec<(&'static str, ModelConfig)> {
    let with = |edit: &dyn Fn(&mut ModelConfig)| {
        let mut c = tiny(None);
        edit(&mut c);
        c
    };
    vec![
        ("qk_norm", with(&|c| c.qk_norm = true)),
        ("relu2", with(&|c| c.mlp = MlpKind::Relu2)),
        ("softcap", with(&|c| c.logit_softcap = Some(1.5))),
        (
            "untied zero head",
            with(&|c| {
                c.tied_embeddings = false;
                c.zero_init_head = true;
            }),
        ),
        (
            "zero projections",
            with(&|c| c.zero_init_projections = true),
        ),
        (
            "modern block",
            with(&|c| {
                c.positions = PositionKind::Rotary;
                c.norm = NormKind::Rmsnorm;
                c.qk_norm = true;
                c.mlp = MlpKind::Relu2;
                c.zero_init_projections = true;
                c.tied_embeddings = false;
                c.zero_init_head = true;
                c.logit_softcap = Some(2.0);
            }),
        ),
        ("gelu_tanh", with(&|c| c.mlp = MlpKind::GeluTanh)),
    ]
}

#[test]
fn every_option_matches_a_float64_oracle() {
    let idx = tokens(2, 8, 11, 9);
    for (kind, cfg) in option_configs() {
        let (vs, model) = build(&cfg, 8);
        randomise_all(&vs, 3);
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        let want = oracle(&vs, &cfg, &idx);
        let err = got.max_rel_diff(&want).unwrap();
        assert!(err < 1e-5, "{kind}: relative error {err}");
    }
    // The oracle itself tells the options apart: a model evaluated as if QK-norm, the cap or
    // relu² were off differs from it by far more than the tolerance.
    for (kind, cfg) in option_configs().into_iter().take(3) {
        let (vs, model) = build(&cfg, 8);
        randomise_all(&vs, 3);
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        let want = oracle(&vs, &tiny(None), &idx);
        assert!(got.max_rel_diff(&want).unwrap() > 1e-3, "{kind}");
    }
}

#[test]
fn logits_never_exceed_the_soft_cap() {
    let mut cfg = tiny(None);
    cfg.logit_softcap = Some(0.5);
    let (vs, model) = build(&cfg, 2);
    randomise_all(&vs, 4);
    let logits = tch::no_grad(|| model.forward(&tokens(2, 8, 11, 1), false).unwrap());
    let max = logits.abs().max().double_value(&[]);
    // tanh saturates to 1 in f32 for large logits: the cap is reached, never passed.
    assert!(max <= 0.5 && max > 0.1, "largest |logit| {max}");
}

#[test]
fn zero_initialisation_zeroes_only_its_tensors_and_keeps_every_other_draw() {
    let mut plain = tiny(None);
    plain.tied_embeddings = false;
    let mut zeroed = plain.clone();
    zeroed.zero_init_projections = true;
    zeroed.zero_init_head = true;
    let vs_plain = nn::VarStore::new(Device::Cpu);
    let vs_zero = nn::VarStore::new(Device::Cpu);
    strata_tensor::seeded(5, || Gpt::new(&vs_plain.root(), &plain).unwrap());
    let model = strata_tensor::seeded(5, || Gpt::new(&vs_zero.root(), &zeroed).unwrap());
    let a = vs_plain.variables();
    let mut zeros = 0;
    for (name, t) in vs_zero.variables() {
        if name.ends_with("c_proj.weight") || name == "lm_head.weight" {
            assert_eq!(t.abs().sum(Kind::Double).double_value(&[]), 0.0, "{name}");
            assert!(a[&name].abs().sum(Kind::Double).double_value(&[]) > 0.0);
            zeros += 1;
        } else {
            assert!(t.equal(&a[&name]), "{name} drew different values");
        }
    }
    assert_eq!(zeros, 2 * 3 + 1);
    // A zero head predicts the uniform distribution: the loss is ln(vocab) exactly.
    let idx = tokens(2, 8, 11, 3);
    let loss = tch::no_grad(|| model.loss(&idx, &tokens(2, 8, 11, 4), false).unwrap());
    assert!((loss.double_value(&[]) - 11f64.ln()).abs() < 1e-6);
    // Zeroed tensors still learn: every one of them gets a gradient.
    model
        .loss(&idx, &tokens(2, 8, 11, 4), true)
        .unwrap()
        .backward();
    for (name, t) in vs_zero.variables() {
        if name == "lm_head.weight" {
            assert!(t.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
        }
    }
}

#[test]
fn the_options_are_written_only_when_on() {
    // A config that leaves them out reads them as off and writes itself back without them,
    // so older configs, checkpoints and study registries keep matching.
    let text = "n_layer = 2\nn_head = 2\nd_model = 8\nblock_size = 4\nvocab_size = 5\n";
    let config: ModelConfig = toml::from_str(text).unwrap();
    assert!(!config.qk_norm && !config.zero_init_projections && !config.zero_init_head);
    assert_eq!(config.logit_softcap, None);
    let written = toml::to_string(&config).unwrap();
    for field in [
        "qk_norm",
        "zero_init_projections",
        "zero_init_head",
        "logit_softcap",
    ] {
        assert!(!written.contains(field), "{field} written: {written}");
    }
    let mut on = config.clone();
    on.qk_norm = true;
    on.logit_softcap = Some(30.0);
    let back: ModelConfig = toml::from_str(&toml::to_string(&on).unwrap()).unwrap();
    assert_eq!(back, on);
    assert!(config.first_difference(&on).unwrap().contains("qk_norm"));
}

#[test]
fn bad_option_values_are_refused_naming_the_field() {
    let mut c = tiny(None);
    c.zero_init_head = true;
    let err = c.validate("m.toml").unwrap_err().to_string();
    assert!(err.contains("model.zero_init_head") && err.contains("tied_embeddings"));
    for cap in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut c = tiny(None);
        c.logit_softcap = Some(cap);
        let err = c.validate("m.toml").unwrap_err().to_string();
        assert!(err.contains("model.logit_softcap"), "{cap}: {err}");
    }
    let err = toml::from_str::<ModelConfig>(
        "n_layer = 1\nn_head = 1\nd_model = 4\nblock_size = 4\nmlp = \"relu3\"",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("relu2"), "{err}");
}
