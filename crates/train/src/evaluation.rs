//! Evaluation sets and readings: the run's fixed batches, a seed-independent slice of the
//! validation split with the standard error of its mean, and the loss on training tokens the
//! run has not trained on yet.
//!
//! With `train.eval_tokens` unset, validation uses `eval_iters` random batches drawn once from
//! the run's seed, as before. With it set, validation reads the first `eval_tokens` tokens of
//! the validation split (or all of it) as consecutive, non-overlapping windows of
//! `block_size` (each position is predicted from the window's tokens before it, as in
//! training), so every seed and every architecture with the same data and block size is
//! measured on identical tokens.

use crate::config::TrainConfig;
use crate::data::{TokenSplits, batch_offsets, fixed_batches};
use crate::parallel::DataParallel;
use crate::trainer::Batch;
use serde::{Deserialize, Serialize};
use strata_core::Gpt;
use strata_tensor::{Error, Result};
use tch::{Device, Kind, Reduction, Tensor};

/// How many validation tokens the fixed slice reads (`train.eval_tokens`): a count, or
/// `"all"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalTokens {
    /// The whole validation split.
    All,
    /// At most this many tokens from its start (rounded down to whole windows).
    Count(u64),
}

impl Serialize for EvalTokens {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EvalTokens::All => s.serialize_str("all"),
            EvalTokens::Count(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for EvalTokens {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        /// Accepts `"all"` or a positive integer.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EvalTokens;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"all\" or a positive number of tokens")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<Self::Value, E> {
                if n == 0 {
                    return Err(E::invalid_value(serde::de::Unexpected::Unsigned(0), &self));
                }
                Ok(EvalTokens::Count(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<Self::Value, E> {
                let n = u64::try_from(n)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))?;
                self.visit_u64(n)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                s: &str,
            ) -> std::result::Result<Self::Value, E> {
                if s == "all" {
                    Ok(EvalTokens::All)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(s), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What one evaluation batch yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// The batch's mean loss, as the model's `loss` computes it (a 0-d tensor).
    BatchMean,
    /// Every position's loss, `[rows, block]` in f64.
    Tokens,
}

/// The loss of `model` on one batch, without gradients, of the given kind.
pub fn batch_loss(model: &Gpt, x: &Tensor, y: &Tensor, kind: LossKind) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    match kind {
        LossKind::BatchMean => model.loss(x, y, false),
        LossKind::Tokens => {
            let logits = model.forward(x, false)?;
            let vocab = model.config().vocab_size as i64;
            let losses = logits.f_view([-1, vocab])?.f_cross_entropy_loss::<Tensor>(
                &y.f_reshape([-1])?,
                None,
                Reduction::None,
                -100,
                0.0,
            )?;
            Ok(losses.f_to_kind(Kind::Double)?.f_view_as(y)?)
        }
    }
}

/// A mean loss and its standard error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossEstimate {
    /// The mean.
    pub mean: f64,
    /// Standard error of the mean, `sd / sqrt(n)` with the sample standard deviation over the
    /// `n` units averaged, treating them as independent (`None` for a single unit).
    pub se: Option<f64>,
    /// The number of units averaged.
    pub units: usize,
}

impl LossEstimate {
    /// The mean of `values` (summed in order) and its standard error.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let se = (n >= 2).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64 / n as f64).sqrt()
        });
        Self { mean, se, units: n }
    }
}

/// The validation batches of a run and how their losses are read.
pub struct EvalSet {
    /// The batches, always the same.
    pub batches: Vec<Batch>,
    /// Per-batch means (random batches; the standard error is over batches) or per-position
    /// losses (the fixed slice; the standard error is over windows).
    pub kind: LossKind,
    /// Tokens predicted per evaluation.
    pub tokens: u64,
}

impl EvalSet {
    /// The estimate from the losses of [`EvalSet::batches`] (in order), of [`EvalSet::kind`].
    pub fn estimate(&self, losses: &[Tensor]) -> Result<LossEstimate> {
        let mut units = Vec::new();
        for loss in losses {
            match self.kind {
                LossKind::BatchMean => units.push(loss.f_double_value(&[])?),
                LossKind::Tokens => {
                    let rows = loss.f_mean_dim(1, false, Kind::Double)?;
                    units.extend(Vec::<f64>::try_from(&rows).map_err(Error::from)?);
                }
            }
        }
        Ok(LossEstimate::of(&units))
    }

    /// Evaluates `model` on the set in this thread.
    pub fn evaluate(&self, model: &Gpt) -> Result<LossEstimate> {
        let losses = self
            .batches
            .iter()
            .map(|(x, y)| batch_loss(model, x, y, self.kind))
            .collect::<Result<Vec<_>>>()?;
        self.estimate(&losses)
    }
}

/// Seed of a run's fixed evaluation batches, derived from `train.seed`.
fn eval_seed(t: &TrainConfig) -> u64 {
    t.seed ^ 0xE7A1
}

/// `eval_iters` batches of `tokens` drawn once from the run's seed (the default evaluation).
pub fn fixed_eval_batches(
    t: &TrainConfig,
    tokens: &Tensor,
    block_size: usize,
    device: Device,
) -> Result<Vec<Batch>> {
    fixed_batches(
        tokens,
        t.eval_iters,
        t.batch_size,
        block_size,
        eval_seed(t),
        device,
    )
}

/// The number of whole windows of `block_size` (plus one target token) `eval_tokens` asks
/// for in a split of `len` tokens: all that fit, or fewer.
fn window_count(eval_tokens: EvalTokens, len: usize, block_size: usize) -> usize {
    let fit = len.saturating_sub(1) / block_size.max(1);
    match eval_tokens {
        EvalTokens::All => fit,
        EvalTokens::Count(n) => {
            let wanted = (n / block_size.max(1) as u64) as usize;
            if wanted > fit {
                tracing::warn!(
                    eval_tokens = n,
                    available = fit * block_size,
                    "train.eval_tokens exceeds the split; evaluating all of it"
                );
            }
            wanted.min(fit)
        }
    }
}

/// Consecutive non-overlapping windows `0..windows` of `tokens` (window `i` predicts tokens
/// `i·block + 1 ..= i·block + block` from the ones before them), in batches of `batch_size`.
pub fn window_batches(
    tokens: &Tensor,
    windows: usize,
    block_size: usize,
    batch_size: usize,
    device: Device,
) -> Result<Vec<Batch>> {
    let t = block_size as i64;
    let mut batches = Vec::new();
    let mut first = 0;
    while first < windows {
        let rows = batch_size.max(1).min(windows - first) as i64;
        let start = first as i64 * t;
        let take = |shift: i64| -> Result<Tensor> {
            Ok(tokens
                .f_narrow(0, start + shift, rows * t)?
                .f_view([rows, t])?
                .f_to_device(device)?)
        };
        batches.push((take(0)?, take(1)?));
        first += rows as usize;
    }
    Ok(batches)
}

/// The run's validation set: the fixed slice when `train.eval_tokens` is set, otherwise
/// `eval_iters` random batches from the run's seed.
pub fn validation_set(
    t: &TrainConfig,
    splits: &TokenSplits,
    block_size: usize,
    device: Device,
) -> Result<EvalSet> {
    let Some(eval_tokens) = t.eval_tokens else {
        return Ok(EvalSet {
            batches: fixed_eval_batches(t, &splits.val, block_size, device)?,
            kind: LossKind::BatchMean,
            tokens: (t.eval_iters * t.batch_size * block_size) as u64,
        });
    };
    let len = splits.val.size1().map_err(Error::from)? as usize;
    let windows = window_count(eval_tokens, len, block_size);
    Ok(EvalSet {
        batches: window_batches(&splits.val, windows, block_size, t.batch_size, device)?,
        kind: LossKind::Tokens,
        tokens: (windows * block_size) as u64,
    })
}

/// The loss on training tokens no step has trained on yet, a held-out reading from the
/// training distribution.
///
/// It reads the first windows of the training split, as many as the validation slice reads
/// of the validation split, laid out as that slice is. A position is *seen* once a training
/// step's window (its `block_size + 1` tokens, inputs and targets) has covered it; the reading
/// is the mean loss over the positions of those windows not seen by any step before the
/// evaluation (each predicted from the window's tokens before it, seen or not). Batches depend
/// only on the seed and the step, so runs with the same seed, batch and block size measure the
/// same positions at the same step whatever their architecture or length. The set shrinks as
/// training covers the split (about `exp(-epochs)` of it remains).
pub struct UnseenTracker {
    windows: Vec<Batch>,
    /// Whether each position `0..=windows·block` has been inside a training window.
    seen: Vec<bool>,
    train_len: usize,
    block_size: usize,
    batch_size: usize,
    seed: u64,
}

/// The unseen-token reading: mean loss and the number of positions it averages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnseenLoss {
    /// Mean loss over the unseen positions.
    pub loss: f64,
    /// How many positions.
    pub tokens: u64,
}

impl UnseenTracker {
    /// A tracker over the first `windows` windows of the training split.
    pub fn new(
        t: &TrainConfig,
        train: &Tensor,
        windows: usize,
        block_size: usize,
        device: Device,
    ) -> Result<Self> {
        let train_len = train.size1().map_err(Error::from)? as usize;
        let windows = windows.min(train_len.saturating_sub(1) / block_size.max(1));
        Ok(Self {
            windows: window_batches(train, windows, block_size, t.batch_size, device)?,
            seen: vec![false; windows * block_size + 1],
            train_len,
            block_size,
            batch_size: t.batch_size,
            seed: t.seed,
        })
    }

    /// Marks the positions training step `step` covers.
    pub fn observe_step(&mut self, step: u64) {
        let offsets = batch_offsets(
            self.train_len,
            self.batch_size,
            self.block_size,
            self.seed,
            step,
        );
        let region = self.seen.len();
        for offset in offsets {
            let start = offset as usize;
            if start < region {
                let end = (start + self.block_size + 1).min(region);
                self.seen[start..end].fill(true);
            }
        }
    }

    /// The masks of not-yet-seen targets, one `[rows, block]` f64 tensor per window batch
    /// (`None` where a batch has none).
    fn masks(&self) -> Result<Vec<Option<Tensor>>> {
        let t = self.block_size;
        let mut first = 0;
        self.windows
            .iter()
            .map(|(x, _)| {
                let rows = x.size()[0] as usize;
                let mask: Vec<f64> = (first * t..(first + rows) * t)
                    .map(|i| f64::from(u8::from(!self.seen[i + 1])))
                    .collect();
                first += rows;
                mask.iter()
                    .any(|&m| m > 0.0)
                    .then(|| {
                        Tensor::f_from_slice(&mask)?
                            .f_view([rows as i64, t as i64])?
                            .f_to_device(x.device())
                    })
                    .transpose()
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(Error::from)
    }

    /// Evaluates the not-yet-seen positions; `None` when training has covered them all.
    pub fn reading(&self, parallel: &mut DataParallel, model: &Gpt) -> Result<Option<UnseenLoss>> {
        let masks = self.masks()?;
        let (batches, masks): (Vec<Batch>, Vec<Tensor>) = self
            .windows
            .iter()
            .zip(masks)
            .filter_map(|((x, y), m)| m.map(|m| ((x.shallow_clone(), y.shallow_clone()), m)))
            .unzip();
        if batches.is_empty() {
            return Ok(None);
        }
        let losses = parallel.losses(model, &batches, LossKind::Tokens)?;
        let (mut total, mut count) = (0.0, 0.0);
        for (loss, mask) in losses.iter().zip(&masks) {
            total += loss.f_mul(mask)?.f_sum(Kind::Double)?.f_double_value(&[])?;
            count += mask.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
        Ok(Some(UnseenLoss {
            loss: total / count,
            tokens: count as u64,
        }))
    }
}

/// One evaluation of a run.
#[derive(Clone, Copy, Debug)]
pub struct EvalReading {
    /// Mean loss on the fixed training-split batches.
    pub train_loss: f64,
    /// Validation loss with its standard error.
    pub val: LossEstimate,
    /// Loss on not-yet-seen training tokens (`train.eval_unseen`).
    pub unseen: Option<UnseenLoss>,
}

/// Everything a run evaluates on, built once.
pub struct Evaluator {
    train: Vec<Batch>,
    val: EvalSet,
    unseen: Option<UnseenTracker>,
}

impl Evaluator {
    /// The evaluation sets of a run with training config `t` over `splits`; a run resumed
    /// after `start` steps replays their coverage of the training split.
    pub fn new(
        t: &TrainConfig,
        splits: &TokenSplits,
        block_size: usize,
        start: u64,
        device: Device,
    ) -> Result<Self> {
        let val = validation_set(t, splits, block_size, device)?;
        let unseen = if t.eval_unseen {
            let windows = (val.tokens / block_size as u64) as usize;
            let mut tracker = UnseenTracker::new(t, &splits.train, windows, block_size, device)?;
            for step in 0..start {
                tracker.observe_step(step);
            }
            Some(tracker)
        } else {
            None
        };
        Ok(Self {
            train: fixed_eval_batches(t, &splits.train, block_size, device)?,
            val,
            unseen,
        })
    }

    /// Records that training step `step` ran.
    pub fn observe_step(&mut self, step: u64) {
        if let Some(tracker) = &mut self.unseen {
            tracker.observe_step(step);
        }
    }

    /// Tokens predicted per validation.
    pub fn val_tokens(&self) -> u64 {
        self.val.tokens
    }

    /// Evaluates `model` through `parallel`'s workers.
    pub fn evaluate(&self, parallel: &mut DataParallel, model: &Gpt) -> Result<EvalReading> {
        let train_loss = parallel.evaluate(model, &self.train)?;
        let val_losses = parallel.losses(model, &self.val.batches, self.val.kind)?;
        let val = self.val.estimate(&val_losses)?;
        let unseen = match &self.unseen {
            Some(tracker) => tracker.reading(parallel, model)?,
            None => None,
        };
        Ok(EvalReading {
            train_loss,
            val,
            unseen,
        })
    }
}
