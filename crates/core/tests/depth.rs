//! The depth stack in a model that is not a strata model (the `dwa_in_your_model` example),
//! trained with tch's own AdamW, and in `Gpt` with a frozen token embedding.

mod common;
#[allow(dead_code)]
#[path = "../examples/dwa_in_your_model.rs"]
mod example;

use common::{build, copy_weights, tiny, tokens};
use example::{TinyModel, VOCAB};
use strata_core::{DwaConfig, PositionKind};
use tch::{Device, Kind, Tensor, nn};

#[test]
fn a_fresh_dwa_model_of_your_own_equals_it_without_dwa() {
    for (k, p) in [(1, 1), (2, 1), (1, 2), (2, 3)] {
        let dwa = DwaConfig {
            dilation: k,
            period: p,
        };
        // Seeded sections keep these draws from interleaving with other tests' draws.
        let (plain_vs, plain) = strata_tensor::seeded(1, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = TinyModel::new(&vs.root(), None).unwrap();
            (vs, model)
        });
        let (dense_vs, dense) = strata_tensor::seeded(2, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = TinyModel::new(&vs.root(), Some(dwa)).unwrap();
            (vs, model)
        });
        copy_weights(&plain_vs, &dense_vs);
        assert!(dense_vs.variables().len() > plain_vs.variables().len());
        let x = Tensor::arange(VOCAB, (Kind::Int64, Device::Cpu));
        let want = plain.forward(&x).unwrap();
        let got = dense.forward(&x).unwrap();
        assert!(got.requires_grad());
        assert!(got.equal(&want), "{k}x{p} with autograd");
        let got = tch::no_grad(|| dense.forward(&x).unwrap());
        assert!(got.equal(&want), "{k}x{p} without autograd");
    }
}

#[test]
fn tch_adamw_trains_a_dwa_model_of_your_own_and_its_dwa_weights() {
    let dwa = DwaConfig {
        dilation: 1,
        period: 1,
    };
    let (model, losses) = strata_tensor::seeded(5, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = TinyModel::new(&vs.root(), Some(dwa)).unwrap();
        let losses = example::train(&vs, &model, 40, 1e-2).unwrap();
        (model, losses)
    });
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last < 0.5 * first,
        "loss should fall well below its start: {first} -> {last}"
    );
    // The DWA weights are parameters the optimizer moved off the identity.
    let moved = model
        .depth
        .weight_matrix()
        .unwrap()
        .iter()
        .flatten()
        .flatten()
        .filter(|w| **w != 0.0 && **w != 1.0)
        .count();
    assert!(moved > 0, "no DWA weight changed");
}

#[test]
fn blocks_train_under_a_frozen_token_embedding_with_rotary_positions() {
    // No position embedding, so the embedding output needs no gradient; the blocks still do.
    let mut config = tiny(Some((1, 1)));
    config.positions = PositionKind::Rotary;
    let idx = tokens(2, 8, 11, 1);
    let targets = tokens(2, 8, 11, 2);
    let (vs, model) = build(&config, 3);
    let mut names: Vec<String> = vs
        .variables()
        .into_keys()
        .filter(|n| n.starts_with("h."))
        .collect();
    names.sort();
    let grads = || {
        let vars = vs.variables();
        for t in vars.values() {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        model.loss(&idx, &targets, true).unwrap().backward();
        names
            .iter()
            .map(|n| (n.clone(), vars[n].grad().copy()))
            .collect::<Vec<_>>()
    };
    let trained = grads();
    let _ = model.wte.shallow_clone().set_requires_grad(false);
    let frozen = grads();
    for ((name, want), (_, got)) in trained.iter().zip(&frozen) {
        assert!(
            got.defined(),
            "{name} got no gradient under a frozen embedding"
        );
        assert!(
            got.equal(want),
            "{name}: the gradient changed when the embedding was frozen"
        );
        assert!(
            want.abs().sum(Kind::Double).double_value(&[]) > 0.0,
            "{name}"
        );
    }
}
