//! Models in and out of strata: [`export`] writes a checkpoint's model in the Hugging Face
//! GPT-2 layout (`transformers`' `GPT2LMHeadModel` loads it) or in strata's own portable
//! layout, and [`load_initial`] reads either back (or a strata checkpoint) as the start of a
//! run's initial weights.
//!
//! strata's portable layout is a folder of `config.json` (`{"format": "strata-model",
//! "version": 1, "model": <the [model] table as JSON>}`), `model.safetensors` (f32 tensors
//! named as the parameter schema names them, `h.3.attn.c_attn.weight` `[out, in]`, ...) and
//! `tokenizer.json` (a `tokenizers` file for BPE, strata's tokenizer document otherwise).

pub mod hf_gpt2;
pub mod hf_tokenizer;

use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::checkpoint_io::{self, LoadedCheckpoint};
use crate::config::RunConfig;
use crate::finite;
use crate::tokenizer::Tokenizer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use strata_core::ModelConfig;
use strata_tensor::{Error, Result};
use tch::{Kind, Tensor};

/// The model description of an exported folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of an exported folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// The tokenizer of an exported folder (the `tokenizers` crate's format for the HF layout).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// `transformers`' tokenizer settings (HF layout).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// strata's own tokenizer document next to the HF one, so that an import restores it exactly.
pub const STRATA_TOKENIZER_FILE: &str = "strata_tokenizer.json";
/// Every file an export writes: replacing an export touches a folder holding only these.
const EXPORT_FILES: [&str; 5] = [
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    STRATA_TOKENIZER_FILE,
];
/// The `format` of strata's portable layout's `config.json`.
const STRATA_FORMAT: &str = "strata-model";
/// Its version.
const STRATA_VERSION: u64 = 1;

/// The layout of an exported model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Hugging Face `transformers`' GPT-2 (`GPT2LMHeadModel`).
    HfGpt2,
    /// strata's portable layout (any strata model).
    Strata,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hf-gpt2" => Ok(Self::HfGpt2),
            "strata" => Ok(Self::Strata),
            other => Err(format!(
                "unknown format `{other}`; expected hf-gpt2 or strata"
            )),
        }
    }
}

/// Writes the model of `ckpt` (weights, architecture, tokenizer) to the folder `out` in
/// `format`, atomically; an existing `out` is replaced only with `overwrite` and only when it
/// holds nothing but files an export writes.
pub fn export(ckpt: &Checkpoint, format: ExportFormat, out: &Path, overwrite: bool) -> Result<()> {
    let source = &ckpt.loaded.path;
    finite::ensure_finite_weights(&ckpt.loaded.model, source)?;
    let model = &ckpt.meta.config.model;
    if format == ExportFormat::HfGpt2
        && let Some((field, needs)) = hf_gpt2::inexpressible(model)
    {
        return Err(Error::config(
            source.join("meta.json").display().to_string(),
            field,
            format!("{needs} for the hf-gpt2 format (export this model in the strata format)"),
            field_value(model, field),
        ));
    }
    check_out_folder(out, overwrite)?;
    let tokenizer = &ckpt.tokenizer;
    checkpoint_io::write_folder_atomically(out, |tmp| {
        let (config, tensors) = match format {
            ExportFormat::HfGpt2 => (
                hf_gpt2::config_json(model),
                hf_gpt2::export_tensors(model, &ckpt.loaded.model, source)?,
            ),
            ExportFormat::Strata => (
                json!({"format": STRATA_FORMAT, "version": STRATA_VERSION, "model": model}),
                ckpt.loaded
                    .model
                    .iter()
                    .map(|(n, t)| Ok((n.clone(), t.f_to_kind(Kind::Float)?)))
                    .collect::<Result<_>>()?,
            ),
        };
        checkpoint_io::write_tensors(out, &tmp.join(MODEL_FILE), &tensors)?;
        write_json(&tmp.join(CONFIG_FILE), &config)?;
        match format {
            ExportFormat::HfGpt2 => {
                let hf = hf_tokenizer::to_hf(tokenizer)?;
                let path = tmp.join(TOKENIZER_FILE);
                let text = hf.to_string(true).map_err(|e| {
                    Error::Invalid(format!(
                        "{}: cannot write the tokenizer: {e}",
                        path.display()
                    ))
                })?;
                std::fs::write(&path, text).map_err(Error::io(&path))?;
                let settings = json!({
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "model_max_length": model.block_size,
                    "clean_up_tokenization_spaces": false,
                });
                write_json(&tmp.join(TOKENIZER_CONFIG_FILE), &settings)?;
                let path = tmp.join(STRATA_TOKENIZER_FILE);
                std::fs::write(&path, tokenizer.to_json()).map_err(Error::io(&path))
            }
            ExportFormat::Strata => tokenizer.save(&tmp.join(TOKENIZER_FILE)),
        }
    })?;
    tracing::info!(out = %out.display(), format = ?format, "exported the model");
    Ok(())
}

/// The value of `model.<field>` in `model`, for an error message.
fn field_value(model: &ModelConfig, field: &str) -> String {
    let key = field.trim_start_matches("model.");
    serde_json::to_value(model)
        .ok()
        .and_then(|v| v.get(key).cloned())
        .map_or_else(|| "this model's setting".to_owned(), |v| v.to_string())
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("{}: cannot encode JSON: {e}", path.display())))?;
    std::fs::write(path, text).map_err(Error::io(path))
}

/// Refuses an `out` that exists, unless `overwrite` is set and it holds only export files.
fn check_out_folder(out: &Path, overwrite: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(Error::data(
            out,
            "exists and is not a folder; expected a folder to export into",
        ));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(out).map_err(Error::io(out))? {
        names.push(
            entry
                .map_err(Error::io(out))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let foreign = names
        .iter()
        .find(|n| !EXPORT_FILES.contains(&n.as_str()))
        .cloned();
    if overwrite && foreign.is_none() {
        return Ok(());
    }
    Err(Error::ExportFolderTaken {
        dir: out.to_path_buf(),
        foreign,
    })
}

/// True when `path` is an exported folder (HF GPT-2 or strata's portable layout) rather than
/// a strata checkpoint or run folder.
pub fn is_exported_folder(path: &Path) -> bool {
    path.join(CONFIG_FILE).is_file()
        && path.join(MODEL_FILE).is_file()
        && !path.join("meta.json").exists()
}

/// The checkpoint a run takes its initial weights from: a strata checkpoint or run folder, or an
/// exported folder (HF GPT-2 or strata's portable layout) read as a step-0 checkpoint of
/// `config` with the folder's model and tokenizer.
pub fn load_initial(path: &Path, config: &RunConfig) -> Result<Checkpoint> {
    if !is_exported_folder(path) {
        return checkpoint::load(path);
    }
    let config_path = path.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(Error::io(&config_path))?;
    let description: Value = serde_json::from_str(&text).map_err(|e| {
        Error::data(
            &config_path,
            format!("not valid JSON ({e}); expected a model description"),
        )
    })?;
    let model_path = path.join(MODEL_FILE);
    let tensors = Tensor::read_safetensors(&model_path)
        .map_err(|e| Error::checkpoint(&model_path, format!("cannot read safetensors: {e}")))?;
    let (model, tensors) = if description.get("format").is_some() {
        strata_layout(&description, tensors, &config_path)?
    } else {
        let model = hf_gpt2::model_from_config(&description, &config_path)?;
        hf_gpt2::import_tensors(&model, tensors, &model_path)?
    };
    let tokenizer = read_tokenizer(path)?;
    if tokenizer.vocab_size() > model.vocab_size {
        return Err(Error::config(
            config_path.display().to_string(),
            "vocab_size",
            format!("at least the tokenizer's {} tokens", tokenizer.vocab_size()),
            model.vocab_size,
        ));
    }
    finite::ensure_finite_weights(&tensors, &model_path)?;
    let mut run = config.clone();
    run.model = model;
    run.data.tokenizer = tokenizer.kind();
    let meta = CheckpointMeta {
        config: run,
        tokenizer: tokenizer.to_json(),
        tokenizer_fingerprint: tokenizer.fingerprint(),
        step: 0,
        seed: config.train.seed,
        tokens_seen: 0,
        best_val_loss: None,
        elapsed_s: 0.0,
        growth_applied: 0,
        train_flops: 0.0,
    };
    let meta_json = serde_json::to_value(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    tracing::info!(folder = %path.display(), model = %meta.config.model.variant_name(), "imported an exported model");
    Ok(Checkpoint {
        loaded: LoadedCheckpoint {
            model: tensors,
            optimizer: Vec::new(),
            meta: meta_json,
            path: PathBuf::from(path),
        },
        meta,
        tokenizer,
    })
}

/// The model and f32 tensors of strata's portable layout.
fn strata_layout(
    description: &Value,
    tensors: Vec<(String, Tensor)>,
    config_path: &Path,
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let file = config_path.display().to_string();
    let format = description
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = description
        .get("version")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    if format != STRATA_FORMAT || version != STRATA_VERSION {
        return Err(Error::config(
            file,
            "format",
            format!("\"{STRATA_FORMAT}\" version {STRATA_VERSION}, or a GPT-2 config.json"),
            format!("{format:?} version {version}"),
        ));
    }
    let model: ModelConfig =
        serde_json::from_value(description.get("model").cloned().unwrap_or_default())
            .map_err(|e| Error::config(file.clone(), "model", "a strata model description", e))?;
    model.validate(&file)?;
    let tensors = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.f_to_kind(Kind::Float)?)))
        .collect::<Result<_>>()?;
    Ok((model, tensors))
}

/// The tokenizer of an exported folder: strata's document when present, else `tokenizer.json`.
fn read_tokenizer(path: &Path) -> Result<Tokenizer> {
    let strata = path.join(STRATA_TOKENIZER_FILE);
    if strata.is_file() {
        return Tokenizer::load(&strata);
    }
    Tokenizer::load(&path.join(TOKENIZER_FILE))
}
