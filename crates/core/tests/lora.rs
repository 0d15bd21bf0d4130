//! LoRA adapters: `B = 0` changes nothing, a nonzero adapter equals its folded weight
//! `W0 + scale · B · A` (float64 reference), frozen base weights, parameter and FLOP counts,
//! config parsing and validation.

mod common;

use common::{build, tiny, tokens};
use strata_core::layers::Linear;
use strata_core::{Gpt, LoraConfig, LoraTarget, MlpKind, ModelConfig, PositionKind};
use strata_tensor::{Precision, TensorExt};
use tch::{Device, Kind, Tensor, nn};

/// `config` with adapters of `rank` and `scale` on every block linear (and the head when
/// untied).
fn with_lora(config: &ModelConfig, rank: usize, scale: f64) -> ModelConfig {
    let mut targets = LoraTarget::blocks();
    if !config.tied_embeddings {
        targets.push(LoraTarget::Head);
    }
    ModelConfig {
        lora: Some(LoraConfig {
            rank,
            scale,
            targets,
            freeze_base: false,
        }),
        ..config.clone()
    }
}

/// The configs the equivalence tests run on: baseline, DenseFormer, and a SwiGLU model with
/// biases, rotary positions and an untied (adapted) head.
fn variants() -> Vec<ModelConfig> {
    let mut rich = tiny(Some((2, 1)));
    rich.mlp = MlpKind::Swiglu;
    rich.bias = true;
    rich.positions = PositionKind::Rotary;
    rich.tied_embeddings = false;
    vec![tiny(None), tiny(Some((1, 1))), rich]
}

/// Copies every variable of `from` into the same-named variable of `to`; every variable of
/// `from` must exist in `to`.
fn copy_weights(from: &nn::VarStore, to: &nn::VarStore) {
    let dst = to.variables();
    tch::no_grad(|| {
        for (name, src) in from.variables() {
            let mut t = dst
                .get(&name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .shallow_clone();
            t.copy_(&src);
        }
    });
}

/// Sets every adapter tensor (`lora_a` and `lora_b`) to normal noise of std `std`.
fn randomise_adapters(vs: &nn::VarStore, std: f64) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with(".lora_a") || name.ends_with(".lora_b") {
                let r = t.randn_like() * std;
                t.copy_(&r);
            }
        }
    });
}

#[test]
fn adapters_with_zero_b_compute_exactly_what_the_plain_model_computes() {
    let idx = tokens(2, 8, 11, 1);
    for config in variants() {
        let (plain_vs, plain) = build(&config, 3);
        let (lora_vs, lora) = build(&with_lora(&config, 3, 0.5), 4);
        copy_weights(&plain_vs, &lora_vs);
        let vars = lora_vs.variables();
        let a = &vars["h.0.attn.c_attn.lora_a"];
        assert_eq!(a.size(), [3, 16]);
        assert!(
            a.abs().sum(Kind::Double).double_value(&[]) > 0.0,
            "A is random"
        );
        assert_eq!(vars["h.0.mlp.c_proj.lora_b"].size(), [16, 3]);
        let want = tch::no_grad(|| plain.forward(&idx, false).unwrap());
        let got = tch::no_grad(|| lora.forward(&idx, false).unwrap());
        assert_eq!(
            got.max_abs_diff(&want).unwrap(),
            0.0,
            "{}",
            config.variant_name()
        );
    }
}

#[test]
fn a_nonzero_adapter_equals_its_folded_weight_in_float64() {
    let idx = tokens(2, 8, 11, 5);
    let scale = 0.7;
    for config in variants() {
        let lora_cfg = with_lora(&config, 2, scale);
        let (lora_vs, lora) = build(&lora_cfg, 6);
        randomise_adapters(&lora_vs, 0.3);
        let (plain_vs, plain) = build(&config, 7);
        let src = lora_vs.variables();
        let mut folded = 0;
        tch::no_grad(|| {
            for (name, mut t) in plain_vs.variables() {
                let w0 = &src[&name];
                let prefix = name.strip_suffix(".weight").unwrap_or("");
                let value = match (
                    src.get(&format!("{prefix}.lora_a")),
                    src.get(&format!("{prefix}.lora_b")),
                ) {
                    (Some(a), Some(b)) => {
                        folded += 1;
                        let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
                        w0.to_kind(Kind::Double) + b.matmul(&a) * scale
                    }
                    _ => w0.to_kind(Kind::Double),
                };
                t.copy_(&value);
            }
        });
        let adapted = lora_cfg.lora_linears().len();
        assert_eq!(folded, adapted, "every adapted linear folded");
        let want = tch::no_grad(|| plain.forward(&idx, false).unwrap());
        let got = tch::no_grad(|| lora.forward(&idx, false).unwrap());
        let rel = got.max_rel_diff(&want).unwrap();
        assert!(rel < 1e-5, "{}: rel {rel}", config.variant_name());
        // The adapters matter: the plain model with the unfolded W0 differs.
        let (base_vs, base) = build(&config, 8);
        tch::no_grad(|| {
            for (name, mut t) in base_vs.variables() {
                t.copy_(&src[&name]);
            }
        });
        let unfolded = tch::no_grad(|| base.forward(&idx, false).unwrap());
        assert!(unfolded.max_rel_diff(&want).unwrap() > 1e-3);
    }
}

#[test]
fn an_adapted_linear_matches_a_float64_hand_computation() {
    let lora = LoraConfig {
        rank: 3,
        scale: -1.5,
        targets: LoraTarget::blocks(),
        freeze_base: false,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = strata_tensor::seeded(11, || {
        let lin = Linear::new(vs.root() / "lin", 6, 5, true, 0.5, Some(&lora)).unwrap();
        randomise_adapters(&vs, 0.4);
        tch::no_grad(|| {
            let mut b = lin.bias.as_ref().unwrap().shallow_clone();
            b.copy_(&b.randn_like());
        });
        lin
    });
    let x = strata_tensor::seeded(12, || Tensor::randn([2, 4, 6], (Kind::Float, Device::Cpu)));
    let d = |t: &Tensor| t.to_kind(Kind::Double);
    let ad = lin.lora.as_ref().unwrap();
    assert_eq!(ad.a.size(), [3, 6]);
    assert_eq!(ad.b.size(), [5, 3]);
    let w = d(&lin.weight) + d(&ad.b).matmul(&d(&ad.a)) * -1.5;
    let want = d(&x).matmul(&w.tr()) + d(lin.bias.as_ref().unwrap());
    let got = lin.forward(&x, Precision::F32).unwrap();
    assert_eq!(got.kind(), Kind::Float);
    let rel = got.max_rel_diff(&want).unwrap();
    assert!(rel < 1e-6, "rel {rel}");
    // bf16 compute: same result to bf16 accuracy, returned as f32.
    let low = lin.forward(&x, Precision::Bf16).unwrap();
    assert_eq!(low.kind(), Kind::Float);
    assert!(low.max_rel_diff(&want).unwrap() < 3e-2);
}

#[test]
fn freeze_base_stops_base_gradients_but_trains_the_adapters() {
    let mut config = tiny(None);
    config.bias = true;
    let mut config = with_lora(&config, 2, 1.0);
    if let Some(l) = config.lora.as_mut() {
        l.freeze_base = true;
        l.targets = vec![LoraTarget::Attn, LoraTarget::Mlp];
    }
    let (vs, model) = build(&config, 9);
    randomise_adapters(&vs, 0.1);
    let vars = vs.variables();
    // Frozen tensors stay in the store (checkpoints keep them) but are not trainable.
    for name in [
        "h.0.attn.c_attn.weight",
        "h.0.attn.c_attn.bias",
        "h.2.mlp.c_fc.weight",
    ] {
        assert!(vars.contains_key(name), "{name} listed");
        assert!(!vars[name].requires_grad(), "{name} frozen");
    }
    assert_eq!(
        vs.trainable_variables().len() + 3 * 4,
        vars.len(),
        "3 blocks x (c_attn, c_fc) x (weight, bias) are not trainable"
    );
    let idx = tokens(2, 8, 11, 10);
    let targets = tokens(2, 8, 11, 11);
    model.loss(&idx, &targets, false).unwrap().backward();
    for (name, t) in &vars {
        let adapted = name.contains("c_attn") || name.contains("c_fc");
        let is_base = adapted && (name.ends_with(".weight") || name.ends_with(".bias"));
        if is_base {
            assert!(!t.grad().defined(), "{name} has no gradient");
        } else {
            let g = t.grad();
            assert!(g.defined(), "{name} has a gradient");
            assert!(
                g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "{name} nonzero grad"
            );
        }
    }
    // The un-adapted projections keep training their base weights.
    assert!(vars["h.1.attn.c_proj.weight"].requires_grad());
}

#[test]
fn parameter_and_flop_counts_include_the_adapters() {
    let mut plain = tiny(None);
    plain.tied_embeddings = false;
    let lora = with_lora(&plain, 4, 1.0);
    let (_, p) = build(&plain, 1);
    let (_, l) = build(&lora, 1);
    // Per block: c_attn 16 -> 48, c_proj 16 -> 16, c_fc 16 -> 64, c_proj 64 -> 16; head 16 -> 11.
    let per_block = 4 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16));
    let head = 4 * (16 + 11);
    let extra = 3 * per_block + head;
    assert_eq!(l.param_count().total, p.param_count().total + extra);
    assert_eq!(
        l.param_count().non_embedding,
        p.param_count().non_embedding + extra
    );
    assert_eq!(l.parameters().len(), p.parameters().len() + 2 * (3 * 4 + 1));
    let flops = |c: &ModelConfig| strata_core::flops::forward_flops_per_token(c, 8);
    assert_eq!(flops(&lora) - flops(&plain), 2.0 * extra as f64);
    assert_eq!(
        strata_core::flops::matmul_weights_per_layer(&lora)
            - strata_core::flops::matmul_weights_per_layer(&plain),
        per_block as f64
    );
}

#[test]
fn lora_configs_parse_with_defaults_and_round_trip() {
    let base = "vocab_size = 13\nn_layer = 2\nn_head = 2\nd_model = 16\nblock_size = 8\n";
    let c: ModelConfig = toml::from_str(&format!("{base}[lora]\nrank = 2\n")).unwrap();
    let l = c.lora.as_ref().unwrap();
    assert_eq!(l.rank, 2);
    assert_eq!(l.scale, 1.0);
    assert_eq!(l.targets, LoraTarget::blocks());
    assert!(!l.freeze_base);
    c.validate("test").unwrap();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<ModelConfig>(&text).unwrap(), c);
    let plain: ModelConfig = toml::from_str(base).unwrap();
    assert!(!toml::to_string(&plain).unwrap().contains("lora"));
    assert!(plain.first_difference(&c).unwrap().contains("model.lora"));

    let c: ModelConfig = toml::from_str(&format!(
        "{base}tied_embeddings = false\n[lora]\nrank = 3\nscale = 0.25\ntargets = [\"attnproj\", \
         \"head\"]\nfreeze_base = true\n"
    ))
    .unwrap();
    c.validate("test").unwrap();
    let names: Vec<String> = c.lora_linears().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["h.0.attn.c_proj", "h.1.attn.c_proj", "lm_head"]);
    let bad = toml::from_str::<ModelConfig>(&format!("{base}[lora]\nrank = 2\nalpha = 4\n"));
    assert!(bad.unwrap_err().to_string().contains("alpha"));
    let bad =
        toml::from_str::<ModelConfig>(&format!("{base}[lora]\nrank = 2\ntargets = [\"qkv\"]\n"));
    assert!(bad.is_err());
}

#[test]
fn invalid_lora_configs_are_rejected_with_the_field_named() {
    let mut base = tiny(None);
    base.mlp_hidden = Some(12);
    let check = |edit: &dyn Fn(&mut LoraConfig), field: &str, detail: &str| {
        let mut c = with_lora(&base, 2, 1.0);
        edit(c.lora.as_mut().unwrap());
        let msg = c.validate("test.toml").unwrap_err().to_string();
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains(detail), "{msg}");
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(Gpt::new(&vs.root(), &c).is_err());
    };
    check(&|l| l.rank = 0, "model.lora.rank", ">= 1");
    // mlp.c_proj is 12 -> 16: rank 12 fits, 13 does not.
    check(
        &|l| {
            l.rank = 13;
            l.targets = vec![LoraTarget::MlpProj];
        },
        "model.lora.rank",
        "min(in, out) = 12 of h.0.mlp.c_proj",
    );
    // The first adapted matrix too small for rank 17 is c_attn (16 -> 48).
    check(&|l| l.rank = 17, "model.lora.rank", "h.0.attn.c_attn");
    check(&|l| l.scale = f64::NAN, "model.lora.scale", "finite");
    check(&|l| l.targets.clear(), "model.lora.targets", "at least one");
    check(
        &|l| l.targets = vec![LoraTarget::Head],
        "model.lora.targets",
        "tied",
    );
    let mut ok = with_lora(&base, 12, 1.0);
    ok.lora.as_mut().unwrap().targets = vec![LoraTarget::MlpProj];
    ok.validate("test.toml").unwrap();
}
