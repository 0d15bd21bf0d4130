//! Merge configs: defaults, per-group overrides, and bad configs refused with the file, the
//! field and what was expected.

use strata_merge::config::sum_is_near_zero;
use strata_merge::{MergeConfig, MethodKind};

fn parse(text: &str) -> strata_tensor::Result<MergeConfig> {
    MergeConfig::parse(text, "merge.toml")
}

#[test]
fn defaults_and_group_overrides_resolve_per_tensor() {
    let c = parse(
        "base = \"b\"\nmodels = [\"x\", \"y\"]\nmethod = \"ties\"\ndensity = 0.3\n\
         [[groups]]\ntensors = \"h.*.mlp.*\"\ndensity = 0.9\n\
         [[groups]]\ntensors = \"h.1.*\"\nweights = [0.5, 2.0]\n",
    )
    .unwrap();
    let attn = c.params_for("h.0.attn.c_attn.weight");
    assert_eq!((attn.method, attn.density), (MethodKind::Ties, 0.3));
    assert_eq!(attn.weights, [1.0, 1.0], "λ defaults to 1 per model");
    let mlp = c.params_for("h.1.mlp.c_fc.weight");
    assert_eq!(mlp.density, 0.9);
    assert_eq!(mlp.weights, [0.5, 2.0], "later groups apply on top");
    let soup = parse("models = [\"x\", \"y\", \"z\"]\nmethod = \"linear\"").unwrap();
    assert_eq!(soup.params_for("wte.weight").weights, [1.0 / 3.0; 3]);
    let plan_only =
        parse("[layers]\nsource = \"runs/a\"\nplan = \"1-1-2-2\"\ntied = true").unwrap();
    assert!(plan_only.layers.unwrap().tied);
}

#[test]
fn bad_configs_name_the_field_and_the_expectation() {
    for (text, says) in [
        (
            "models = [\"x\"]\nmethod = \"average\"",
            "unknown variant `average`",
        ),
        (
            "models = [\"x\"]\nmethod = \"linear\"\nwieghts = [1.0]",
            "unknown field `wieghts`",
        ),
        (
            "method = \"linear\"",
            "field `models`: expected the checkpoints",
        ),
        (
            "base = \"b\"\nmodels = [\"x\", \"y\"]\nmethod = \"task_arithmetic\"\nweights = [1.0]",
            "field `weights`: expected 2 entries (one per model), found 1 entries",
        ),
        (
            "models = [\"x\", \"y\"]\nmethod = \"ties\"",
            "field `base`: expected the common base",
        ),
        (
            "models = [\"x\"]\nmethod = \"slerp\"",
            "exactly 2 models for slerp",
        ),
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"ties\"\ndensity = 0.0",
            "field `density`",
        ),
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"dare\"\ndrop = 1.0",
            "field `drop`",
        ),
        (
            "models = [\"x\", \"y\"]\nmethod = \"slerp\"\n[[groups]]\ntensors = \"h.*\"\nt = 2.0",
            "field `groups[0].t`: expected a position in [0, 1]",
        ),
        ("out = \"o\"", "field `method`: expected a merge method"),
        ("[layers]\nplan = \"1-2\"", "field `layers.source`"),
        (
            "[layers]\nsource = \"a\"\nplan = \"1-2\"\ntide = true",
            "unknown field `tide`",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("merge.toml"), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn the_shipped_examples_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            MergeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "the examples are shipped");
}

#[test]
fn linear_weights_that_nearly_cancel_are_refused_at_the_weights_field() {
    // 0.1 + 0.2 - 0.3 is 5.6e-17 in f64: normalising would scale the models by about 1e16.
    for (text, field) in [
        (
            "models = [\"x\", \"y\", \"z\"]\nmethod = \"linear\"\nweights = [0.1, 0.2, -0.3]",
            "field `weights`",
        ),
        (
            "models = [\"x\", \"y\"]\nmethod = \"linear\"\nweights = [1.0, -1.0]",
            "field `weights`",
        ),
        (
            "models = [\"x\", \"y\"]\nmethod = \"linear\"\n\
             [[groups]]\ntensors = \"h.*\"\nweights = [2.0, -2.0]",
            "field `groups[0].weights`",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("merge.toml"), "{text}: {err}");
        assert!(err.contains(field), "{text}: {err}");
        assert!(err.contains("sum is not near zero"), "{text}: {err}");
    }
    // Without normalisation the sum divides nothing; a clearly non-zero sum is fine.
    parse("models = [\"x\", \"y\", \"z\"]\nmethod = \"linear\"\nweights = [0.1, 0.2, -0.3]\nnormalize = false")
        .unwrap();
    parse("models = [\"x\", \"y\"]\nmethod = \"linear\"\nweights = [1.0, -0.5]").unwrap();
    // The threshold is relative to the weights' magnitudes, not absolute.
    parse("models = [\"x\", \"y\"]\nmethod = \"linear\"\nweights = [1e-9, 1e-9]").unwrap();
    assert!(sum_is_near_zero(&[0.1, 0.2, -0.3]));
    assert!(sum_is_near_zero(&[0.0, 0.0]));
    assert!(!sum_is_near_zero(&[1e-9, 1e-9]));
    assert!(!sum_is_near_zero(&[1.0, -(1.0 - 1e-3)]));
}

#[test]
fn parameters_the_method_does_not_use_are_refused() {
    for (text, says) in [
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"dare\"\ndensity = 0.3",
            &[
                "field `density`",
                "method `dare`",
                "parameter of ties",
                "density = 0.3",
            ][..],
        ),
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"ties\"\nnormalize = false",
            &["field `normalize`", "method `ties`", "parameter of linear"],
        ),
        (
            "models = [\"x\"]\nmethod = \"linear\"\nt = 0.3",
            &["field `t`", "method `linear`", "parameter of slerp"],
        ),
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"ties\"\nseed = 3",
            &["field `seed`", "method `ties`", "parameter of dare"],
        ),
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"task_arithmetic\"\ndrop = 0.1",
            &[
                "field `drop`",
                "method `task_arithmetic`",
                "parameter of dare",
            ],
        ),
        (
            "models = [\"x\", \"y\"]\nmethod = \"slerp\"\nweights = [0.5, 0.5]",
            &[
                "field `weights`",
                "method `slerp`",
                "parameter of linear, task_arithmetic, ties, dare",
            ],
        ),
        (
            "base = \"b\"\nmodels = [\"x\"]\nmethod = \"dare\"\n\
             [[groups]]\ntensors = \"h.*\"\ndensity = 0.2",
            &["field `groups[0].density`", "method `dare`"],
        ),
        (
            "density = 0.2\n[layers]\nsource = \"a\"\nplan = \"1-1\"",
            &["field `density`", "without a merge `method`"],
        ),
        (
            "[layers]\nsource = \"a\"\nplan = \"1-1\"\n[[groups]]\ntensors = \"h.*\"",
            &["field `groups`", "without a merge `method`"],
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("merge.toml"), "{text}: {err}");
        for s in says {
            assert!(err.contains(s), "{text}: {err}");
        }
    }
    // Each method accepts its own parameters.
    for text in [
        "models = [\"x\"]\nmethod = \"linear\"\nweights = [1.0]\nnormalize = false",
        "base = \"b\"\nmodels = [\"x\"]\nmethod = \"task_arithmetic\"\nweights = [0.5]",
        "base = \"b\"\nmodels = [\"x\"]\nmethod = \"ties\"\nweights = [1.0]\ndensity = 0.2",
        "base = \"b\"\nmodels = [\"x\"]\nmethod = \"dare\"\nweights = [1.0]\ndrop = 0.2\nseed = 4\n\
         [[groups]]\ntensors = \"h.*\"\ndrop = 0.1",
        "models = [\"x\", \"y\"]\nmethod = \"slerp\"\nt = 0.2\n[[groups]]\ntensors = \"h.*\"\nt = 0.7",
    ] {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn a_group_glob_must_match_a_tensor_of_the_models() {
    let c = parse(
        "base = \"b\"\nmodels = [\"x\"]\nmethod = \"ties\"\n\
         [[groups]]\ntensors = \"h.*.mlp.*\"\ndensity = 0.3\n\
         [[groups]]\ntensors = \"h.*.ffn.*\"\ndensity = 0.2\n",
    )
    .unwrap();
    let names = [
        "wte.weight",
        "h.0.mlp.c_fc.weight",
        "h.0.attn.c_attn.weight",
    ];
    let err = c
        .check_groups_match(&names, "merge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("merge.toml: field `groups[1].tensors`"),
        "{err}"
    );
    assert!(
        err.contains("\"h.*.ffn.*\", which matches no tensor"),
        "{err}"
    );
    let first_only = parse(
        "base = \"b\"\nmodels = [\"x\"]\nmethod = \"ties\"\n\
         [[groups]]\ntensors = \"h.*.mlp.*\"\ndensity = 0.3\n",
    )
    .unwrap();
    first_only.check_groups_match(&names, "merge.toml").unwrap();
}

#[test]
fn the_written_recipe_parses_back_to_the_same_config() {
    // `strata merge` writes the config it ran as `merge.toml`: defaults left unset stay unset,
    // so the recipe does not trip the unused-parameter check when it is run again.
    for text in [
        "base = \"b\"\nmodels = [\"x\", \"y\"]\nmethod = \"dare\"\ndrop = 0.3\nseed = 2",
        "models = [\"x\", \"y\"]\nmethod = \"slerp\"\n[[groups]]\ntensors = \"h.*\"\nt = 0.25",
        "[layers]\nsource = \"a\"\nplan = \"1-1-2-2\"",
    ] {
        let config = parse(text).unwrap();
        let written = toml::to_string(&config).unwrap();
        assert_eq!(parse(&written).unwrap(), config, "{written}");
    }
}
