//! Depth methods added mid-run (`add_depth`): the function kept for every method that starts
//! as the model without it, old tensors and moments untouched, new ones at the grown model's
//! init with zero moments, and additions that are not one refused.

mod common;

use common::*;
use strata_core::ModelConfig;
use strata_core::schema::{self, Role};
use strata_growth::GrowthOp;

/// Relative logit tolerance in f32.
const TOL: f64 = 1e-5;

/// A 3-layer model, with `extra` appended to its TOML.
fn model(extra: &str) -> ModelConfig {
    config(&format!(
        "vocab_size = 13\nn_layer = 3\nn_head = 2\nd_model = 16\nblock_size = 8\nbias = true\n{extra}"
    ))
}

/// The `add_depth` operation from the TOML of its fields.
fn add_depth(fields: &str) -> GrowthOp {
    toml::from_str(&format!("op = \"add_depth\"\n{fields}")).unwrap()
}

/// The methods that start as the model without them, as `add_depth` fields.
const FUNCTION_KEEPING: [&str; 9] = [
    "dwa = { dilation = 1, period = 1 }",
    "dwa = { dilation = 2, period = 3 }",
    "depth = { laurel = { kind = \"rw\" } }",
    "depth = { laurel = { kind = \"lr\", rank = 2 } }",
    "depth = { hyper = { streams = 2 } }",
    "depth = { hyper = { streams = 3, dynamic = true } }",
    "depth = { hyper = { streams = 2, dynamic = true, manifold = true } }",
    "depth = { attn_res = true }",
    "depth = { mudd = true }",
];

#[test]
fn added_depth_methods_keep_the_function_old_tensors_and_moments() {
    // Hyper-connections and attention residuals start as the model without them up to the
    // norms' epsilon (strata-core's tests); a tiny epsilon takes that out.
    let bases = [
        "norm_eps = 1e-12\n",
        "norm_eps = 1e-12\nnorm = \"rmsnorm\"\npositions = \"rotary\"\nqk_norm = true\nmlp = \"relu2\"\n",
    ];
    for base in bases {
        let config = model(base);
        let (vs, original) = random_model(&config, 7);
        let mut snap = snapshot(&vs, &config);
        snap.moments = Some(random_moments(&snap.params, 3));
        for fields in FUNCTION_KEEPING {
            let op = add_depth(fields);
            let grown = op.apply(&snap, 11).unwrap();
            let (_, model) = build(&grown);
            assert_same_logits(&original, &model, &tokens(2, 8, 13, 5), TOL);
            let roles: std::collections::HashMap<String, Role> = schema::schema(&grown.config)
                .into_iter()
                .map(|s| (s.name(), s.role))
                .collect();
            let (old, new) = (
                snap.moments.as_ref().unwrap(),
                grown.moments.as_ref().unwrap(),
            );
            for (name, t) in &grown.params {
                match snap.params.get(name) {
                    Some(before) => {
                        assert!(t.equal(before), "{fields}: `{name}` changed");
                        assert!(new.exp_avg[name].equal(&old.exp_avg[name]), "{name}");
                        assert!(new.exp_avg_sq[name].equal(&old.exp_avg_sq[name]), "{name}");
                    }
                    None => {
                        assert!(
                            strata_growth::depth::is_depth_method_tensor(roles[name]),
                            "{fields}: `{name}` is new but no depth method's"
                        );
                        assert_eq!(
                            new.exp_avg[name]
                                .abs()
                                .sum(tch::Kind::Double)
                                .double_value(&[]),
                            0.0
                        );
                        assert_eq!(
                            new.exp_avg_sq[name]
                                .abs()
                                .sum(tch::Kind::Double)
                                .double_value(&[]),
                            0.0
                        );
                    }
                }
            }
            assert!(
                grown.params.len() > snap.params.len(),
                "{fields}: nothing added"
            );
        }
    }
}

#[test]
fn new_tensors_are_the_grown_models_init_under_the_growth_seed() {
    let config = model("");
    let (vs, _) = random_model(&config, 2);
    let snap = snapshot(&vs, &config);
    let op = add_depth("depth = { mudd = true }");
    let (a, b, c) = (
        op.apply(&snap, 4).unwrap(),
        op.apply(&snap, 4).unwrap(),
        op.apply(&snap, 5).unwrap(),
    );
    let down = "mudd.0.down";
    let name = a
        .params
        .keys()
        .find(|n| n.starts_with(down))
        .unwrap()
        .clone();
    assert!(
        a.params[&name].equal(&b.params[&name]),
        "same seed, same init"
    );
    assert!(
        !a.params[&name].equal(&c.params[&name]),
        "the seed draws the init"
    );
    // The value residual starts at its paper's mix (not the old function), old tensors kept.
    let vres = add_depth("depth = { value_residual = true }")
        .apply(&snap, 1)
        .unwrap();
    assert!(vres.config.depth.value_residual);
    for (name, t) in &snap.params {
        assert!(vres.params[name].equal(t), "`{name}` changed");
    }
}

#[test]
fn additions_that_are_not_one_are_refused() {
    let plain = model("");
    let (vs, _) = random_model(&plain, 1);
    let nothing = add_depth("").apply(&snapshot(&vs, &plain), 1).unwrap_err();
    assert!(
        nothing.to_string().contains("expected a method to add"),
        "{nothing}"
    );
    let dense = model("[dwa]\ndilation = 1\nperiod = 1\n");
    let again = add_depth("depth = { mudd = true }")
        .grown_config(&dense)
        .unwrap_err();
    assert!(
        again.to_string().contains("already has denseformer-1x1"),
        "{again}"
    );
    let clashing = add_depth("dwa = { dilation = 1, period = 1 }\ndepth = { mudd = true }")
        .grown_config(&plain)
        .unwrap_err();
    assert!(clashing.to_string().contains("mudd"), "{clashing}");
    let unknown: Result<GrowthOp, _> = toml::from_str("op = \"add_depth\"\nmud = true\n");
    assert!(unknown.is_err());
}

#[test]
fn the_label_names_what_is_added() {
    let op = add_depth("dwa = { dilation = 4, period = 5 }\nrewarm_steps = 10");
    assert_eq!(op.label(), "add_depth(dwa 4x5)");
    assert_eq!(op.rewarm_steps(), 10);
    assert_eq!(
        add_depth("depth = { mudd = true }").label(),
        "add_depth(mudd)"
    );
}
