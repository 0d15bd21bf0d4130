//! Layer plans: parsing, bad plans, the right weights at the right layers, tied layers, and
//! the DWA weights of expanded DenseFormers.

use strata_core::{DwaConfig, Gpt, ModelConfig};
use strata_merge::{DwaInit, LayerPlan, LayerPlanSpec, PlanEntry, State, expand, state_of};
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor, nn};

fn config(n_layer: usize, dwa: bool) -> ModelConfig {
    let mut c: ModelConfig = toml::from_str(&format!(
        "vocab_size = 13\nn_layer = {n_layer}\nn_head = 2\nd_model = 8\nblock_size = 6"
    ))
    .unwrap();
    c.dwa = dwa.then_some(DwaConfig {
        dilation: 1,
        period: 1,
    });
    c
}

/// A model with random weights everywhere (DWA weights included) and its state.
fn trained(config: &ModelConfig, seed: u64) -> (nn::VarStore, Gpt, State) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = strata_tensor::seeded(seed, || {
        let model = Gpt::new(&vs.root(), config).unwrap();
        tch::no_grad(|| {
            for (_, mut t) in vs.variables() {
                let r = t.randn_like() * 0.3;
                t.copy_(&r);
            }
        });
        model
    });
    let state = state_of(&vs).unwrap();
    (vs, model, state)
}

/// A model of `config` holding `state`.
fn model_from(config: &ModelConfig, state: &State) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), config).unwrap();
    let mut vars = vs.variables();
    assert_eq!(vars.len(), state.len(), "one tensor per parameter");
    tch::no_grad(|| {
        for (name, value) in state {
            vars.get_mut(name)
                .expect("a parameter of that name")
                .copy_(value);
        }
    });
    (vs, model)
}

fn spec(text: &str) -> LayerPlanSpec {
    toml::from_str(text).unwrap()
}

#[test]
fn plans_parse_in_every_spelling() {
    let of = |text: &str, n| LayerPlan::from_spec(&spec(text), n).unwrap();
    let sources = |v: &[usize]| LayerPlan::from_sources(v.iter().copied());
    assert_eq!(of("plan = \"1-1-2-2\"", 2), sources(&[0, 0, 1, 1]));
    assert_eq!(of("plan = \"1-2-1-2\"", 2), sources(&[0, 1, 0, 1]));
    assert_eq!(of("plan = [3, 1, 2]", 3), sources(&[2, 0, 1]));
    assert_eq!(of("slices = [[0, 2], [1, 3]]", 3), sources(&[0, 1, 1, 2]));
    // SOLAR on 4 layers dropping 1: layers 1-3 of the first copy, 2-4 of the second.
    assert_eq!(of("solar = { drop = 1 }", 4), sources(&[0, 1, 2, 1, 2, 3]));
    assert_eq!(
        of("plan = \"1-I-2-i\"", 2).entries,
        [
            PlanEntry::Source(0),
            PlanEntry::Identity,
            PlanEntry::Source(1),
            PlanEntry::Identity
        ]
    );
}

#[test]
fn bad_plans_are_refused_with_what_was_expected() {
    for (text, n, says) in [
        ("plan = \"1-0-2\"", 2, "layer numbers from 1"),
        ("plan = \"I-I\"", 2, "at least one source layer"),
        ("plan = \"1-x\"", 2, "found `x`"),
        ("plan = [0, 1]", 2, "counted from 1"),
        (
            "plan = \"1-3\"",
            2,
            "new layer 2 takes source layer 3 but the source has 2 layers",
        ),
        ("slices = [[2, 2]]", 3, "start < end"),
        ("slices = [[0, 4]]", 3, "source has 3 layers"),
        (
            "solar = { drop = 4 }",
            4,
            "smaller than the source's 4 layers",
        ),
        ("plan = \"1\"\nsolar = { drop = 1 }", 2, "exactly one of"),
        ("tied = true", 2, "exactly one of"),
    ] {
        let err = LayerPlan::from_spec(&spec(text), n)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
    assert!(toml::from_str::<LayerPlanSpec>("plan = \"1\"\ntide = true").is_err());
}

#[test]
fn a_model_with_depth_methods_is_refused_not_mangled() {
    let mut c = config(2, true);
    c.depth.laurel = Some(strata_core::LaurelConfig {
        kind: strata_core::LaurelKind::Rw,
        rank: None,
    });
    let (_, _, state) = trained(&c, 3);
    let plan = LayerPlan::from_spec(&spec("plan = \"1-1-2\""), 2).unwrap();
    let Err(err) = expand(&c, &state, &plan, false, DwaInit::Map) else {
        panic!("a layer plan expanded a model with LAuReL");
    };
    let err = err.to_string();
    assert!(
        err.contains("model.depth") && err.contains("laurel-rw"),
        "{err}"
    );
}

#[test]
fn a_repetition_plan_places_copies_of_the_right_blocks() {
    let source_config = config(2, false);
    let (_vs, _m, source) = trained(&source_config, 1);
    let plan = LayerPlan::parse("1-1-2-2").unwrap();
    let out = expand(&source_config, &source, &plan, false, DwaInit::Map).unwrap();
    assert_eq!(out.config.n_layer, 4);
    assert!(out.config.sharing.is_none());
    for (new, old) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        for (name, t) in &source {
            if let Some(tail) = name.strip_prefix(&format!("h.{old}.")) {
                let copy = &out.state[&format!("h.{new}.{tail}")];
                assert!(copy.equal(t), "h.{new}.{tail} should equal h.{old}.{tail}");
                assert_ne!(copy.data_ptr(), t.data_ptr(), "copies own their storage");
            }
        }
    }
    assert!(out.state["wte.weight"].equal(&source["wte.weight"]));
    // The new model loads every tensor by name, with nothing missing or left over.
    let (_vs, model) = model_from(&out.config, &out.state);
    let idx = Tensor::randint(13, [2, 6], (Kind::Int64, Device::Cpu));
    assert_eq!(model.forward(&idx, false).unwrap().size(), [2, 6, 13]);
}

#[test]
fn a_tied_plan_keeps_one_tensor_per_shared_layer() {
    let source_config = config(3, false);
    let (_vs, _m, source) = trained(&source_config, 2);
    let plan = LayerPlan::parse("1-2-1-2-3").unwrap();
    let out = expand(&source_config, &source, &plan, true, DwaInit::Map).unwrap();
    assert_eq!(out.config.block_plan(), [0, 1, 0, 1, 2]);
    assert_eq!(out.config.n_blocks(), 3);
    let per_block = source.keys().filter(|k| k.starts_with("h.0.")).count();
    let blocks = out.state.keys().filter(|k| k.starts_with("h.")).count();
    assert_eq!(
        blocks,
        3 * per_block,
        "one set of tensors per distinct block"
    );
    let (_vs, model) = model_from(&out.config, &out.state);
    assert_eq!(model.blocks.len(), 3);
    // Tying an identity plan needs no sharing at all.
    let same = expand(
        &source_config,
        &source,
        &LayerPlan::parse("1-2-3").unwrap(),
        true,
        DwaInit::Map,
    )
    .unwrap();
    assert!(same.config.sharing.is_none());
}

#[test]
fn the_identity_plan_reproduces_a_denseformer_exactly() {
    let source_config = config(3, true);
    let (_vs, source_model, source) = trained(&source_config, 3);
    let plan = LayerPlan::parse("1-2-3").unwrap();
    let out = expand(&source_config, &source, &plan, false, DwaInit::Map).unwrap();
    let (_vs2, model) = model_from(&out.config, &out.state);
    let idx = Tensor::randint(13, [2, 6], (Kind::Int64, Device::Cpu));
    let a = tch::no_grad(|| source_model.forward(&idx, false)).unwrap();
    let b = tch::no_grad(|| model.forward(&idx, false)).unwrap();
    assert_eq!(a.max_abs_diff(&b).unwrap(), 0.0);
}

#[test]
fn dwa_weights_follow_the_copied_outputs() {
    let source_config = config(2, true);
    let (_vs, _m, source) = trained(&source_config, 4);
    let a = source["dwa.0.alpha"].to_f64_vec().unwrap(); // over entries {0, 1}
    let b = source["dwa.1.alpha"].to_f64_vec().unwrap(); // over entries {0, 1, 2}
    let out = expand(
        &source_config,
        &source,
        &LayerPlan::parse("1-1-2-2").unwrap(),
        false,
        DwaInit::Map,
    )
    .unwrap();
    // New stack entries hold source entries [0, 1, 1, 2, 2]; each weight goes to the latest
    // entry holding its source output.
    let want = [
        vec![a[0], a[1]],
        vec![a[0], 0.0, a[1]],
        vec![b[0], 0.0, b[1], b[2]],
        vec![b[0], 0.0, b[1], 0.0, b[2]],
    ];
    for (i, want) in want.iter().enumerate() {
        let got = out.state[&format!("dwa.{i}.alpha")].to_f64_vec().unwrap();
        assert_eq!(&got, want, "dwa.{i}.alpha");
    }
    let identity = expand(
        &source_config,
        &source,
        &LayerPlan::parse("1-1-2-2").unwrap(),
        false,
        DwaInit::Identity,
    )
    .unwrap();
    assert_eq!(
        identity.state["dwa.2.alpha"].to_f64_vec().unwrap(),
        [0.0, 0.0, 0.0, 1.0]
    );
}

#[test]
fn identity_insertion_preserves_the_function_of_baselines_and_denseformers() {
    for dwa in [false, true] {
        let source_config = config(2, dwa);
        let (_vs, source_model, source) = trained(&source_config, 5);
        for (text, tied) in [("I-1-I-2-I", false), ("1-I-2-I", true)] {
            let plan = LayerPlan::parse(text).unwrap();
            let out = expand(&source_config, &source, &plan, tied, DwaInit::Map).unwrap();
            assert_eq!(out.config.n_layer, plan.entries.len());
            let (_vs2, model) = model_from(&out.config, &out.state);
            let idx = Tensor::randint(13, [2, 6], (Kind::Int64, Device::Cpu));
            let a = tch::no_grad(|| source_model.forward(&idx, false)).unwrap();
            let b = tch::no_grad(|| model.forward(&idx, false)).unwrap();
            let err = a.max_abs_diff(&b).unwrap();
            assert!(err < 1e-6, "{text} dwa={dwa}: logits differ by {err}");
            // The inserted blocks are real copies whose output projections start at zero.
            let inserted = if text.starts_with('I') { 0 } else { 1 };
            assert_eq!(
                out.state[&format!("h.{inserted}.mlp.c_proj.weight")]
                    .abs()
                    .sum(Kind::Double)
                    .double_value(&[]),
                0.0
            );
            assert!(
                out.state[&format!("h.{inserted}.mlp.c_fc.weight")]
                    .equal(&source["h.0.mlp.c_fc.weight"])
            );
        }
    }
}
