//! Using a finished checkpoint: evaluate it, sample from it, describe it.

use serde::Serialize;
use std::path::Path;
use strata_core::{Gpt, ParamCount, SampleOptions};
use strata_tensor::{DeviceChoice, Error, Result};
use strata_train::budget;
use strata_train::checkpoint::{self, Checkpoint};
use strata_train::config::RunConfig;
use strata_train::data::{Split, TokenSplits};
use strata_train::evaluation::{self, validation_set};
use strata_train::finite;
use strata_train::prepare::prepare_data;
use strata_train::trainer::{Batch, evaluate};
use tch::{Tensor, nn};

/// A checkpoint loaded onto a device, ready to use.
pub struct LoadedModel {
    /// The checkpoint (config, tokenizer, metadata).
    pub checkpoint: Checkpoint,
    /// Holds the weights.
    pub vs: nn::VarStore,
    /// The model.
    pub model: Gpt,
}

/// Loads the checkpoint at `path` (a checkpoint folder or a run folder) onto `device`.
pub fn load(path: &Path, device: DeviceChoice) -> Result<LoadedModel> {
    let checkpoint = checkpoint::load(path)?;
    let (vs, model) = checkpoint::load_model(&checkpoint, device.resolve()?)?;
    Ok(LoadedModel {
        checkpoint,
        vs,
        model,
    })
}

impl LoadedModel {
    /// Fails, naming the checkpoint and a tensor, when a weight is NaN or infinite: what
    /// evaluating or sampling such a model would print means nothing.
    pub fn ensure_finite(&self) -> Result<()> {
        let weights = finite::sorted_variables(&self.vs);
        finite::ensure_finite_weights(&weights, &self.checkpoint.loaded.path)
    }
}

/// Losses of a checkpoint on its run's fixed evaluation batches.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Steps the checkpoint was trained for.
    pub step: u64,
    /// Mean loss on the train split's evaluation batches.
    pub train_loss: f64,
    /// Mean loss on the validation split's evaluation batches (or its fixed slice, with
    /// `train.eval_tokens`), as the run measured it.
    pub val_loss: f64,
    /// Standard error of `val_loss` (over windows with `train.eval_tokens`, else batches).
    pub val_loss_se: Option<f64>,
    /// Batches per split.
    pub batches: usize,
}

/// Evaluates a loaded checkpoint on its own corpus, optionally with `batches` batches per
/// split (the `--batches` of `strata eval`: at least 1, and at most as many batches as the
/// smaller split has distinct windows to fill); a checkpoint with non-finite weights, or whose
/// losses are not finite, is an error. With `save`, also writes the train split's evaluation
/// batches there (a safetensors file of `x` and `y`, `[batches, batch_size, block_size]`
/// int64 token ids, `y` shifted by one): `train_loss` is the mean over these batches of each
/// batch's mean cross-entropy, so another implementation can recompute it.
pub fn evaluate_checkpoint(
    loaded: &LoadedModel,
    batches: Option<usize>,
    save: Option<&Path>,
) -> Result<EvalReport> {
    loaded.ensure_finite()?;
    let path = &loaded.checkpoint.loaded.path;
    let mut config = loaded.checkpoint.meta.config.clone();
    let data = prepare_data(&config, Some(loaded.checkpoint.tokenizer.clone()))?;
    if let Some(n) = batches {
        check_batch_count(n, &config, &data.splits)?;
        config.train.eval_iters = n;
    }
    let device = loaded.model.device();
    let train = fixed_eval_batches(loaded, &config, &data.splits.train)?;
    if let Some(file) = save {
        save_batches(&train, file)?;
    }
    let val = validation_set(&config.train, &data.splits, config.model.block_size, device)?
        .evaluate(&loaded.model)?;
    Ok(EvalReport {
        step: loaded.checkpoint.meta.step,
        train_loss: finite::ensure_finite_loss(
            evaluate(&loaded.model, &train)?,
            "train loss",
            path,
        )?,
        val_loss: finite::ensure_finite_loss(val.mean, "val loss", path)?,
        val_loss_se: val.se,
        batches: config.train.eval_iters,
    })
}

/// Writes evaluation batches as the safetensors tensors `x` and `y` (stacked, on the CPU).
fn save_batches(batches: &[Batch], file: &Path) -> Result<()> {
    let stack = |pick: fn(&Batch) -> &Tensor| -> Result<Tensor> {
        let parts: Vec<&Tensor> = batches.iter().map(pick).collect();
        Ok(Tensor::f_stack(&parts, 0)?.f_to_device(tch::Device::Cpu)?)
    };
    let tensors = [("x", stack(|b| &b.0)?), ("y", stack(|b| &b.1)?)];
    Tensor::write_safetensors(&tensors, file)
        .map_err(|e| Error::Invalid(format!("{}: cannot write the batches: {e}", file.display())))
}

/// Mean loss of a loaded checkpoint on `batches` fixed batches of the validation split (the
/// last `data.val_fraction`) of another corpus, read with the checkpoint's tokenizer.
pub fn evaluate_on_corpus(loaded: &LoadedModel, corpus: &Path, batches: usize) -> Result<f64> {
    loaded.ensure_finite()?;
    let mut config = loaded.checkpoint.meta.config.clone();
    config.data.path = Some(corpus.to_path_buf());
    let data = prepare_data(&config, Some(loaded.checkpoint.tokenizer.clone()))?;
    check_batch_count(batches, &config, &data.splits)?;
    config.train.eval_iters = batches;
    let val = fixed_eval_batches(loaded, &config, &data.splits.val)?;
    let loss = evaluate(&loaded.model, &val)?;
    let what = format!("val loss on {}", corpus.display());
    finite::ensure_finite_loss(loss, &what, &loaded.checkpoint.loaded.path)
}

/// Refuses a requested batch count (`--batches`) below 1, or above what the smaller split
/// can fill with distinct windows of `block_size + 1` tokens (more batches would only repeat
/// windows while holding memory for each).
fn check_batch_count(batches: usize, config: &RunConfig, splits: &TokenSplits) -> Result<()> {
    let (batch_size, block_size) = (config.train.batch_size, config.model.block_size);
    let (split, len) = [Split::Train, Split::Val]
        .into_iter()
        .map(|s| (s, splits.get(s).size1().unwrap_or(0).max(0) as usize))
        .min_by_key(|&(_, len)| len)
        .unwrap_or((Split::Val, 0));
    let windows = len.saturating_sub(block_size);
    let most = windows.div_ceil(batch_size.max(1)).max(1);
    if (1..=most).contains(&batches) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "--batches {batches}: expected 1 to {most} batches per split: the {split} split has \
         {windows} distinct windows of model.block_size + 1 = {} tokens, {batch_size} per batch \
         (train.batch_size)",
        block_size + 1
    )))
}

/// The fixed evaluation batches of `config` drawn from one split's `tokens`, on the model's
/// device; refused before anything is allocated when both splits' batches would not fit in
/// its memory.
fn fixed_eval_batches(
    loaded: &LoadedModel,
    config: &RunConfig,
    tokens: &Tensor,
) -> Result<Vec<Batch>> {
    let device = loaded.model.device();
    let t = &config.train;
    let need = budget::evaluation_need(&config.model, t.batch_size, t.eval_iters);
    if let Some(short) = budget::shortfall(&need, budget::available_bytes(device), device) {
        return Err(Error::Invalid(format!(
            "evaluating {} batches per split of train.batch_size = {} × model.block_size = {} \
             tokens {short}; ask for fewer with --batches",
            t.eval_iters, t.batch_size, config.model.block_size
        )));
    }
    evaluation::fixed_eval_batches(t, tokens, config.model.block_size, device)
}

/// A continuation: the prompt's token ids, all ids (prompt included) and their text.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// The prompt's token ids.
    pub prompt_ids: Vec<u32>,
    /// The prompt's ids followed by the generated ones.
    pub ids: Vec<u32>,
    /// `ids` decoded.
    pub text: String,
}

/// Continues `prompt` by `tokens` tokens (prompt included in the result); a checkpoint with
/// non-finite weights is an error.
pub fn sample(
    loaded: &LoadedModel,
    prompt: &str,
    tokens: usize,
    options: &SampleOptions,
) -> Result<Sample> {
    loaded.ensure_finite()?;
    let tokenizer = &loaded.checkpoint.tokenizer;
    let prompt_ids = tokenizer.encode(prompt)?;
    let context: Vec<i64> = prompt_ids.iter().map(|&i| i64::from(i)).collect();
    let out = loaded.model.generate(&context, tokens, options)?;
    let ids: Vec<u32> = out.into_iter().map(|i| i as u32).collect();
    Ok(Sample {
        text: tokenizer.decode(&ids),
        prompt_ids,
        ids,
    })
}

/// A description of a checkpoint for `strata info`.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    /// Checkpoint folder.
    pub path: String,
    /// Run name.
    pub name: String,
    /// Architecture label.
    pub variant: String,
    /// Steps trained.
    pub step: u64,
    /// Training tokens seen.
    pub tokens_seen: u64,
    /// Parameter counts.
    pub params: ParamCount,
    /// Best validation loss recorded.
    pub best_val_loss: Option<f64>,
    /// Tokenizer kind and vocabulary.
    pub tokenizer: String,
    /// The run config as TOML.
    pub config: String,
}

/// Describes a loaded checkpoint.
pub fn info(loaded: &LoadedModel) -> Info {
    let meta = &loaded.checkpoint.meta;
    let tok = &loaded.checkpoint.tokenizer;
    Info {
        path: loaded.checkpoint.loaded.path.display().to_string(),
        name: meta.config.name.clone(),
        variant: meta.config.model.variant_name(),
        step: meta.step,
        tokens_seen: meta.tokens_seen,
        params: loaded.model.param_count(),
        best_val_loss: meta.best_val_loss,
        tokenizer: format!(
            "{:?}, {} tokens, fingerprint {}",
            tok.kind(),
            tok.vocab_size(),
            tok.fingerprint()
        ),
        config: meta.config.to_toml(),
    }
}
