//! Bounds on every number a run takes (issue 18, items 7 and 8): config fields are checked
//! where they are parsed and errors name the field; a `--set` of the wrong type names the
//! field and the expected type; an oversized batch or evaluation is refused with the memory
//! it would need before libtorch allocates anything.

mod common;

use common::{BASE, corpus, tiny_config};
use strata_core::{Gpt, ModelConfig};
use strata_tensor::Error;
use strata_train::{RunConfig, RunOptions, budget, train};
use tch::{Device, nn};

/// The error of parsing [`BASE`] with `overrides`, as text.
fn refusal(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match RunConfig::parse(text, "x.toml", "x", &overrides) {
        Ok(_) => panic!("{overrides:?} should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_out_of_range_number_is_refused_naming_its_field() {
    let cases = [
        // A negative ε divides by a negative denominator: AdamW trains uphill and exits 0.
        ("train.eps=-1e-3", "train.eps"),
        ("train.eps=0", "train.eps"),
        ("train.eps=nan", "train.eps"),
        ("train.eps=inf", "train.eps"),
        ("train.beta1=1.0", "train.beta1"),
        ("train.beta1=nan", "train.beta1"),
        ("train.beta2=-0.1", "train.beta2"),
        ("train.learning_rate=-1e-3", "train.learning_rate"),
        ("train.learning_rate=inf", "train.learning_rate"),
        ("train.min_lr=1.0", "train.min_lr"),
        ("train.min_lr=-1e-4", "train.min_lr"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.weight_decay=inf", "train.weight_decay"),
        ("train.grad_clip=-1", "train.grad_clip"),
        ("train.grad_clip=inf", "train.grad_clip"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=1099511627776", "train.batch_size"),
        ("train.max_iters=0", "train.max_iters"),
        ("train.max_iters=9223372036854775807", "train.batch_size"),
        ("train.eval_interval=0", "train.eval_interval"),
        ("train.eval_iters=0", "train.eval_iters"),
        ("train.log_interval=0", "train.log_interval"),
        ("train.checkpoint_interval=0", "train.checkpoint_interval"),
        ("train.threads=100000", "train.threads"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("data.val_fraction=1", "data.val_fraction"),
        ("data.val_fraction=nan", "data.val_fraction"),
        ("data.bpe_vocab_size=255", "data.bpe_vocab_size"),
        ("data.bpe_vocab_size=16777217", "data.bpe_vocab_size"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.dropout=nan", "model.dropout"),
        ("model.n_layer=0", "model.n_layer"),
        ("model.n_layer=65537", "model.n_layer"),
        ("model.n_head=0", "model.n_head"),
        ("model.d_model=0", "model.d_model"),
        ("model.d_model=33554432", "model.d_model"),
        ("model.vocab_size=16777217", "model.vocab_size"),
        ("model.block_size=0", "model.block_size"),
        ("model.block_size=16777217", "model.block_size"),
        ("model.head_dim=0", "model.head_dim"),
        ("model.mlp_hidden=0", "model.mlp_hidden"),
        ("model.mlp_ratio=0", "model.mlp_ratio"),
        ("model.mlp_ratio=1e300", "model.mlp_ratio"),
        ("model.mlp_ratio=nan", "model.mlp_ratio"),
        ("model.norm_eps=0", "model.norm_eps"),
        ("model.norm_eps=-1e-5", "model.norm_eps"),
        ("model.pattention_tau=inf", "model.pattention_tau"),
        ("model.dwa.dilation=0", "model.dwa.dilation"),
        ("model.dwa.period=0", "model.dwa.period"),
        ("model.lora.rank=0", "model.lora.rank"),
        ("model.lora.rank=1 model.lora.scale=inf", "model.lora.scale"),
        ("model.sharing.blocks=0", "model.sharing.blocks"),
        ("model.sharing.blocks=3", "model.sharing.blocks"),
    ];
    for (item, field) in cases {
        let items: Vec<&str> = item.split(' ').collect();
        let err = refusal(BASE, &items);
        assert!(
            err.starts_with("x.toml") && err.contains(&format!("field `{field}`")),
            "{item}: {err}"
        );
    }
    // Every case above is one change away from a config that parses.
    RunConfig::parse(BASE, "x.toml", "x", &[]).unwrap();
}

#[test]
fn growth_noise_must_be_finite_and_not_negative() {
    for noise in ["-0.5", "nan", "inf"] {
        let text = format!(
            "{BASE}[[growth]]\nstep = 5\nop = \"widen_mlp\"\nhidden = 64\nnoise = {noise}\n"
        );
        let err = refusal(&text, &[]);
        assert!(err.contains("field `growth[0].noise`"), "{noise}: {err}");
    }
}

#[test]
fn a_set_of_the_wrong_type_names_the_field_and_the_expected_type() {
    let cases = [
        ("train.eps=\"small\"", "train.eps", "f64"),
        ("model.n_layer=\"two\"", "model.n_layer", "usize"),
        ("model.dwa.dilation=1.5", "model.dwa.dilation", "usize"),
        ("train.seed=-1", "train.seed", "u64"),
        ("train.device=5", "train.device", "`cpu`, `cuda`, `auto`"),
        ("name=5", "name", "name=\"5\""),
        ("data.tokenizer=\"words\"", "data.tokenizer", "char"),
        ("model.precision=\"f8\"", "model.precision", "bf16"),
    ];
    for (item, field, expected) in cases {
        // A good override first, so the error must single out the bad one.
        let overrides = vec!["train.max_iters=7".to_owned(), item.to_owned()];
        let err = RunConfig::parse(BASE, "x.toml", "x", &overrides).unwrap_err();
        let Error::Override {
            file,
            items,
            message,
            quoted,
        } = &err
        else {
            panic!("{item}: {err:?}");
        };
        assert_eq!(
            (file.as_str(), items.as_str()),
            ("x.toml", item),
            "the bad override only"
        );
        let advice = format!("{message} {}", quoted.as_deref().unwrap_or(""));
        assert!(
            advice.contains(&format!("`{field}`")) && advice.contains(expected),
            "{item}: {advice}"
        );
    }
}

#[test]
fn the_block_size_error_names_the_config_field_and_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("short.txt");
    std::fs::write(&text, "abcdefghij".repeat(10)).unwrap();
    let mut config = tiny_config(&text, 2, false, 0.0);
    config.model.block_size = 32;
    let err = train(
        config,
        &RunOptions::new("tiny.toml", dir.path().join("run")),
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "model.block_size = 32",
        "val split has 10 tokens",
        "short.txt",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn an_oversized_batch_is_refused_with_the_memory_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&corpus(dir.path()), 2, false, 0.0);
    config.train.batch_size = 100_000_000;
    config.validate("tiny.toml").unwrap();
    let out = dir.path().join("run");
    let err = train(config, &RunOptions::new("tiny.toml", &out))
        .unwrap_err()
        .to_string();
    for needle in [
        "tiny.toml",
        "train.batch_size",
        "model.block_size",
        "needs at least",
        "TiB",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!out.exists(), "a refused run writes nothing");
}

/// Model configs of every kind, each built from [`BASE`]'s model with `extra` lines.
fn models() -> Vec<ModelConfig> {
    let base = "vocab_size = 50\nn_layer = 3\nn_head = 2\nd_model = 16\nblock_size = 8\n";
    [
        "",
        "bias = true\n",
        "tied_embeddings = false\n",
        "positions = \"rotary\"\nmlp = \"swiglu\"\nnorm = \"rmsnorm\"\n",
        "mlp = \"pattention\"\nmlp_hidden = 24\n",
        "[dwa]\ndilation = 2\nperiod = 1\n",
        "[sharing]\nblocks = 1\n",
        "[lora]\nrank = 2\n",
    ]
    .iter()
    .map(|extra| toml::from_str(&format!("{base}{extra}")).unwrap())
    .collect()
}

#[test]
fn the_parameter_estimate_is_exact_without_extras_and_never_above_the_model() {
    for (i, config) in models().iter().enumerate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let actual = Gpt::new(&vs.root(), config).unwrap().param_count().total as f64;
        let estimate = budget::parameter_count(config);
        assert!(estimate <= actual, "model {i}: {estimate} > {actual}");
        assert!(
            estimate >= 0.9 * actual,
            "model {i}: {estimate} vs {actual}"
        );
        if i == 0 || i == 2 || i == 3 || i == 6 {
            assert_eq!(estimate, actual, "model {i}");
        }
    }
}

#[test]
fn the_activation_estimate_counts_what_depth_methods_hold() {
    // 3 layers of width 16: hyper-connections with 4 streams hold 4·16 floats per token and
    // layer; attention residuals 7 values and their keys of 16; MUDD the outputs stacked at
    // each layer (2, 3, 4) and 4 ways, or its 4 stored outputs outside autograd.
    let base = "vocab_size = 50\nn_layer = 3\nn_head = 2\nd_model = 16\nblock_size = 8\n";
    let cases = [
        ("[depth.hyper]\nstreams = 4\n", 192.0, 64.0),
        ("[depth]\nattn_res = true\n", 224.0, 224.0),
        // Blocks of 2 layers: the embedding, one finished block and one short one.
        (
            "[depth]\nattn_res = true\nattn_res_block_layers = 2\n",
            96.0,
            96.0,
        ),
        ("[depth]\nmudd = true\n", 336.0, 64.0),
        ("[depth]\nvalue_residual = true\n", 0.0, 0.0),
    ];
    let plain: ModelConfig = toml::from_str(base).unwrap();
    for (extra, training, evaluating) in cases {
        let config: ModelConfig = toml::from_str(&format!("{base}{extra}")).unwrap();
        assert_eq!(
            budget::depth_floats_per_token(&config, true),
            training,
            "{extra}"
        );
        assert_eq!(
            budget::depth_floats_per_token(&config, false),
            evaluating,
            "{extra}"
        );
        // It enters the evaluation need: 4 bytes per float for each of 2 × 8 tokens.
        let more = budget::evaluation_need(&config, 2, 1).activations
            - budget::evaluation_need(&plain, 2, 1).activations;
        assert_eq!(more, 4.0 * 16.0 * evaluating, "{extra}");
    }
    assert_eq!(budget::depth_floats_per_token(&plain, true), 0.0);
}
