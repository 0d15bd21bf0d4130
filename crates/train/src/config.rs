//! [`RunConfig`]: a whole training run (model, data, optimisation), read from TOML with
//! `key=value` overrides.

use crate::evaluation::EvalTokens;
use crate::growth_schedule::GrowthEvent;
use crate::optim::AdamWConfig;
use crate::optimizer::{OptimizerConfig, ParamGroup};
use crate::schedule::{
    CosineSchedule, DecayShape, Schedule, ScheduleKind, WsdSchedule, wsd_decay_start,
};
use crate::tokenizer::TokenizerKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_core::ModelConfig;
use strata_growth::GrowthOp;
use strata_tensor::{DeviceChoice, Error, Result};

/// Where the text comes from and how it becomes tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A text file or a folder of text files; absent means the embedded Tiny Shakespeare.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Tokenizer kind.
    #[serde(default)]
    pub tokenizer: TokenizerKind,
    /// Vocabulary size of a BPE tokenizer trained on the corpus.
    #[serde(default = "default_bpe_vocab")]
    pub bpe_vocab_size: usize,
    /// Fraction of tokens, taken from the end, held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: None,
            tokenizer: TokenizerKind::default(),
            bpe_vocab_size: default_bpe_vocab(),
            val_fraction: default_val_fraction(),
        }
    }
}

/// Default BPE vocabulary.
fn default_bpe_vocab() -> usize {
    512
}

/// Default validation fraction (nanoGPT's 10%).
fn default_val_fraction() -> f64 {
    0.1
}

/// Optimisation and bookkeeping of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per step.
    pub batch_size: usize,
    /// Optimizer steps.
    pub max_iters: u64,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Final learning rate of the cosine.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup_iters: u64,
    /// Step at which the cosine reaches `min_lr` (defaults to `max_iters`; cosine only).
    #[serde(default)]
    pub lr_decay_iters: Option<u64>,
    /// `"cosine"` (default) or `"wsd"` (warmup, constant `learning_rate`, then a decay to
    /// `min_lr` over the last `decay_fraction` of `max_iters`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub schedule: ScheduleKind,
    /// WSD: the fraction of `max_iters` spent decaying, in (0, 1]; the decay takes
    /// `max(1, round(decay_fraction · max_iters))` steps.
    #[serde(
        default = "default_decay_fraction",
        skip_serializing_if = "is_default_decay_fraction"
    )]
    pub decay_fraction: f64,
    /// WSD: `"linear"` (default) or `"1-sqrt"`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub decay_shape: DecayShape,
    /// WSD: budgets (in steps) that cooldown branches may be taken for later
    /// (`strata_train::branch::cooldown`): the run keeps a checkpoint at the decay start of a
    /// WSD run of each budget, which must lie in this run's stable phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branch_budgets: Vec<u64>,
    /// Validation on a fixed slice instead of `eval_iters` random batches: this many tokens
    /// (or `"all"`) from the start of the validation split, read as consecutive windows of
    /// `block_size`; the same tokens for every seed and architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_tokens: Option<EvalTokens>,
    /// With `eval_tokens`: also report the loss on training-split tokens no step has trained
    /// on yet (a second held-out reading; see `evaluation::UnseenTracker`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub eval_unseen: bool,
    /// AdamW β1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// AdamW β2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// AdamW ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay on matrices.
    #[serde(default)]
    pub weight_decay: f64,
    /// The optimizer of each parameter group and the groups' learning rates
    /// (`[train.optimizer]`; by default AdamW for everything at `learning_rate`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub optimizer: OptimizerConfig,
    /// Global gradient-norm clip; 0 disables.
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// Steps between evaluations.
    pub eval_interval: u64,
    /// Batches per evaluation (fixed for the whole run).
    pub eval_iters: usize,
    /// Steps between checkpoints (defaults to `eval_interval`).
    #[serde(default)]
    pub checkpoint_interval: Option<u64>,
    /// Checkpoints to keep: older ones are deleted after each save, but never the latest nor
    /// the one with the best validation loss (absent: keep all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Steps between logged training losses.
    #[serde(default = "default_log_interval")]
    pub log_interval: u64,
    /// Seed of initialisation, batches and dropout.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Device.
    #[serde(default)]
    pub device: DeviceChoice,
    /// CPU threads for libtorch; 0 keeps libtorch's choice.
    #[serde(default)]
    pub threads: usize,
    /// On CPU, split each batch across single-threaded workers, one per thread (faster for
    /// small models; equal to the plain step up to float summation order).
    #[serde(default = "default_true")]
    pub data_parallel: bool,
    /// In a multi-process run on CPU with one worker per rank, sum the gradients across the
    /// ranks while backward runs (c10d's Reducer) instead of after it; the same sums. Off by
    /// default: on one machine whose cores all compute it was slower (docs/distributed.md).
    #[serde(default)]
    pub overlap_grad_sync: bool,
}

/// Default WSD decay fraction.
fn default_decay_fraction() -> f64 {
    0.2
}
/// Serde: whether the decay fraction is the default (then it is not written).
fn is_default_decay_fraction(f: &f64) -> bool {
    *f == default_decay_fraction()
}
/// Serde: whether a value is its type's default (then it is not written, so the configs of
/// runs that do not use a field stay as they were).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
/// Default β1.
fn default_beta1() -> f64 {
    0.9
}
/// Default β2.
fn default_beta2() -> f64 {
    0.95
}
/// Serde default `true`.
fn default_true() -> bool {
    true
}
/// Default ε.
fn default_eps() -> f64 {
    1e-8
}
/// Default clip.
fn default_clip() -> f64 {
    1.0
}
/// Default logging interval.
fn default_log_interval() -> u64 {
    10
}
/// Default seed.
fn default_seed() -> u64 {
    1337
}

impl TrainConfig {
    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        match self.schedule {
            ScheduleKind::Cosine => Schedule::Cosine(CosineSchedule {
                lr: self.learning_rate,
                min_lr: self.min_lr,
                warmup_iters: self.warmup_iters,
                decay_iters: self.lr_decay_iters.unwrap_or(self.max_iters),
            }),
            ScheduleKind::Wsd => Schedule::Wsd(WsdSchedule {
                lr: self.learning_rate,
                min_lr: self.min_lr,
                warmup_iters: self.warmup_iters,
                decay_start: self.decay_start(self.max_iters),
                max_iters: self.max_iters,
                shape: self.decay_shape,
            }),
        }
    }

    /// The first decay step of a WSD run of `max_iters` steps with this config's
    /// `decay_fraction`.
    pub fn decay_start(&self, max_iters: u64) -> u64 {
        wsd_decay_start(max_iters, self.decay_fraction)
    }

    /// The steps at which a WSD run keeps a checkpoint for cooldown branches: the decay
    /// start of each of `branch_budgets`.
    pub fn branch_steps(&self) -> Vec<u64> {
        self.branch_budgets
            .iter()
            .map(|&budget| self.decay_start(budget))
            .collect()
    }

    /// The optimizer settings.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Steps between checkpoints.
    pub fn checkpoint_every(&self) -> u64 {
        self.checkpoint_interval.unwrap_or(self.eval_interval)
    }

    /// The peak learning rate of `group`: its own rate, else `learning_rate`.
    pub fn peak_lr(&self, group: ParamGroup) -> f64 {
        self.optimizer.group_lr(group).unwrap_or(self.learning_rate)
    }

    /// Multiplies every group's peak and final learning rate by `factor`, keeping the
    /// schedule's shape: `learning_rate`, `min_lr` and each group rate set in
    /// `[train.optimizer]` (Muon's included). What a one-dimensional learning-rate sweep
    /// varies.
    pub fn scale_learning_rates(&mut self, factor: f64) {
        self.learning_rate *= factor;
        self.min_lr *= factor;
        self.optimizer.scale_rates(factor);
    }
}

/// A complete run description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A name for tables and plots (defaults to the config file's stem).
    #[serde(default)]
    pub name: String,
    /// The architecture.
    pub model: ModelConfig,
    /// The corpus and tokenizer.
    #[serde(default)]
    pub data: DataConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Growth during training, in step order (`[[growth]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub growth: Vec<GrowthEvent>,
}

impl RunConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`, value in TOML syntax or a
    /// bare string); validates every field.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let file = path.display().to_string();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&text, &file, &stem, overrides)
    }

    /// Parses config text; `file` names it in errors and `default_name` fills `name`.
    pub fn parse(text: &str, file: &str, default_name: &str, overrides: &[String]) -> Result<Self> {
        let parse_err = |file: &str, e: &dyn std::fmt::Display| Error::Parse {
            file: file.to_owned(),
            message: e.to_string().trim().to_owned(),
        };
        // Parse the text as written first, so errors point at its lines.
        let mut config: RunConfig = toml::from_str(text).map_err(|e| parse_err(file, &e))?;
        if !overrides.is_empty() {
            let original: toml::Table = toml::from_str(text).map_err(|e| parse_err(file, &e))?;
            let mut table = original.clone();
            for item in overrides {
                apply_override(&mut table, item, file)?;
            }
            config = table
                .try_into()
                .map_err(|e| override_error(&original, overrides, file, &e))?;
        }
        if config.name.is_empty() {
            config.name = default_name.to_owned();
        }
        config.validate(file)?;
        Ok(config)
    }

    /// Checks every field: training, data, the model (its vocabulary again once the tokenizer
    /// sets it) and the growth noise; `file` names the config in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: &dyn ToString| {
            Err(Error::config(file, field, expected, found.to_string()))
        };
        // The model's own fields now (its vocabulary, when the tokenizer sets it, once known).
        let mut model = self.model.clone();
        if model.vocab_size == 0 {
            model.vocab_size = MAX_VOCAB;
        }
        model.validate(file)?;
        let t = &self.train;
        if t.batch_size == 0 {
            return err("train.batch_size", "at least 1", &0);
        }
        if t.eval_interval == 0 {
            return err("train.eval_interval", "at least 1 step", &0);
        }
        if t.eval_iters == 0 {
            return err("train.eval_iters", "at least 1 batch", &0);
        }
        if t.log_interval == 0 {
            return err("train.log_interval", "at least 1 step", &0);
        }
        if t.checkpoint_interval == Some(0) {
            return err("train.checkpoint_interval", "at least 1 step", &0);
        }
        if t.keep_last == Some(0) {
            return err(
                "train.keep_last",
                "at least 1 checkpoint (or leave it out to keep all)",
                &0,
            );
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return err("train.learning_rate", "a positive number", &t.learning_rate);
        }
        if !(t.min_lr >= 0.0 && t.min_lr <= t.learning_rate) {
            return err("train.min_lr", "a number in [0, learning_rate]", &t.min_lr);
        }
        for (field, beta) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return err(field, "a number in [0, 1)", &beta);
            }
        }
        if !(t.eps > 0.0 && t.eps.is_finite()) {
            return err("train.eps", "a positive finite number (AdamW's ε)", &t.eps);
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return err(
                "train.weight_decay",
                "a finite number >= 0",
                &t.weight_decay,
            );
        }
        t.optimizer.validate(file)?;
        if !(t.grad_clip >= 0.0 && t.grad_clip.is_finite()) {
            return err(
                "train.grad_clip",
                "a finite number >= 0 (0 disables clipping)",
                &t.grad_clip,
            );
        }
        self.validate_schedule(file)?;
        if let Some(EvalTokens::Count(n)) = t.eval_tokens
            && n < self.model.block_size as u64
        {
            return err(
                "train.eval_tokens",
                "\"all\" or at least model.block_size tokens (one window)",
                &n,
            );
        }
        if t.eval_unseen && t.eval_tokens.is_none() {
            return err(
                "train.eval_unseen",
                "false unless train.eval_tokens is set (it reads as many training tokens)",
                &true,
            );
        }
        if t.max_iters == 0 {
            return err("train.max_iters", "at least 1 step", &0);
        }
        if t.threads > MAX_THREADS {
            return err(
                "train.threads",
                &format!("0 (libtorch's choice) to {MAX_THREADS} threads"),
                &t.threads,
            );
        }
        let tokens_per_step = t.batch_size.checked_mul(self.model.block_size);
        let tokens_per_run = tokens_per_step.and_then(|n| (n as u64).checked_mul(t.max_iters));
        if tokens_per_step.is_none_or(|n| n > MAX_TOKENS_PER_STEP) || tokens_per_run.is_none() {
            return err(
                "train.batch_size",
                &format!(
                    "a batch whose batch_size × model.block_size ({}) stays at most \
                     {MAX_TOKENS_PER_STEP} tokens per step and whose tokens over \
                     train.max_iters = {} fit in 64 bits",
                    self.model.block_size, t.max_iters
                ),
                &t.batch_size,
            );
        }
        let f = self.data.val_fraction;
        if !(f > 0.0 && f < 1.0) {
            return err(
                "data.val_fraction",
                "a fraction strictly between 0 and 1",
                &f,
            );
        }
        let bpe_vocab = self.data.bpe_vocab_size;
        if !(MIN_BPE_VOCAB..=MAX_VOCAB).contains(&bpe_vocab) {
            return err(
                "data.bpe_vocab_size",
                &format!("{MIN_BPE_VOCAB} (the byte alphabet) to {MAX_VOCAB} tokens"),
                &bpe_vocab,
            );
        }
        for (i, event) in self.growth.iter().enumerate() {
            let noise = match event.op {
                GrowthOp::WidenMlp { noise, .. }
                | GrowthOp::AddHeads { noise, .. }
                | GrowthOp::WidenResidual { noise, .. } => noise,
                _ => continue,
            };
            if !(noise >= 0.0 && noise.is_finite()) {
                return err(
                    &format!("growth[{i}].noise"),
                    "a finite number >= 0 (relative noise; 0 for none)",
                    &noise,
                );
            }
        }
        // The schedule against the model is checked where the run starts
        // (`growth_schedule::validate`): a checkpoint records the grown model with it.
        Ok(())
    }

    /// Checks the WSD fields: `decay_fraction` in (0, 1], a decay that starts after the
    /// warmup, and branch budgets whose decay starts lie in the stable phase.
    fn validate_schedule(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: &dyn ToString| {
            Err(Error::config(file, field, expected, found.to_string()))
        };
        let t = &self.train;
        let f = t.decay_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return err("train.decay_fraction", "a fraction in (0, 1]", &f);
        }
        let wsd = t.schedule == ScheduleKind::Wsd;
        if !wsd && !t.branch_budgets.is_empty() {
            return err(
                "train.branch_budgets",
                "no budgets unless train.schedule = \"wsd\" (cooldown branches need a stable phase)",
                &format!("{:?}", t.branch_budgets),
            );
        }
        if !wsd {
            return Ok(());
        }
        if let Some(n) = t.lr_decay_iters
            && n != t.max_iters
        {
            return err(
                "train.lr_decay_iters",
                "no value, or train.max_iters, with train.schedule = \"wsd\" (the decay ends at \
                 max_iters and lasts train.decay_fraction · max_iters)",
                &n,
            );
        }
        let own_start = t.decay_start(t.max_iters);
        if t.warmup_iters > own_start {
            return err(
                "train.decay_fraction",
                &format!(
                    "a decay that starts after the warmup ({} steps); with max_iters {} it starts at step {own_start}",
                    t.warmup_iters, t.max_iters
                ),
                &f,
            );
        }
        for &budget in &t.branch_budgets {
            let start = t.decay_start(budget);
            if budget == 0 || start < t.warmup_iters || start > own_start {
                return err(
                    "train.branch_budgets",
                    &format!(
                        "budgets whose decay start lies in this run's stable phase, steps {} to {own_start} (budget {budget} decays from step {start})",
                        t.warmup_iters
                    ),
                    &budget,
                );
            }
        }
        Ok(())
    }

    /// The config as TOML text (as recorded next to results).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Most CPU threads `train.threads` may ask for (libtorch takes an `i32`, and more threads
/// than this only add scheduling overhead on any machine strata targets).
pub const MAX_THREADS: usize = 4096;

/// Most tokens one training step may hold (`batch_size × block_size`); a step of this size
/// needs terabytes already, so a larger one is a typo, refused before any arithmetic on it.
pub const MAX_TOKENS_PER_STEP: usize = 1 << 40;

/// Fewest tokens of a BPE vocabulary: the 256 byte-level symbols it starts from.
pub const MIN_BPE_VOCAB: usize = 256;

/// Most tokens of a BPE vocabulary (token ids are stored as `u32`; this keeps the embedding
/// of any vocabulary addressable).
pub const MAX_VOCAB: usize = strata_core::config::MAX_WIDTH;

/// The error of a config whose `key=value` overrides do not fit it: singles out the override at
/// fault (the file alone parsed), and when a bare value met a field that takes a name or a
/// string, says what the field accepts or how to quote it.
fn override_error(
    original: &toml::Table,
    overrides: &[String],
    file: &str,
    error: &toml::de::Error,
) -> Error {
    let converts = |items: &[String]| -> std::result::Result<(), String> {
        let mut table = original.clone();
        for item in items {
            apply_override(&mut table, item, file).map_err(|e| e.to_string())?;
        }
        table
            .try_into::<RunConfig>()
            .map(drop)
            .map_err(|e| e.to_string().trim().replace('\n', " "))
    };
    for item in overrides {
        let Err(message) = converts(std::slice::from_ref(item)) else {
            continue;
        };
        let (key, raw) = item.split_once('=').unwrap_or((item, ""));
        let quoted = format!(
            "{}={}",
            key.trim(),
            toml::Value::String(raw.trim().to_owned())
        );
        let (message, quoted) = match converts(std::slice::from_ref(&quoted)) {
            _ if raw.trim().starts_with(['"', '\'']) => (message, None),
            Ok(()) => (message, Some(quoted)),
            Err(as_string) if as_string.contains("expected one of") => (as_string, None),
            Err(_) => (message, None),
        };
        return Error::Override {
            file: file.to_owned(),
            items: item.clone(),
            message,
            quoted,
        };
    }
    Error::Override {
        file: file.to_owned(),
        items: overrides.join(" "),
        message: error.to_string().trim().to_owned(),
        quoted: None,
    }
}

/// Sets `section.key=value` inside `table`.
fn apply_override(table: &mut toml::Table, item: &str, file: &str) -> Result<()> {
    let Some((key, raw)) = item.split_once('=') else {
        return Err(Error::config(file, item, "an override key=value", item));
    };
    let key = key.trim();
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|s| !s.is_empty());
    let Some(last) = last else {
        return Err(Error::config(
            file,
            key,
            "a dotted key such as train.max_iters",
            item,
        ));
    };
    let mut node = table;
    for (depth, part) in parts.iter().enumerate() {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(Error::config(
                    file,
                    parts[..=depth].join("."),
                    "a section (table)",
                    "a plain value",
                ));
            }
        };
    }
    node.insert(last.to_owned(), value);
    Ok(())
}
