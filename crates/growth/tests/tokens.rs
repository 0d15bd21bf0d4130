//! Parameter-token growth of Pattention MLPs: same logits, new keys learn, τ fixed.

mod common;

use common::*;
use strata_growth::GrowthOp;

#[test]
fn appended_parameter_tokens_keep_the_function_and_get_gradients() {
    for extra in ["", "[dwa]\ndilation = 1\nperiod = 1\n"] {
        let config = config(&format!(
            "vocab_size = 13\nn_layer = 2\nn_head = 2\nd_model = 16\nblock_size = 8\nmlp = \"pattention\"\nmlp_hidden = 24\n{extra}"
        ));
        let (vs, original) = random_model(&config, 31);
        let mut snap = snapshot(&vs, &config);
        snap.moments = Some(random_moments(&snap.params, 9));
        let grown = GrowthOp::GrowParamTokens { tokens: 40 }
            .apply(&snap, 3)
            .unwrap();
        assert_eq!(grown.config.mlp_hidden(), 40);
        assert_eq!(grown.config.pattention_tau, Some(24f64.sqrt()));
        let (gvs, model) = build(&grown);
        let batch = tokens(2, 8, 13, 4);
        assert_same_logits(&original, &model, &batch, 1e-5);
        let moments = grown.moments.as_ref().unwrap();
        let m = moments.exp_avg["h.0.mlp.c_fc.weight"].narrow(0, 24, 16);
        assert_eq!(m.abs().sum(tch::Kind::Double).double_value(&[]), 0.0);
        // The new keys are zero but get a gradient at once (their values are not zero).
        let loss = model
            .loss(&batch.narrow(1, 0, 7), &batch.narrow(1, 1, 7), false)
            .unwrap();
        loss.backward();
        let grad = gvs.variables()["h.0.mlp.c_fc.weight"]
            .grad()
            .narrow(0, 24, 16);
        assert!(grad.abs().sum(tch::Kind::Double).double_value(&[]) > 0.0);
        let (first, last) = train_a_little(&gvs, &model, &tokens(4, 8, 13, 6), 30);
        assert!(last < first * 0.8, "loss {first} -> {last}");
    }
}

#[test]
fn pattention_refuses_unit_copies_and_shrinking() {
    let config = config(
        "vocab_size = 13\nn_layer = 1\nn_head = 2\nd_model = 16\nblock_size = 8\nmlp = \"pattention\"\nmlp_hidden = 24\n",
    );
    let err = GrowthOp::WidenMlp {
        hidden: 30,
        noise: 0.0,
    }
    .grown_config(&config)
    .unwrap_err();
    assert!(err.to_string().contains("grow_param_tokens"), "{err}");
    let err = GrowthOp::GrowParamTokens { tokens: 24 }
        .grown_config(&config)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("tokens must grow beyond the current 24"),
        "{err}"
    );
}
