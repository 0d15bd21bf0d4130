//! Export and import: a model written in the Hugging Face GPT-2 layout (or strata's portable
//! layout) and read back by `--init-from` computes exactly what it computed before, with the
//! same config and tokenizer; the GPT-2 layout stores transposed `Conv1D` weights and zero
//! biases for a bias-free model; architectures GPT-2 cannot express, foreign folders and
//! broken imports are refused naming the field, file or tensor. (The parity of these exports
//! with `transformers`' own GPT-2 is checked by xtask/parity/parity.py.)

mod common;

use common::{corpus, tiny_config};
use std::path::Path;
use strata_core::{MlpKind, PositionKind};
use strata_tensor::Error;
use strata_train::interop::{self, ExportFormat, hf_tokenizer};
use strata_train::tokenizer::{Tokenizer, TokenizerKind};
use strata_train::{RunConfig, RunOptions, Trainer, checkpoint, train};
use tch::Tensor;

/// Token ids to run the models on.
fn idx() -> Tensor {
    Tensor::from_slice(&[1i64, 5, 7, 2, 9, 3, 3, 0, 4, 4, 8, 1]).view([2, 6])
}

/// Trains `config` for its steps into `dir` and returns the run folder.
fn trained(config: RunConfig, dir: &Path) -> std::path::PathBuf {
    train(config, &RunOptions::new("t.toml", dir)).unwrap();
    dir.to_path_buf()
}

/// The logits of the run (or checkpoint) at `path`.
fn logits_of(path: &Path) -> Tensor {
    let ckpt = checkpoint::load(path).unwrap();
    let (_vs, model) = checkpoint::load_model(&ckpt, tch::Device::Cpu).unwrap();
    tch::no_grad(|| model.forward(&idx(), false).unwrap())
}

/// The model a run of `config` would start from `init_from`, and its logits.
fn imported(config: RunConfig, init_from: &Path, out: &Path) -> (strata_core::ModelConfig, Tensor) {
    let mut options = RunOptions::new("i.toml", out);
    options.init_from = Some(init_from.to_path_buf());
    let trainer = Trainer::new(config, &options).unwrap();
    let logits = tch::no_grad(|| trainer.model().forward(&idx(), false).unwrap());
    (trainer.model().config().clone(), logits)
}

/// Checks that a run of `config` started from the export `out` of `run` has `run`'s model
/// config and computes `run`'s logits bit for bit; returns that model config.
fn assert_round_trip(
    label: &str,
    config: &RunConfig,
    run: &Path,
    out: &Path,
    dir: &Path,
) -> strata_core::ModelConfig {
    let (model, got) = imported(config.clone(), out, &dir.join(format!("{label}-import")));
    let saved = checkpoint::load(run).unwrap().meta.config.model;
    assert_eq!(model, saved, "{label}: the config came back");
    assert!(
        got.equal(&logits_of(run)),
        "{label}: the import changed the function"
    );
    model
}

/// The run configs exported to GPT-2: nanoGPT's recipe shape, and GPT-2's own (biases, tanh
/// GELU, an untied head).
fn gpt2_shapes(data: &Path) -> Vec<(&'static str, RunConfig)> {
    let recipe = tiny_config(data, 3, false, 0.0);
    let mut gpt2 = tiny_config(data, 3, false, 0.0);
    gpt2.model.bias = true;
    gpt2.model.mlp = MlpKind::GeluTanh;
    gpt2.model.tied_embeddings = false;
    vec![("recipe", recipe), ("gpt2", gpt2)]
}

#[test]
fn a_gpt2_export_reads_back_as_the_same_model_and_function() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    for (label, config) in gpt2_shapes(&data) {
        let run = trained(config.clone(), &dir.path().join(label));
        let out = dir.path().join(format!("{label}-hf"));
        let ckpt = checkpoint::load(&run).unwrap();
        interop::export(&ckpt, ExportFormat::HfGpt2, &out, false).unwrap();
        for file in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            assert!(out.join(file).is_file(), "{label}: {file} missing");
        }
        let tensors: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(out.join("model.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        let qkv = &tensors["transformer.h.0.attn.c_attn.weight"];
        assert_eq!(
            qkv.size(),
            [32, 96],
            "{label}: Conv1D weights are [in, out]"
        );
        let ours = ckpt
            .loaded
            .model
            .iter()
            .find(|(n, _)| n == "h.0.attn.c_attn.weight")
            .unwrap();
        assert!(
            qkv.equal(&ours.1.tr()),
            "{label}: the weight is the transpose of strata's"
        );
        let bias = &tensors["transformer.h.1.mlp.c_fc.bias"];
        assert_eq!(bias.size(), [128]);
        if !config.model.bias {
            assert_eq!(
                bias.abs().sum(tch::Kind::Float).double_value(&[]),
                0.0,
                "{label}"
            );
        }
        assert_eq!(
            tensors.contains_key("lm_head.weight"),
            !config.model.tied_embeddings,
            "{label}"
        );

        let model = assert_round_trip(label, &config, &run, &out, dir.path());
        assert_eq!(
            model.bias, config.model.bias,
            "{label}: zero biases read back as bias-free"
        );
    }
}

#[test]
fn strata_layout_carries_any_model_and_gpt2_refuses_what_it_cannot_express() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let dwa = tiny_config(&data, 3, true, 0.0);
    let mut rotary = tiny_config(&data, 3, false, 0.0);
    rotary.model.positions = PositionKind::Rotary;
    for (label, config, field) in [
        ("dwa", dwa, "model.dwa"),
        ("rotary", rotary, "model.positions"),
    ] {
        let run = trained(config.clone(), &dir.path().join(label));
        let ckpt = checkpoint::load(&run).unwrap();
        let hf = dir.path().join(format!("{label}-hf"));
        let err = interop::export(&ckpt, ExportFormat::HfGpt2, &hf, false).unwrap_err();
        match &err {
            Error::Config {
                field: f, expected, ..
            } => {
                assert_eq!(f, field, "{label}");
                assert!(expected.contains("the strata format"), "{err}");
            }
            other => panic!("{label}: expected a config error, got {other}"),
        }
        assert!(!hf.exists(), "{label}: a refused export wrote nothing");
        let out = dir.path().join(format!("{label}-strata"));
        interop::export(&ckpt, ExportFormat::Strata, &out, false).unwrap();
        assert_round_trip(label, &config, &run, &out, dir.path());
    }
}

#[test]
fn an_export_replaces_only_an_earlier_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = trained(tiny_config(&data, 2, false, 0.0), &dir.path().join("run"));
    let ckpt = checkpoint::load(&run).unwrap();
    let out = dir.path().join("out");
    interop::export(&ckpt, ExportFormat::HfGpt2, &out, false).unwrap();
    let again = interop::export(&ckpt, ExportFormat::HfGpt2, &out, false).unwrap_err();
    assert!(
        matches!(&again, Error::ExportFolderTaken { dir, foreign: None } if *dir == out),
        "{again}"
    );
    interop::export(&ckpt, ExportFormat::HfGpt2, &out, true).unwrap();

    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let err = interop::export(&ckpt, ExportFormat::HfGpt2, &mine, true).unwrap_err();
    assert!(
        matches!(&err, Error::ExportFolderTaken { foreign: Some(name), .. } if name == "notes.txt"),
        "{err}"
    );
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn broken_gpt2_folders_are_refused_naming_the_field_or_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let config = tiny_config(&data, 2, false, 0.0);
    let run = trained(config.clone(), &dir.path().join("run"));
    let ckpt = checkpoint::load(&run).unwrap();
    let out = dir.path().join("hf");
    interop::export(&ckpt, ExportFormat::HfGpt2, &out, false).unwrap();
    let description: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let edited = |key: &str, value: serde_json::Value| {
        let mut d = description.clone();
        d[key] = value;
        std::fs::write(out.join("config.json"), d.to_string()).unwrap();
    };
    for (key, value, needle) in [
        (
            "activation_function",
            serde_json::json!("relu"),
            "activation_function",
        ),
        ("model_type", serde_json::json!("llama"), "model_type"),
        ("n_embd", serde_json::json!(0), "n_embd"),
        ("n_layer", serde_json::json!(3), "h.2.ln_1.weight"),
        ("n_inner", serde_json::json!(64), "h.0.mlp.c_fc.weight"),
    ] {
        edited(key, value);
        let err = interop::load_initial(&out, &config).err().unwrap();
        assert!(err.to_string().contains(needle), "{key}: {err}");
    }
}

#[test]
fn every_tokenizer_exports_to_a_hugging_face_tokenizer_with_the_same_ids() {
    let text = &strata_train::prepare::TINY_SHAKESPEARE[..5_000];
    let probe = "ROMEO:\nWhat, art thou here?  'Tis so.\n";
    for kind in [TokenizerKind::Char, TokenizerKind::Byte, TokenizerKind::Bpe] {
        let ours = Tokenizer::train(kind, text, 300).unwrap();
        let hf = hf_tokenizer::to_hf(&ours).unwrap();
        let json = hf.to_string(false).unwrap();
        let hf: tokenizers::Tokenizer = json.parse().unwrap();
        let ids = hf.encode(probe, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, ours.encode(probe).unwrap(), "{kind:?}");
        assert_eq!(hf.decode(&ids, false).unwrap(), probe, "{kind:?}");
    }
}
