//! Paired arms: for one seed a variant starts from the baseline's values for every tensor it
//! shares with it, so the difference between arms measures the technique, not the draw.

mod common;

use common::{tiny, tokens};
use strata_core::schema::Role;
use strata_core::{Gpt, LoraConfig, LoraTarget, ModelConfig};
use tch::nn::OptimizerConfig;
use tch::{Device, Tensor, nn};

/// A model built the way the trainer builds one: inside a seeded section.
fn seeded_model(config: &ModelConfig, seed: u64) -> (nn::VarStore, Gpt) {
    strata_tensor::seeded(seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), config).unwrap();
        (vs, model)
    })
}

/// The variants that must share every baseline tensor bit for bit.
fn variants() -> Vec<(&'static str, ModelConfig)> {
    let mut lora = tiny(None);
    lora.lora = Some(LoraConfig {
        rank: 2,
        scale: 1.0,
        targets: LoraTarget::blocks(),
        freeze_base: false,
    });
    let mut dense_4x5 = tiny(Some((4, 5)));
    dense_4x5.n_layer = 10;
    vec![
        ("denseformer-1x1", tiny(Some((1, 1)))),
        ("denseformer-4x5", dense_4x5),
        ("lora", lora),
    ]
}

#[test]
fn every_tensor_a_variant_shares_with_the_baseline_starts_bitwise_equal() {
    for seed in [0, 7] {
        for (name, variant) in variants() {
            let mut baseline = variant.clone();
            baseline.dwa = None;
            baseline.lora = None;
            let (base_vs, _) = seeded_model(&baseline, seed);
            let (var_vs, _) = seeded_model(&variant, seed);
            let base = base_vs.variables();
            let mut shared = 0;
            for (tensor, value) in var_vs.variables() {
                if let Some(want) = base.get(&tensor) {
                    assert!(value.equal(want), "{name} seed {seed}: {tensor} differs");
                    shared += 1;
                }
            }
            assert_eq!(
                shared,
                base.len(),
                "{name}: every baseline tensor is shared"
            );
        }
    }
}

#[test]
fn variant_only_tensors_depend_on_the_seed_and_are_reproducible() {
    let (_, variant) = variants().into_iter().find(|(n, _)| *n == "lora").unwrap();
    let a = |seed| seeded_model(&variant, seed).0.variables()["h.1.mlp.c_fc.lora_a"].copy();
    assert!(a(3).equal(&a(3)));
    assert!(!a(3).equal(&a(4)));
    // Drawn like a fresh A: standard deviation 1/sqrt(in), pooled over every adapter.
    let vars = seeded_model(&variant, 3).0.variables();
    let scaled: Vec<Tensor> = vars
        .iter()
        .filter(|(name, _)| name.ends_with("lora_a"))
        .map(|(_, a)| a.flatten(0, -1) * (a.size()[1] as f64).sqrt())
        .collect();
    let std = Tensor::cat(&scaled, 0).std(true).double_value(&[]);
    assert!((std - 1.0).abs() < 0.1, "std {std} in units of 1/sqrt(in)");
}

/// Losses of `steps` AdamW steps of `config` from `seed`, the DWA weights frozen (no
/// gradient, so the optimizer leaves them at the identity).
fn losses_with_frozen_dwa(config: &ModelConfig, seed: u64, steps: usize) -> Vec<f64> {
    let (vs, model) = seeded_model(config, seed);
    for (spec, t) in model.named_parameters() {
        if spec.role == Role::DwaWeight {
            let _ = t.shallow_clone().set_requires_grad(false);
        }
    }
    let mut optimizer = nn::AdamW::default().build(&vs, 1e-2).unwrap();
    let idx = tokens(4, 8, 11, 100);
    let targets = idx.roll([-1], [1]);
    (0..steps)
        .map(|_| {
            let loss: Tensor = model.loss(&idx, &targets, true).unwrap();
            optimizer.backward_step(&loss);
            loss.double_value(&[])
        })
        .collect()
}

#[test]
fn a_denseformer_with_identity_dwa_weights_trains_exactly_like_the_baseline() {
    for (k, p) in [(1, 1), (2, 1), (1, 2)] {
        let dense = tiny(Some((k, p)));
        let base = tiny(None);
        let want = losses_with_frozen_dwa(&base, 11, 6);
        let got = losses_with_frozen_dwa(&dense, 11, 6);
        assert_eq!(got, want, "{k}x{p}: losses differ bit for bit");
        assert!(want[5] < want[0], "the loop trains: {want:?}");
    }
}
