//! The runs of a sweep: one per variant, size and token budget, each a run config.

use crate::config::{Size, SweepConfig, Variant};
use strata_tensor::Result;
use strata_train::RunConfig;

/// One planned run.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Folder name, e.g. `baseline-L2-d64-D250000`.
    pub id: String,
    /// The variant.
    pub variant: Variant,
    /// The size.
    pub size: Size,
    /// The token budget.
    pub tokens: u64,
    /// The complete run config.
    pub config: RunConfig,
}

/// Every run of `sweep`, variants outermost, then sizes, then budgets.
pub fn plan(sweep: &SweepConfig) -> Result<Vec<PlannedRun>> {
    let base = RunConfig::load(&sweep.base, &sweep.set)?;
    let mut runs = Vec::new();
    for variant in &sweep.variants {
        for &size in &sweep.sizes {
            for &tokens in &sweep.tokens {
                let id = format!(
                    "{}-L{}-d{}-D{tokens}",
                    variant.name, size.n_layer, size.d_model
                );
                let per_step = (base.train.batch_size * base.model.block_size) as u64;
                let steps = tokens.div_ceil(per_step).max(2);
                let mut overrides = sweep.set.clone();
                overrides.extend(variant.set.iter().cloned());
                overrides.extend([
                    format!("name=\"{id}\""),
                    format!("model.n_layer={}", size.n_layer),
                    format!("model.d_model={}", size.d_model),
                    format!("model.n_head={}", size.n_head),
                ]);
                overrides.extend(budget_overrides(&base, steps, sweep.evals_per_run));
                let config = RunConfig::load(&sweep.base, &overrides)?;
                runs.push(PlannedRun {
                    id,
                    variant: variant.clone(),
                    size,
                    tokens,
                    config,
                });
            }
        }
    }
    Ok(runs)
}

/// The overrides that make a run of `base` train for `steps` steps: the schedule's decay
/// ends there, warmup is at most a tenth of it, and it evaluates and saves a checkpoint
/// `evals` times.
pub fn budget_overrides(base: &RunConfig, steps: u64, evals: u64) -> Vec<String> {
    let interval = (steps / evals.max(1)).max(1);
    vec![
        format!("train.max_iters={steps}"),
        format!("train.lr_decay_iters={steps}"),
        format!(
            "train.warmup_iters={}",
            base.train.warmup_iters.min(steps / 10)
        ),
        format!("train.eval_interval={interval}"),
        format!("train.checkpoint_interval={interval}"),
    ]
}
