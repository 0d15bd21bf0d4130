//! Merge configs: defaults, per-group overrides, and bad configs refused with the file, the
//! field and what was expected.

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
