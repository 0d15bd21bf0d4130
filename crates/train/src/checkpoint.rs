//! Run checkpoints: model weights, optimizer moments and everything needed to continue.

use crate::checkpoint_io::{self, LoadedCheckpoint};
use crate::config::RunConfig;
use crate::run_folder;
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_core::{Gpt, ModelConfig};
use strata_tensor::{Error, Result};
use tch::{Device, Tensor, nn};

/// What a checkpoint records besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The run's configuration (model vocabulary resolved).
    pub config: RunConfig,
    /// The tokenizer, as [`Tokenizer::to_json`].
    pub tokenizer: String,
    /// [`Tokenizer::fingerprint`], to detect mismatches cheaply.
    pub tokenizer_fingerprint: String,
    /// Optimizer steps completed.
    pub step: u64,
    /// Random state: batches and dropout are drawn from generators seeded by
    /// (`seed`, step), so the seed and the step restore them exactly.
    pub seed: u64,
    /// Training tokens consumed so far (the data position).
    pub tokens_seen: u64,
    /// Best validation loss so far.
    pub best_val_loss: Option<f64>,
    /// Seconds of training before this checkpoint (summed across resumes).
    pub elapsed_s: f64,
    /// Growth events of the schedule applied so far (the model in `config` has them).
    #[serde(default)]
    pub growth_applied: usize,
    /// Training FLOPs spent so far.
    #[serde(default)]
    pub train_flops: f64,
}

/// Folder name of the checkpoint at `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// The folder of the checkpoint at `step` of the run in `run_dir`:
/// `<run_dir>/checkpoints/step-NNNNNN`.
pub fn checkpoint_dir(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(checkpoint_name(step))
}

/// Writes a checkpoint of the run in `run_dir` and points `LATEST` at it.
pub fn save(
    run_dir: &Path,
    vs: &nn::VarStore,
    optimizer: Vec<(String, Tensor)>,
    meta: &CheckpointMeta,
) -> Result<PathBuf> {
    let name = checkpoint_name(meta.step);
    let dir = checkpoint_dir(run_dir, meta.step);
    let mut model: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    model.sort_by(|a, b| a.0.cmp(&b.0));
    let meta_json = serde_json::to_value(meta).map_err(|e| Error::Invalid(e.to_string()))?;
    checkpoint_io::write_checkpoint(&dir, &model, &optimizer, &meta_json)?;
    checkpoint_io::update_latest(run_dir, &name)?;
    tracing::info!(checkpoint = %dir.display(), "saved checkpoint");
    Ok(dir)
}

/// A checkpoint folder, or the latest checkpoint of a run folder (the newest one that reads
/// back, with a warning, when the run folder lost its `LATEST`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("meta.json").exists() || !run_folder::is_run_folder(path) {
        return Ok(path.to_path_buf());
    }
    if let Some(latest) = checkpoint_io::latest_checkpoint(path)? {
        return Ok(latest);
    }
    if let Some(newest) = run_folder::newest_valid_checkpoint(path) {
        tracing::warn!(
            run = %path.display(),
            checkpoint = %newest.display(),
            "checkpoints/LATEST is missing; using the newest checkpoint that reads back"
        );
        return Ok(newest);
    }
    Err(Error::checkpoint(
        path,
        "run folder has no checkpoint yet (its run stopped before the first checkpoint)",
    ))
}

/// A loaded checkpoint with its metadata decoded.
pub struct Checkpoint {
    /// Tensors and raw metadata.
    pub loaded: LoadedCheckpoint,
    /// Decoded metadata.
    pub meta: CheckpointMeta,
    /// The tokenizer it was trained with.
    pub tokenizer: Tokenizer,
}

/// Reads and verifies a checkpoint (folder or run folder).
pub fn load(path: &Path) -> Result<Checkpoint> {
    let dir = resolve(path)?;
    let loaded = checkpoint_io::read_checkpoint(&dir)?;
    let meta: CheckpointMeta = serde_json::from_value(loaded.meta.clone()).map_err(|e| {
        Error::checkpoint(
            &dir,
            format!("meta.json does not describe a strata run: {e}"),
        )
    })?;
    let tokenizer = Tokenizer::from_json(&meta.tokenizer, &dir.join("meta.json"))?;
    if tokenizer.fingerprint() != meta.tokenizer_fingerprint {
        return Err(Error::checkpoint(
            &dir,
            "tokenizer does not match its recorded fingerprint",
        ));
    }
    check_meta(&meta, &tokenizer, &dir)?;
    Ok(Checkpoint {
        loaded,
        meta,
        tokenizer,
    })
}

/// Reads and verifies only the metadata of a checkpoint (folder or run folder): its step,
/// elapsed time and run config, without loading a tensor.
pub fn load_meta(path: &Path) -> Result<CheckpointMeta> {
    let dir = resolve(path)?;
    let meta: CheckpointMeta =
        serde_json::from_value(checkpoint_io::read_meta(&dir)?).map_err(|e| {
            Error::checkpoint(
                &dir,
                format!("meta.json does not describe a strata run: {e}"),
            )
        })?;
    meta.config
        .validate(&dir.join("meta.json").display().to_string())?;
    Ok(meta)
}

/// Refuses metadata whose run config is invalid or whose tokenizer has more tokens than the
/// model's vocabulary, before any model is built from it.
fn check_meta(meta: &CheckpointMeta, tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    let file = dir.join("meta.json").display().to_string();
    let model = &meta.config.model;
    meta.config.validate(&file)?;
    model.validate(&file)?;
    if tokenizer.vocab_size() > model.vocab_size {
        return Err(Error::config(
            file,
            "model.vocab_size",
            format!("at least the tokenizer's {} tokens", tokenizer.vocab_size()),
            model.vocab_size,
        ));
    }
    Ok(())
}

/// Copies checkpoint tensors into the same-named variables of `vs`; every variable must be
/// present with its shape, and no tensor may be left over.
pub fn restore_weights(
    vs: &nn::VarStore,
    tensors: &[(String, Tensor)],
    source: &Path,
) -> Result<()> {
    let mut vars = vs.variables();
    for (name, saved) in tensors {
        let Some(var) = vars.get_mut(name) else {
            return Err(Error::checkpoint(
                source,
                format!(
                    "tensor `{name}` has no place in this model (checkpoint from another architecture?)"
                ),
            ));
        };
        if var.size() != saved.size() {
            return Err(Error::checkpoint(
                source,
                format!(
                    "tensor `{name}` has shape {:?}, the model expects {:?}",
                    saved.size(),
                    var.size()
                ),
            ));
        }
        tch::no_grad(|| var.f_copy_(saved))?;
    }
    let names: std::collections::HashSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(missing) = vars.keys().find(|k| !names.contains(k.as_str())) {
        return Err(Error::checkpoint(
            source,
            format!("tensor `{missing}` is missing"),
        ));
    }
    Ok(())
}

/// Builds the checkpoint's model on `device` with its weights loaded.
pub fn load_model(ckpt: &Checkpoint, device: Device) -> Result<(nn::VarStore, Gpt)> {
    crate::budget::check_model(&ckpt.meta.config.model, device, &ckpt.loaded.path)?;
    let vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), &ckpt.meta.config.model)?;
    restore_weights(&vs, &ckpt.loaded.model, &ckpt.loaded.path)?;
    Ok((vs, model))
}

/// Fails when a checkpoint to be resumed was trained with another optimizer kind than
/// `config` asks for: its state belongs to that optimizer and cannot continue in another.
pub fn ensure_same_optimizer(
    ckpt: &Checkpoint,
    config: &RunConfig,
    config_file: &Path,
) -> Result<()> {
    let (saved, wanted) = (
        ckpt.meta.config.train.optimizer.kind,
        config.train.optimizer.kind,
    );
    if saved == wanted {
        return Ok(());
    }
    let name = |k: crate::optimizer::OptimizerKind| format!("{k:?}").to_lowercase();
    Err(Error::checkpoint(
        &ckpt.loaded.path,
        format!(
            "was trained with train.optimizer.kind = \"{}\", but {} asks for \"{}\": an \
             optimizer's state cannot continue in another kind; resume with \"{}\", or start a \
             new run from this checkpoint's weights",
            name(saved),
            config_file.display(),
            name(wanted),
            name(saved)
        ),
    ))
}

/// Fails when a checkpoint's model or tokenizer differs from the run that wants to resume it.
pub fn ensure_compatible(
    ckpt: &Checkpoint,
    model: &ModelConfig,
    config: &RunConfig,
    config_file: &Path,
) -> Result<()> {
    let path = &ckpt.loaded.path;
    if let Some(diff) = ckpt.meta.config.model.first_difference(model) {
        return Err(Error::checkpoint(
            path,
            format!(
                "was trained with another model config than {}: {diff}",
                config_file.display()
            ),
        ));
    }
    let saved = &ckpt.meta.config.data;
    if saved.tokenizer != config.data.tokenizer
        || (saved.tokenizer == crate::tokenizer::TokenizerKind::Bpe
            && saved.bpe_vocab_size != config.data.bpe_vocab_size)
    {
        return Err(Error::checkpoint(
            path,
            format!(
                "was trained with tokenizer {:?} (bpe_vocab_size {}), but {} asks for data.tokenizer = {:?} (bpe_vocab_size {})",
                saved.tokenizer,
                saved.bpe_vocab_size,
                config_file.display(),
                config.data.tokenizer,
                config.data.bpe_vocab_size
            ),
        ));
    }
    Ok(())
}
