//! LoRA rank growth and ReLoRA restarts on random weights (adapters' `B` included): the
//! function is kept, the tensors and moments are grown or reset as documented, the grown model
//! keeps training, and bad requests are refused.

mod common;

use common::{
    assert_same_logits, build, random_model, random_moments, snapshot, tokens, train_a_little,
};
use strata_core::{Gpt, ModelConfig};
use strata_growth::{GrowthOp, Snapshot};
use strata_tensor::TensorExt;
use tch::{Kind, Tensor, nn};

/// The common part of the test configs: 2 blocks, 2 heads, width 16, vocabulary 13.
const BASE: &str = "vocab_size = 13\nn_layer = 2\nn_head = 2\nd_model = 16\nblock_size = 8\n";

/// The test configs: a baseline with rank-2 adapters on every block linear, and a DenseFormer
/// (DWA after every block) with SwiGLU, biases, an adapted untied head and scale 0.5.
fn configs() -> Vec<ModelConfig> {
    let baseline = format!("{BASE}[lora]\nrank = 2\n");
    let dense = format!(
        "{BASE}mlp = \"swiglu\"\nbias = true\ntied_embeddings = false\n[dwa]\ndilation = 1\n\
         period = 1\n[lora]\nrank = 2\nscale = 0.5\n\
         targets = [\"attn\", \"attnproj\", \"mlp\", \"mlpproj\", \"head\"]\n"
    );
    vec![common::config(&baseline), common::config(&dense)]
}

/// A model of `config` with every weight random, and its snapshot with random moments.
fn trained(config: &ModelConfig, seed: u64) -> (nn::VarStore, Gpt, Snapshot) {
    let (vs, model) = random_model(config, seed);
    let mut snap = snapshot(&vs, config);
    snap.moments = Some(random_moments(&snap.params, seed + 100));
    (vs, model, snap)
}

/// True when `a` and `b` have the same shape and values.
fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

/// Sum of absolute values, as f64.
fn abs_sum(t: &Tensor) -> f64 {
    t.abs().sum(Kind::Double).double_value(&[])
}

#[test]
fn growing_the_lora_rank_keeps_the_function() {
    let idx = tokens(3, 8, 13, 1);
    for config in configs() {
        let label = config.variant_name();
        let (_vs, model, snap) = trained(&config, 2);
        let op = GrowthOp::GrowLoraRank { rank: 4 };
        let grown = op.apply(&snap, 7).unwrap();
        assert_eq!(grown.config.lora.as_ref().unwrap().rank, 4);
        let (_gvs, gmodel) = build(&grown);
        assert_same_logits(&model, &gmodel, &idx, 1e-5);

        let (m, gm) = (
            snap.moments.as_ref().unwrap(),
            grown.moments.as_ref().unwrap(),
        );
        let adapters = config.lora_linears().len();
        let mut seen = 0;
        for (name, old) in &snap.params {
            let new = &grown.params[name];
            let moments = [
                (&m.exp_avg[name], &gm.exp_avg[name]),
                (&m.exp_avg_sq[name], &gm.exp_avg_sq[name]),
            ];
            if name.ends_with(".lora_a") {
                seen += 1;
                let inputs = old.size()[1];
                assert_eq!(new.size(), [4, inputs], "{label} {name}");
                assert!(
                    same(&new.narrow(0, 0, 2), old),
                    "{label} {name}: old rows kept"
                );
                let fresh = new.narrow(0, 2, 2);
                let std = fresh.std(false).double_value(&[]) * (inputs as f64).sqrt();
                assert!(
                    (0.3..3.0).contains(&std),
                    "{label} {name}: fresh rows ~ 1/sqrt(in)"
                );
                for (old_m, new_m) in moments {
                    assert!(same(&new_m.narrow(0, 0, 2), old_m));
                    assert_eq!(abs_sum(&new_m.narrow(0, 2, 2)), 0.0);
                }
            } else if name.ends_with(".lora_b") {
                let out = old.size()[0];
                assert_eq!(new.size(), [out, 4], "{label} {name}");
                assert!(abs_sum(old) > 0.0, "{label} {name}: B is random");
                assert!(
                    same(&new.narrow(1, 0, 2), old),
                    "{label} {name}: old columns kept"
                );
                assert_eq!(
                    abs_sum(&new.narrow(1, 2, 2)),
                    0.0,
                    "{label} {name}: new columns 0"
                );
                for (old_m, new_m) in moments {
                    assert!(same(&new_m.narrow(1, 0, 2), old_m));
                    assert_eq!(abs_sum(&new_m.narrow(1, 2, 2)), 0.0);
                }
            } else {
                assert!(same(new, old), "{label} {name} unchanged");
                for (old_m, new_m) in moments {
                    assert!(same(new_m, old_m), "{label} {name}: moments unchanged");
                }
            }
        }
        assert_eq!(seen, adapters, "{label}: every adapter grown");
        assert_eq!(grown.params.len(), snap.params.len());

        // The seed fixes the new rows; another seed draws others.
        let again = op.apply(&snap, 7).unwrap();
        let other = op.apply(&snap, 8).unwrap();
        let name = "h.1.mlp.c_fc.lora_a";
        assert!(same(&again.params[name], &grown.params[name]));
        assert!(!same(&other.params[name], &grown.params[name]));
    }
}

#[test]
fn a_relora_restart_folds_the_adapters_and_keeps_the_function() {
    let idx = tokens(3, 8, 13, 3);
    for config in configs() {
        let label = config.variant_name();
        let scale = config.lora.as_ref().unwrap().scale;
        let (_vs, model, snap) = trained(&config, 4);
        let restarted = GrowthOp::ReloraRestart { rewarm_steps: 10 }
            .apply(&snap, 9)
            .unwrap();
        assert_eq!(restarted.config, config);
        let (_rvs, rmodel) = build(&restarted);
        assert_same_logits(&model, &rmodel, &idx, 1e-5);

        let linears: Vec<String> = config.lora_linears().into_iter().map(|l| l.0).collect();
        let (m, rm) = (
            snap.moments.as_ref().unwrap(),
            restarted.moments.as_ref().unwrap(),
        );
        for (name, old) in &snap.params {
            let new = &restarted.params[name];
            assert_eq!(new.size(), old.size(), "{label} {name}");
            let adapter = name.ends_with(".lora_a") || name.ends_with(".lora_b");
            let linear = name
                .strip_suffix(".weight")
                .filter(|l| linears.iter().any(|x| x == l));
            if let Some(linear) = linear {
                // W0 + scale · B · A, by hand in f64.
                let a = snap.params[&format!("{linear}.lora_a")].to_kind(Kind::Double);
                let b = snap.params[&format!("{linear}.lora_b")].to_kind(Kind::Double);
                let want = old.to_kind(Kind::Double) + b.matmul(&a) * scale;
                assert!(
                    new.max_abs_diff(&want).unwrap() < 1e-6,
                    "{label} {name} folded"
                );
                assert!(
                    new.max_abs_diff(old).unwrap() > 1e-3,
                    "{label} {name} changed"
                );
            } else if name.ends_with(".lora_b") {
                assert_eq!(abs_sum(new), 0.0, "{label} {name} zero");
            } else if name.ends_with(".lora_a") {
                assert!(!same(new, old), "{label} {name} re-drawn");
                let std = new.std(false).double_value(&[]) * (old.size()[1] as f64).sqrt();
                assert!((0.3..3.0).contains(&std), "{label} {name}: ~ 1/sqrt(in)");
            } else {
                assert!(same(new, old), "{label} {name} unchanged");
            }
            for (old_m, new_m) in [
                (&m.exp_avg[name], &rm.exp_avg[name]),
                (&m.exp_avg_sq[name], &rm.exp_avg_sq[name]),
            ] {
                if adapter {
                    assert_eq!(abs_sum(new_m), 0.0, "{label} {name}: moments reset");
                } else {
                    assert!(same(new_m, old_m), "{label} {name}: moments kept");
                }
            }
        }
    }
}

#[test]
fn snapshots_without_moments_grow_and_restart() {
    let config = &configs()[0];
    let (_vs, model, mut snap) = trained(config, 5);
    snap.moments = None;
    let idx = tokens(2, 8, 13, 6);
    for op in [
        GrowthOp::GrowLoraRank { rank: 3 },
        GrowthOp::ReloraRestart { rewarm_steps: 0 },
    ] {
        let grown = op.apply(&snap, 1).unwrap();
        assert!(grown.moments.is_none());
        let (_gvs, gmodel) = build(&grown);
        assert_same_logits(&model, &gmodel, &idx, 1e-5);
    }
}

#[test]
fn the_grown_model_keeps_training() {
    for freeze_base in [false, true] {
        let mut config = configs()[1].clone();
        config.lora.as_mut().unwrap().freeze_base = freeze_base;
        let (_vs, _model, snap) = trained(&config, 6);
        let grown = GrowthOp::GrowLoraRank { rank: 4 }.apply(&snap, 3).unwrap();
        let (gvs, gmodel) = build(&grown);
        // The new columns of B get a gradient at once, through the random new rows of A.
        let x = tokens(4, 8, 13, 20);
        gmodel.loss(&x, &x, false).unwrap().backward();
        let vars = gvs.variables();
        let b = &vars["h.0.attn.c_proj.lora_b"];
        assert!(
            abs_sum(&b.grad().narrow(1, 2, 2)) > 0.0,
            "new B columns learn"
        );
        let w0 = &vars["h.0.attn.c_proj.weight"];
        assert_eq!(
            w0.grad().defined(),
            !freeze_base,
            "W0 frozen: {freeze_base}"
        );
        gvs.variables().values().for_each(|t| {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        });
        let batch = tokens(4, 8, 13, 20);
        let (before, after) = train_a_little(&gvs, &gmodel, &batch, 30);
        assert!(
            after < before * 0.8,
            "freeze {freeze_base}: {before} -> {after}"
        );
        // And after a restart too.
        let restarted = GrowthOp::ReloraRestart { rewarm_steps: 0 }
            .apply(&grown, 4)
            .unwrap();
        let (rvs, rmodel) = build(&restarted);
        let (before, after) = train_a_little(&rvs, &rmodel, &batch, 30);
        assert!(
            after < before * 0.8,
            "restart, freeze {freeze_base}: {before} -> {after}"
        );
    }
}

#[test]
fn bad_lora_growth_requests_are_refused() {
    let config = &configs()[0];
    let (_vs, _model, snap) = trained(config, 7);
    let message = |op: GrowthOp, snap: &Snapshot| op.apply(snap, 1).unwrap_err().to_string();
    for rank in [1, 2] {
        let msg = message(GrowthOp::GrowLoraRank { rank }, &snap);
        assert!(
            msg.contains("grow_lora_rank") && msg.contains("lora.rank"),
            "{msg}"
        );
        assert!(msg.contains("current 2"), "{msg}");
    }
    // Every block linear of width 16 has rank 16 at most; c_attn (16 -> 48) is the first.
    let msg = message(GrowthOp::GrowLoraRank { rank: 17 }, &snap);
    assert!(msg.contains("h.0.attn.c_attn: min(in, out) = 16"), "{msg}");
    let mut proj_only = config.clone();
    proj_only.lora.as_mut().unwrap().targets = vec![strata_core::LoraTarget::AttnProj];
    let err = strata_growth::lora::rank_config(&proj_only, 17).unwrap_err();
    assert!(
        err.to_string()
            .contains("h.0.attn.c_proj: min(in, out) = 16"),
        "{err}"
    );
    assert_eq!(
        strata_growth::lora::rank_config(&proj_only, 16)
            .unwrap()
            .lora
            .unwrap()
            .rank,
        16
    );

    let plain = common::config(BASE);
    let (_pvs, _p, plain_snap) = trained(&plain, 8);
    for op in [
        GrowthOp::GrowLoraRank { rank: 4 },
        GrowthOp::ReloraRestart { rewarm_steps: 5 },
    ] {
        let msg = message(op.clone(), &plain_snap);
        assert!(msg.contains("lora") && msg.contains("none"), "{msg}");
        assert!(op.grown_config(&plain).is_err());
    }

    // A snapshot whose tensors do not match its config is refused, not mis-grown.
    let mut broken = Snapshot {
        config: snap.config.clone(),
        params: snap
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
        moments: None,
    };
    broken.params.remove("h.1.mlp.c_proj.lora_b");
    let msg = message(GrowthOp::ReloraRestart { rewarm_steps: 0 }, &broken);
    assert!(msg.contains("h.1.mlp.c_proj.lora_b"), "{msg}");
    // An adapter of a linear the config does not adapt is named, for both operations.
    let mut stray = Snapshot {
        config: proj_only.clone(),
        params: snap
            .params
            .iter()
            .filter(|(k, _)| !k.contains(".lora_") || k.contains("attn.c_proj"))
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
        moments: None,
    };
    stray.params.insert(
        "h.0.mlp.c_fc.lora_a".to_owned(),
        snap.params["h.0.attn.c_attn.lora_a"].shallow_clone(),
    );
    for op in [
        GrowthOp::GrowLoraRank { rank: 4 },
        GrowthOp::ReloraRestart { rewarm_steps: 0 },
    ] {
        let msg = message(op, &stray);
        assert!(
            msg.contains("h.0.mlp.c_fc.lora_a") && msg.contains("schema"),
            "{msg}"
        );
    }
    stray.params.remove("h.0.mlp.c_fc.lora_a");
    assert!(
        GrowthOp::ReloraRestart { rewarm_steps: 0 }
            .apply(&stray, 1)
            .is_ok()
    );
}
