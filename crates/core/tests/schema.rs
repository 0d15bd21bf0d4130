//! The parameter schema against the `VarStore` of a built model, for every model kind.

mod common;

use common::tiny;
use std::collections::BTreeMap;
use strata_core::schema::{self, BlockLayer, Location, Role, Slot};
use strata_core::{
    Gpt, HyperConfig, LaurelConfig, LaurelKind, LoraConfig, LoraTarget, MlpKind, ModelConfig,
    NormKind, ParamCount, PositionKind, SharingConfig, SharingPattern,
};
use tch::{Device, nn};

/// One config of every model kind the schema must describe.
fn kinds() -> Vec<(&'static str, ModelConfig)> {
    let lora = |targets: Vec<LoraTarget>, freeze_base: bool| LoraConfig {
        rank: 2,
        scale: 1.0,
        targets,
        freeze_base,
    };
    let mut out = vec![("baseline", tiny(None))];
    for (k, p) in [(1, 1), (2, 1), (1, 2), (4, 5)] {
        let mut c = tiny(Some((k, p)));
        c.n_layer = 6;
        out.push(("dwa", c));
    }
    let mut shared = tiny(Some((1, 1)));
    shared.n_layer = 4;
    shared.sharing = Some(SharingConfig {
        blocks: Some(2),
        pattern: SharingPattern::Repeat,
        plan: None,
    });
    out.push(("sharing", shared));
    let mut c = tiny(None);
    c.lora = Some(lora(LoraTarget::blocks(), false));
    out.push(("lora", c));
    let mut c = tiny(None);
    c.tied_embeddings = false;
    c.mlp = MlpKind::Swiglu;
    c.bias = true;
    c.lora = Some(lora(
        vec![LoraTarget::Mlp, LoraTarget::AttnProj, LoraTarget::Head],
        true,
    ));
    out.push(("lora frozen, swiglu, head", c));
    let mut c = tiny(None);
    c.mlp = MlpKind::Swiglu;
    out.push(("swiglu", c));
    let mut c = tiny(None);
    c.norm = NormKind::Rmsnorm;
    c.bias = true;
    out.push(("rmsnorm with biases", c));
    let mut c = tiny(None);
    c.positions = PositionKind::Rotary;
    out.push(("rotary", c));
    let mut c = tiny(None);
    c.tied_embeddings = false;
    out.push(("untied head", c));
    let mut c = tiny(Some((1, 1)));
    c.mlp = MlpKind::Pattention;
    c.mlp_hidden = Some(24);
    c.bias = true;
    out.push(("pattention", c));
    let mut c = tiny(None);
    c.bias = true;
    out.push(("biases", c));
    let mut c = tiny(None);
    c.head_dim = Some(6);
    out.push(("explicit head_dim", c));
    let mut c = tiny(None);
    c.mlp = MlpKind::Relu2;
    c.bias = true;
    out.push(("relu2 with biases", c));
    // The modern block: QK-norm has no gains, zero initialisation and the soft-cap add no
    // tensors, the untied head is `lm_head`.
    let mut c = tiny(Some((1, 1)));
    c.positions = PositionKind::Rotary;
    c.norm = NormKind::Rmsnorm;
    c.qk_norm = true;
    c.mlp = MlpKind::Relu2;
    c.zero_init_projections = true;
    c.tied_embeddings = false;
    c.zero_init_head = true;
    c.logit_softcap = Some(30.0);
    out.push(("modern block", c));
    let laurel = |kind, rank| Some(LaurelConfig { kind, rank });
    let mut c = tiny(None);
    c.depth.value_residual = true;
    out.push(("value residual", c));
    let mut c = tiny(Some((2, 1)));
    c.depth.laurel = laurel(LaurelKind::Rw, None);
    out.push(("laurel-rw with dwa", c));
    let mut c = tiny(None);
    c.depth.laurel = laurel(LaurelKind::Lr, Some(3));
    c.depth.value_residual = true;
    c.tied_embeddings = false;
    out.push(("laurel-lr, value residual, untied head", c));
    let mut c = tiny(Some((1, 1)));
    c.n_layer = 4;
    c.depth.value_residual = true;
    c.depth.laurel = laurel(LaurelKind::Lr, Some(2));
    c.sharing = Some(SharingConfig {
        blocks: Some(2),
        pattern: SharingPattern::Cycle,
        plan: None,
    });
    out.push(("depth methods on shared blocks", c));
    for (streams, dynamic, manifold) in [(2, false, false), (3, true, false), (2, true, true)] {
        let mut c = tiny(None);
        c.depth.hyper = Some(HyperConfig {
            streams,
            dynamic,
            manifold,
            ..Default::default()
        });
        c.depth.value_residual = dynamic;
        out.push(("hyper-connections", c));
    }
    let mut c = tiny(None);
    c.depth.attn_res = true;
    c.depth.value_residual = true;
    out.push(("attention residuals", c));
    let mut c = tiny(None);
    c.n_layer = 4;
    c.depth.mudd = true;
    c.depth.value_residual = true;
    c.tied_embeddings = false;
    c.sharing = Some(SharingConfig {
        blocks: Some(2),
        pattern: SharingPattern::Cycle,
        plan: None,
    });
    out.push(("MUDD on shared blocks, untied head", c));
    out
}

#[test]
fn the_schema_lists_exactly_the_variables_of_every_model_kind() {
    for (kind, config) in kinds() {
        config.validate(kind).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), &config).unwrap();
        let vars = vs.variables();
        let specs = schema::schema(&config);
        let listed: BTreeMap<String, Vec<i64>> =
            specs.iter().map(|s| (s.name(), s.shape.clone())).collect();
        assert_eq!(listed.len(), specs.len(), "{kind}: a name listed twice");
        let built: BTreeMap<String, Vec<i64>> =
            vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        assert_eq!(listed, built, "{kind}: names and shapes");
        for spec in &specs {
            let name = spec.name();
            assert_eq!(
                vars[&name].requires_grad(),
                spec.trainable,
                "{kind}: {name} trainable"
            );
            assert_eq!(
                schema::parse(&name),
                Some((spec.location, spec.slot)),
                "{kind}: {name} parses back"
            );
            let tensor = model.tensor(spec.location, spec.slot).unwrap();
            assert_eq!(
                tensor.data_ptr(),
                vars[&name].data_ptr(),
                "{kind}: {name} is the model's own tensor"
            );
        }
        // `parameters` follows the schema and counts the VarStore.
        let numel: usize = vars.values().map(|t| t.numel()).sum();
        assert_eq!(model.parameters().len(), vars.len(), "{kind}");
        assert_eq!(model.param_count().total, numel, "{kind}");
        assert_eq!(ParamCount::of(&config), model.param_count(), "{kind}");
        let embedding: usize = vars
            .iter()
            .filter(|(n, _)| n.starts_with("wte.") || n.starts_with("wpe."))
            .map(|(_, t)| t.numel())
            .sum();
        assert_eq!(
            model.param_count().non_embedding,
            numel - embedding,
            "{kind}"
        );
    }
}

#[test]
fn roles_split_hidden_matrices_from_everything_else() {
    let mut config = tiny(Some((1, 1)));
    config.tied_embeddings = false;
    config.bias = true;
    let specs = schema::schema(&config);
    let role = |name: &str| specs.iter().find(|s| s.name() == name).unwrap().role;
    assert_eq!(role("wte.weight"), Role::TokenEmbedding);
    assert_eq!(role("wpe.weight"), Role::PositionEmbedding);
    assert_eq!(role("h.1.attn.c_attn.weight"), Role::AttentionMatrix);
    assert_eq!(role("h.2.mlp.c_proj.weight"), Role::MlpMatrix);
    assert_eq!(role("h.0.ln_2.weight"), Role::NormGain);
    assert_eq!(role("h.0.mlp.c_fc.bias"), Role::Bias);
    assert_eq!(role("dwa.1.alpha"), Role::DwaWeight);
    let mut depth = config.clone();
    depth.depth.value_residual = true;
    depth.depth.laurel = Some(LaurelConfig {
        kind: LaurelKind::Lr,
        rank: Some(2),
    });
    let specs = schema::schema(&depth);
    let role = |name: &str| specs.iter().find(|s| s.name() == name).unwrap().role;
    assert_eq!(role("vres.1.lambda"), Role::DepthScalar);
    assert_eq!(role("laurel.0.down"), Role::DepthMatrix);
    assert_eq!(role("laurel.2.up"), Role::DepthMatrix);
    assert!(!specs.iter().any(|s| s.name() == "vres.0.lambda"));
    assert_eq!(role("lm_head.weight"), Role::Head);
    for spec in &specs {
        assert_eq!(
            spec.role.is_hidden_matrix(),
            spec.shape.len() == 2 && spec.location.block().is_some(),
            "{}",
            spec.name()
        );
    }
}

#[test]
fn names_are_written_and_read_in_one_place() {
    let qkv = Location::Block {
        block: 3,
        layer: BlockLayer::AttnQkv,
    };
    assert_eq!(qkv.name(Slot::LoraA), "h.3.attn.c_attn.lora_a");
    assert_eq!(Location::Dwa { after: 2 }.name(Slot::Alpha), "dwa.2.alpha");
    for bad in [
        "h.x.attn.c_attn.weight",
        "h.01.ln_1.weight",
        "h.1.attn.weight",
        "h.1.mlp.c_fc.scale",
        "dwa.1.2.alpha",
        "vres.1.2.lambda",
        "laurel.x.alpha",
        "wte",
        "encoder.weight",
    ] {
        assert_eq!(schema::parse(bad), None, "{bad}");
    }
}

#[test]
fn lora_linears_follow_the_schema() {
    let mut config = tiny(None);
    config.mlp = MlpKind::Swiglu;
    config.tied_embeddings = false;
    config.lora = Some(LoraConfig {
        rank: 2,
        scale: 1.0,
        targets: vec![LoraTarget::Attn, LoraTarget::Mlp, LoraTarget::Head],
        freeze_base: false,
    });
    let from_schema: Vec<(String, usize, usize)> = schema::schema(&config)
        .iter()
        .filter(|s| s.slot == Slot::LoraA)
        .map(|s| {
            let b = schema::schema(&config)
                .into_iter()
                .find(|b| b.location == s.location && b.slot == Slot::LoraB)
                .unwrap();
            (s.location.path(), s.shape[1] as usize, b.shape[0] as usize)
        })
        .collect();
    assert_eq!(config.lora_linears(), from_schema);
    assert_eq!(from_schema.len(), 3 * 3 + 1);
}
