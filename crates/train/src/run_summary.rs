//! [`RunSummary`]: what a finished or interrupted run reports, also written to
//! `summary.json` in its run folder.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_core::ParamCount;

/// What a finished (or interrupted) run reports, also written to `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run name.
    pub name: String,
    /// Architecture label (`baseline`, `denseformer-4x5`, ...).
    pub variant: String,
    /// Parameter counts.
    pub params: ParamCount,
    /// Optimizer steps completed.
    pub steps: u64,
    /// Training tokens consumed.
    pub tokens: u64,
    /// Training FLOPs spent, counted step by step with the model of each step (so growth
    /// stages are counted at their own size; see `strata_core::flops`).
    #[serde(default)]
    pub train_flops: f64,
    /// Last evaluated training loss.
    pub final_train_loss: Option<f64>,
    /// Last evaluated validation loss.
    pub final_val_loss: Option<f64>,
    /// Best validation loss.
    pub best_val_loss: Option<f64>,
    /// Standard error of `final_val_loss`: over windows with `train.eval_tokens`, over
    /// batches otherwise (see `evaluation::LossEstimate`).
    #[serde(default)]
    pub final_val_loss_se: Option<f64>,
    /// Tokens each validation reads (`eval_tokens` rounded down to whole windows, or
    /// `eval_iters · batch_size · block_size`).
    #[serde(default)]
    pub val_tokens: u64,
    /// Last loss on not-yet-seen training tokens (`train.eval_unseen`; see
    /// `evaluation::UnseenTracker`), `None` when off or when none were left.
    #[serde(default)]
    pub final_unseen_loss: Option<f64>,
    /// Passes over the training split: tokens trained on / tokens in the training split.
    #[serde(default)]
    pub epochs: f64,
    /// Wall-clock seconds of the whole run, evaluations included (summed across resumes).
    pub wall_s: f64,
    /// Training tokens per second of this process's training steps.
    pub tokens_per_sec: f64,
    /// Milliseconds per optimizer step in this process.
    pub ms_per_iter: f64,
    /// Peak resident memory of this process in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Peak GPU memory libtorch's allocator handed out in this process, in MiB (CUDA runs).
    #[serde(default)]
    pub peak_device_mib: Option<f64>,
    /// Device used.
    pub device: String,
    /// libtorch intra-op threads per worker.
    pub threads: i32,
    /// Data-parallel worker threads (1 on CUDA or when `train.data_parallel` is off).
    #[serde(default = "one")]
    pub workers: usize,
    /// True when the run stopped early (a stop signal or `stop_after`).
    pub interrupted: bool,
    /// The run folder.
    pub out_dir: PathBuf,
}

impl RunSummary {
    /// The summary of a finished (not interrupted, finally evaluated) run in the run folder
    /// `dir`, if there is one.
    pub fn finished(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
        let summary: Self = serde_json::from_str(&text).ok()?;
        (!summary.interrupted && summary.final_val_loss.is_some()).then_some(summary)
    }
}

/// Serde default of [`RunSummary::workers`] for summaries written before it existed.
fn one() -> usize {
    1
}
