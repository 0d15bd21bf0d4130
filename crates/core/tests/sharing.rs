//! Weight-shared depth: a shared model equals an unshared one whose repeated blocks are
//! copies, and its gradients are the sums of the copies' gradients.

mod common;

use strata_core::{Gpt, ModelConfig, SharingConfig, SharingPattern};
use strata_tensor::TensorExt;
use tch::nn;

/// A 4-layer config running `plan`.
fn shared(plan: Vec<usize>, dwa: Option<(usize, usize)>) -> ModelConfig {
    let mut config = common::tiny(dwa);
    config.n_layer = plan.len();
    config.sharing = Some(SharingConfig {
        plan: Some(plan),
        ..Default::default()
    });
    config
}

/// The unshared twin of `shared_vs`: layer i gets a copy of block `plan[i]`.
fn unshared_copy(shared_vs: &nn::VarStore, config: &ModelConfig) -> (nn::VarStore, Gpt) {
    let mut plain = config.clone();
    plain.sharing = None;
    let (vs, model) = common::build(&plain, 99);
    let plan = config.block_plan();
    let source = shared_vs.variables();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let from = match name.strip_prefix("h.") {
                Some(rest) => {
                    let (layer, tail) = rest.split_once('.').unwrap();
                    format!("h.{}.{tail}", plan[layer.parse::<usize>().unwrap()])
                }
                None => name.clone(),
            };
            t.copy_(&source[&from]);
        }
    });
    (vs, model)
}

#[test]
fn a_shared_model_equals_its_unshared_copy_in_logits_and_summed_gradients() {
    for plan in [
        vec![0, 1, 0, 1],
        vec![0, 0, 1, 1],
        vec![0, 0, 0, 0],
        vec![1, 0, 2, 0],
    ] {
        for dwa in [None, Some((1, 1)), Some((2, 1))] {
            let config = shared(plan.clone(), dwa);
            let (vs, model) = common::build(&config, 7);
            let (plain_vs, plain) = unshared_copy(&vs, &config);
            let idx = common::tokens(2, 8, 11, 8);
            let a = model.loss(&idx, &idx.roll([1], [1]), true).unwrap();
            let b = plain.loss(&idx, &idx.roll([1], [1]), true).unwrap();
            assert_eq!(a.double_value(&[]), b.double_value(&[]), "{plan:?} {dwa:?}");
            a.backward();
            b.backward();
            let shared_vars = vs.variables();
            let plain_vars = plain_vs.variables();
            for (name, t) in &shared_vars {
                let want = match name.strip_prefix("h.") {
                    Some(rest) => {
                        let (block, tail) = rest.split_once('.').unwrap();
                        let block: usize = block.parse().unwrap();
                        plan.iter()
                            .enumerate()
                            .filter(|(_, b)| **b == block)
                            .map(|(layer, _)| plain_vars[&format!("h.{layer}.{tail}")].grad())
                            .fold(None, |acc: Option<tch::Tensor>, g| {
                                Some(match acc {
                                    None => g,
                                    Some(a) => a + g,
                                })
                            })
                            .unwrap()
                    }
                    None => plain_vars[name].grad(),
                };
                let err = t.grad().max_rel_diff(&want).unwrap();
                assert!(
                    err < 1e-5,
                    "{plan:?} {dwa:?}: gradient of {name} differs by {err}"
                );
            }
        }
    }
}

#[test]
fn shared_blocks_are_counted_once() {
    let config = shared(vec![0, 1, 0, 1], None);
    let (_vs, model) = common::build(&config, 1);
    let mut two = common::tiny(None);
    two.n_layer = 2;
    let (_vs2, two_layers) = common::build(&two, 1);
    assert_eq!(model.blocks.len(), 2);
    assert_eq!(model.param_count(), two_layers.param_count());
    assert_eq!(config.variant_name(), "baseline-shared-2");
}

#[test]
fn sharing_patterns_expand_to_plans_and_bad_plans_are_refused() {
    let parse = |sharing: &str| -> ModelConfig {
        toml::from_str(&format!(
            "vocab_size = 11\nn_layer = 6\nn_head = 2\nd_model = 8\nblock_size = 4\n[sharing]\n{sharing}"
        ))
        .unwrap()
    };
    let cycle = parse("blocks = 2");
    cycle.validate("m.toml").unwrap();
    assert_eq!(cycle.block_plan(), [0, 1, 0, 1, 0, 1]);
    let repeat = parse("blocks = 3\npattern = \"repeat\"");
    repeat.validate("m.toml").unwrap();
    assert_eq!(repeat.block_plan(), [0, 0, 1, 1, 2, 2]);
    let universal = parse("blocks = 1");
    assert_eq!(universal.block_plan(), [0; 6]);
    assert_eq!(
        repeat.sharing.as_ref().unwrap().pattern,
        SharingPattern::Repeat
    );
    for (bad, field, says) in [
        (
            "plan = [0, 1]",
            "model.sharing.plan",
            "one block index per layer",
        ),
        (
            "plan = [0, 2, 0, 2, 0, 2]",
            "model.sharing.plan",
            "block 1 unused",
        ),
        ("blocks = 7", "model.sharing.blocks", "1 to n_layer = 6"),
        (
            "blocks = 4\npattern = \"repeat\"",
            "model.sharing.blocks",
            "a divisor",
        ),
        (
            "pattern = \"cycle\"",
            "model.sharing.blocks",
            "distinct blocks",
        ),
    ] {
        let err = parse(bad).validate("m.toml").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("m.toml: field `{field}`")),
            "{bad}: {err}"
        );
        assert!(err.contains(says), "{bad}: {err}");
    }
    let typo: Result<ModelConfig, _> = toml::from_str(
        "vocab_size = 11\nn_layer = 6\nn_head = 2\nd_model = 8\nblock_size = 4\n[sharing]\nblock = 2",
    );
    assert!(typo.unwrap_err().to_string().contains("block"));
}
