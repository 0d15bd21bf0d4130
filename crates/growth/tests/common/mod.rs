//! Shared helpers for the growth tests: snapshots of a `VarStore`, models rebuilt from a
//! [`Snapshot`], random weights and moments, and logit comparisons.

#![allow(dead_code)]

use strata_core::{Gpt, ModelConfig};
use strata_growth::{Moments, Snapshot};
use strata_merge::State;
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor, nn};

/// Builds a model of `snapshot.config` on the CPU and copies every parameter of the snapshot
/// into it; panics on a missing or extra name or a shape mismatch. The throwaway
/// initialisation runs inside `strata_tensor::seeded` so that it cannot interleave with
/// another test's seeded draws: do not call it from inside a seeded section (deadlock).
pub fn build(snapshot: &Snapshot) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = strata_tensor::seeded(0, || Gpt::new(&vs.root(), &snapshot.config))
        .expect("the snapshot's config builds");
    let vars = vs.variables();
    let missing: Vec<&String> = vars
        .keys()
        .filter(|name| !snapshot.params.contains_key(*name))
        .collect();
    let extra: Vec<&String> = snapshot
        .params
        .keys()
        .filter(|name| !vars.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "snapshot vs model: missing {missing:?}, extra {extra:?}"
    );
    tch::no_grad(|| {
        for (name, value) in &snapshot.params {
            let mut t = vars[name].shallow_clone();
            assert_eq!(t.size(), value.size(), "shape of {name}");
            t.copy_(value);
        }
    });
    (vs, model)
}

/// A snapshot of every variable of `vs` (detached copies) with `config` and no moments.
pub fn snapshot(vs: &nn::VarStore, config: &ModelConfig) -> Snapshot {
    let params: State = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect();
    Snapshot {
        config: config.clone(),
        params,
        moments: None,
    }
}

/// Sets every tensor of `vs` at random: norm gains (`ln_*.weight`) uniform in [0.75, 1.25),
/// everything else (biases, DWA weights, LoRA `B`, zero-initialised projections included)
/// normal with std 0.1, so that no test passes by an identity-like or zero initialisation.
pub fn randomise(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let value = if name.contains("ln_") && name.ends_with(".weight") {
                t.rand_like() * 0.5 + 0.75
            } else {
                t.randn_like() * 0.1
            };
            t.copy_(&value);
        }
    });
}

/// Random AdamW moments for every parameter, drawn with `seed`: first moments normal (std
/// 0.01), second moments uniform in [0, 1e-4) (non-negative, as real ones are).
pub fn random_moments(params: &State, seed: u64) -> Moments {
    strata_tensor::seeded(seed, || draw_moments(params))
}

/// [`random_moments`] from the current state of the global generator.
fn draw_moments(params: &State) -> Moments {
    let draw = |f: &dyn Fn(&Tensor) -> Tensor| -> State {
        params
            .iter()
            .map(|(name, t)| (name.clone(), f(t)))
            .collect()
    };
    Moments {
        exp_avg: draw(&|t| t.randn_like() * 0.01),
        exp_avg_sq: draw(&|t| t.rand_like() * 1e-4),
    }
}

/// Random token ids `[b, t]` below `vocab`, drawn with `seed`.
pub fn tokens(b: i64, t: i64, vocab: i64, seed: u64) -> Tensor {
    strata_tensor::seeded(seed, || {
        Tensor::randint(vocab, [b, t], (Kind::Int64, Device::Cpu))
    })
}

/// Asserts that `a` and `b` give the same logits on `tokens` (evaluation mode, no autograd)
/// to `rel_tol` relative to the largest logit of `a`, and that the logits are not trivial.
pub fn assert_same_logits(a: &Gpt, b: &Gpt, tokens: &Tensor, rel_tol: f64) {
    let (want, got) = tch::no_grad(|| {
        (
            a.forward(tokens, false).expect("model a runs"),
            b.forward(tokens, false).expect("model b runs"),
        )
    });
    assert!(want.all_finite() && got.all_finite(), "finite logits");
    let spread = want.std(false).double_value(&[]);
    assert!(spread > 1e-6, "logits vary (std {spread})");
    let rel = got.max_rel_diff(&want).expect("same logit shapes");
    assert!(
        rel <= rel_tol,
        "logits differ: relative {rel:e} > {rel_tol:e}"
    );
}

/// A model config from TOML text; panics when it does not parse.
pub fn config(text: &str) -> ModelConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("test config does not parse: {e}\n{text}"))
}

/// A model of `config` on the CPU with every tensor random (see [`randomise`]), drawn with
/// `seed` inside `strata_tensor::seeded` (so do not call it from a seeded section).
pub fn random_model(config: &ModelConfig, seed: u64) -> (nn::VarStore, Gpt) {
    strata_tensor::seeded(seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), config).expect("valid test config");
        randomise(&vs);
        (vs, model)
    })
}

/// `steps` Adam steps (learning rate 3e-3, the trainable variables of `vs`) on next-token
/// prediction over the fixed batch `tokens` `[B, T]` (inputs `tokens[:, :-1]`, targets
/// `tokens[:, 1:]`): (loss at the first step, loss at the last step), both before their update.
pub fn train_a_little(vs: &nn::VarStore, model: &Gpt, tokens: &Tensor, steps: usize) -> (f64, f64) {
    use tch::nn::OptimizerConfig;
    assert!(steps > 0, "train_a_little needs at least one step");
    let mut opt = nn::Adam::default().build(vs, 3e-3).expect("optimizer");
    let t = tokens.size()[1];
    let (x, y) = (tokens.narrow(1, 0, t - 1), tokens.narrow(1, 1, t - 1));
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let loss = model.loss(&x, &y, true).expect("loss");
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    (losses[0], losses[steps - 1])
}
