//! Shared helpers for the core tests.

#![allow(dead_code)]

use strata_core::{
    DepthConfig, DwaConfig, Gpt, HyperConfig, LaurelConfig, LaurelKind, ModelConfig,
};
use tch::Tensor;
use tch::{Device, nn};

/// A small config: 3 blocks, 4 heads, width 16, block 8, vocab 11.
pub fn tiny(dwa: Option<(usize, usize)>) -> ModelConfig {
    ModelConfig {
        vocab_size: 11,
        n_layer: 3,
        n_head: 4,
        d_model: 16,
        block_size: 8,
        dwa: dwa.map(|(dilation, period)| DwaConfig { dilation, period }),
        ..ModelConfig::default()
    }
}

/// Builds a model with seeded weights; gains and biases are randomised too, so that no
/// test relies on the identity-like initialisation of norms.
pub fn build(config: &ModelConfig, seed: i64) -> (nn::VarStore, Gpt) {
    strata_tensor::seeded(seed as u64, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), config).unwrap();
        randomise_norms(&vs);
        (vs, model)
    })
}

/// Replaces norm gains and biases by values in [0.75, 1.25).
fn randomise_norms(vs: &nn::VarStore) {
    tch::no_grad(|| {
        // In name order: the draws must not follow the HashMap's random order.
        let mut vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut t) in vars {
            if name.contains("ln_") || name.ends_with("bias") {
                let r = t.rand_like() * 0.5 + 0.75;
                t.copy_(&r);
            }
        }
    });
}

/// Random token ids `[b, t]` below `vocab`.
pub fn tokens(b: i64, t: i64, vocab: i64, seed: i64) -> tch::Tensor {
    strata_tensor::seeded(seed as u64, || {
        tch::Tensor::randint(vocab, [b, t], (tch::Kind::Int64, Device::Cpu))
    })
}

/// Copies every variable of `from` into the same-named variable of `to` (names only one of
/// them has are skipped).
pub fn copy_weights(from: &nn::VarStore, to: &nn::VarStore) {
    let src = from.variables();
    tch::no_grad(|| {
        for (name, mut t) in to.variables() {
            if let Some(s) = src.get(&name) {
                t.copy_(s);
            }
        }
    });
}

/// A LAuReL config of `kind` (and `rank` for LR).
pub fn laurel(kind: LaurelKind, rank: Option<usize>) -> Option<LaurelConfig> {
    Some(LaurelConfig { kind, rank })
}

/// `tiny` with `depth`, and DWA 1x1 when `dwa`.
pub fn with_depth(depth: DepthConfig, dwa: bool) -> ModelConfig {
    let mut c = tiny(dwa.then_some((1, 1)));
    c.depth = depth;
    c
}

/// The method configs under test, labelled.
pub fn methods() -> Vec<(&'static str, ModelConfig)> {
    let vres = DepthConfig {
        value_residual: true,
        ..Default::default()
    };
    let rw = DepthConfig {
        laurel: laurel(LaurelKind::Rw, None),
        ..Default::default()
    };
    let lr = DepthConfig {
        laurel: laurel(LaurelKind::Lr, Some(3)),
        ..Default::default()
    };
    let all = DepthConfig {
        value_residual: true,
        laurel: laurel(LaurelKind::Lr, Some(2)),
        ..Default::default()
    };
    let shc = DepthConfig {
        hyper: Some(HyperConfig {
            streams: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let dhc = DepthConfig {
        value_residual: true,
        hyper: Some(HyperConfig {
            streams: 3,
            dynamic: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mhc = DepthConfig {
        hyper: Some(HyperConfig {
            streams: 3,
            manifold: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let dmhc = DepthConfig {
        hyper: Some(HyperConfig {
            streams: 2,
            dynamic: true,
            manifold: true,
            sinkhorn_iters: 7,
        }),
        ..Default::default()
    };
    vec![
        (
            "hyper-connections, static, 2 streams",
            with_depth(shc, false),
        ),
        (
            "hyper-connections, dynamic, 3 streams + value residual",
            with_depth(dhc, false),
        ),
        ("mHC, static, 3 streams", with_depth(mhc, false)),
        (
            "mHC, dynamic, 2 streams, 7 iterations",
            with_depth(dmhc, false),
        ),
        ("value residual", with_depth(vres, false)),
        (
            "attention residuals",
            with_depth(
                DepthConfig {
                    attn_res: true,
                    ..Default::default()
                },
                false,
            ),
        ),
        (
            "block attention residuals, 1 layer per block",
            with_depth(
                DepthConfig {
                    attn_res: true,
                    attn_res_block_layers: 1,
                    ..Default::default()
                },
                false,
            ),
        ),
        (
            "block attention residuals, 2 layers per block (the last block short)",
            with_depth(
                DepthConfig {
                    attn_res: true,
                    attn_res_block_layers: 2,
                    value_residual: true,
                    ..Default::default()
                },
                false,
            ),
        ),
        (
            "attention residuals + value residual",
            with_depth(
                DepthConfig {
                    attn_res: true,
                    value_residual: true,
                    ..Default::default()
                },
                false,
            ),
        ),
        (
            "MUDD",
            with_depth(
                DepthConfig {
                    mudd: true,
                    ..Default::default()
                },
                false,
            ),
        ),
        (
            "MUDD + value residual",
            with_depth(
                DepthConfig {
                    mudd: true,
                    value_residual: true,
                    ..Default::default()
                },
                false,
            ),
        ),
        ("laurel-rw", with_depth(rw.clone(), false)),
        ("laurel-lr", with_depth(lr, false)),
        ("laurel-rw + dwa", with_depth(rw, true)),
        ("value residual + laurel-lr + dwa", with_depth(all, true)),
    ]
}

/// Sets every depth-method tensor (and DWA weight) to random values away from its init.
pub fn randomise_depth_tensors(vs: &nn::VarStore, seed: u64) {
    strata_tensor::seeded(seed, || {
        tch::no_grad(|| {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, mut t) in vars {
                let noise = if ["vres.", "laurel.", "hyper.", "attnres.", "mudd."]
                    .iter()
                    .any(|p| name.starts_with(p))
                {
                    t.randn_like() * 0.3 + t.copy()
                } else if name.starts_with("dwa.") {
                    t.randn_like() * 0.5
                } else {
                    continue;
                };
                t.copy_(&noise);
            }
        })
    });
}
