//! `ModelConfig::default` and the builder.

use strata_core::{DwaConfig, Gpt, MlpKind, ModelConfig};
use tch::{Device, nn};

#[test]
fn the_default_is_the_nanogpt_cpu_recipe_model() {
    let recipe = include_str!("../../../configs/nanogpt-cpu.toml");
    let table: toml::Table = toml::from_str(recipe).unwrap();
    let mut model: ModelConfig = table["model"].clone().try_into().unwrap();
    model.vocab_size = 65; // set by the char tokenizer on Tiny Shakespeare
    assert_eq!(ModelConfig::default(), model);
    let vs = nn::VarStore::new(Device::Cpu);
    let gpt = Gpt::new(&vs.root(), &ModelConfig::default()).unwrap();
    // The parameter count of the README's demo table.
    assert_eq!(gpt.param_count().total, 804_096);
}

#[test]
fn the_builder_sets_fields_and_validates_on_build() {
    let config = ModelConfig::builder()
        .n_layer(6)
        .d_model(64)
        .mlp(MlpKind::Swiglu)
        .mlp_hidden(96)
        .dwa(2, 3)
        .build()
        .unwrap();
    let want = ModelConfig {
        n_layer: 6,
        d_model: 64,
        mlp: MlpKind::Swiglu,
        mlp_hidden: Some(96),
        dwa: Some(DwaConfig {
            dilation: 2,
            period: 3,
        }),
        ..ModelConfig::default()
    };
    assert_eq!(config, want);

    let err = ModelConfig::builder()
        .d_model(30)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model config (builder)") && err.contains("model.d_model"),
        "{err}"
    );
    let err = ModelConfig::builder()
        .dwa(1, 0)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.dwa.period"), "{err}");
}
