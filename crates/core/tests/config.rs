//! Config parsing and validation errors name the field and the expectation.

mod common;

use common::tiny;
use strata_core::ModelConfig;

fn parse(text: &str) -> Result<ModelConfig, String> {
    toml::from_str::<ModelConfig>(text).map_err(|e| e.to_string())
}

#[test]
fn unknown_and_mistyped_keys_are_refused_by_name() {
    let base = "n_layer = 2\nn_head = 2\nd_model = 8\nblock_size = 4\n";
    assert!(parse(base).is_ok());
    let err = parse(&format!("{base}n_layers = 3\n")).unwrap_err();
    assert!(err.contains("n_layers"), "{err}");
    let err = parse(&base.replace("n_head = 2", "n_head = \"two\"")).unwrap_err();
    assert!(err.contains("n_head") || err.contains("integer"), "{err}");
    let err = parse(&format!("{base}norm = \"batchnorm\"\n")).unwrap_err();
    assert!(
        err.contains("batchnorm") && err.contains("layernorm"),
        "{err}"
    );
}

#[test]
fn impossible_shapes_are_refused_with_field_and_expectation() {
    let mut c = tiny(None);
    c.n_head = 3;
    let err = c.validate("configs/x.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "configs/x.toml: field `model.d_model`: expected a positive multiple of n_head = 3, found 16"
    );
    for (k, p, field) in [(0, 1, "model.dwa.dilation"), (1, 0, "model.dwa.period")] {
        let err = tiny(Some((k, p)))
            .validate("f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    let mut c = tiny(None);
    c.dropout = 1.0;
    assert!(
        c.validate("f")
            .unwrap_err()
            .to_string()
            .contains("model.dropout")
    );
    let mut c = tiny(None);
    c.vocab_size = 0;
    assert!(c.validate("f").is_err());
}

#[test]
fn first_difference_names_the_field() {
    let a = tiny(None);
    let mut b = tiny(None);
    assert_eq!(a.first_difference(&b), None);
    b.d_model = 32;
    assert_eq!(a.first_difference(&b).unwrap(), "model.d_model: 16 vs 32");
}
