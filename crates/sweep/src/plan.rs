//! The runs of a sweep: one per variant, size, seed and token budget, each a run config.
//!
//! The budgets of one (variant, size, seed) form a row that shares everything but its
//! length ([`budget_row`], also the plan of a comparison's arm and seed). With a
//! warmup-stable-decay base (`train.schedule = "wsd"`) the row's longest run is the source:
//! it keeps a checkpoint where each shorter budget's decay starts (`train.branch_budgets`),
//! and every shorter budget is a cooldown branch of it ([`strata_train::branch::cooldown`]),
//! bit for bit what a dedicated run of that length computes, for a fraction of its cost.
//! With a cosine base every budget is a run of its own length.

use crate::config::{Size, SweepConfig, Variant};
use std::path::Path;
use strata_tensor::Result;
use strata_train::RunConfig;
use strata_train::branch::branch_config;
use strata_train::schedule::ScheduleKind;

/// One planned run.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Folder name, e.g. `baseline-L2-d64-D250000` (`-s<seed>` before `-D` when the sweep
    /// lists seeds).
    pub id: String,
    /// The variant.
    pub variant: Variant,
    /// The size.
    pub size: Size,
    /// The seed.
    pub seed: u64,
    /// The token budget.
    pub tokens: u64,
    /// The id of the run this one is a cooldown branch of (WSD bases only).
    pub branch_of: Option<String>,
    /// The complete run config.
    pub config: RunConfig,
}

/// One budget of a row ([`budget_row`]).
#[derive(Clone, Debug)]
pub struct BudgetRun {
    /// Optimizer steps.
    pub iters: u64,
    /// Folder name.
    pub id: String,
    /// The id of the row's source this run is a cooldown branch of (WSD bases only).
    pub branch_of: Option<String>,
    /// The complete run config.
    pub config: RunConfig,
}

/// The runs of one row: `base` (read from `base_file`, with the row's own settings) at each
/// of `iters` (steps, any order), longest first, evaluating `evals` times each; `id` names a
/// budget's run folder and `shortest` is the shortest budget of the whole study, whose tenth
/// caps a WSD base's warmup so that every row shares its schedule up to each branch point.
pub fn budget_row(
    base: &RunConfig,
    base_file: &Path,
    iters: &[u64],
    evals: u64,
    shortest: u64,
    id: impl Fn(u64) -> String,
) -> Result<Vec<BudgetRun>> {
    let wsd = base.train.schedule == ScheduleKind::Wsd;
    let mut budgets = iters.to_vec();
    budgets.sort_unstable_by(|a, b| b.cmp(a));
    budgets.dedup();
    let mut row: Vec<BudgetRun> = Vec::new();
    for &steps in &budgets {
        let run_id = id(steps);
        let (config, branch_of) = match row.first() {
            Some(source) if wsd => (
                branch_config(&source.config, steps, base_file)?,
                Some(source.id.clone()),
            ),
            _ => {
                let mut config = base.clone();
                config.name = run_id.clone();
                set_budget(&mut config, steps, evals);
                if wsd {
                    config.train.warmup_iters = base.train.warmup_iters.min(shortest / 10);
                    config.train.branch_budgets =
                        budgets.iter().copied().filter(|&b| b < steps).collect();
                }
                config.validate(&base_file.display().to_string())?;
                (config, None)
            }
        };
        row.push(BudgetRun {
            iters: steps,
            id: run_id,
            branch_of,
            config,
        });
    }
    Ok(row)
}

/// Steps of a token budget: `tokens` over the tokens of one step, at least 2.
pub fn steps_for(base: &RunConfig, tokens: u64) -> u64 {
    let per_step = (base.train.batch_size * base.model.block_size) as u64;
    tokens.div_ceil(per_step).max(2)
}

/// Every run of `sweep`, variants outermost, then sizes, then seeds, then budgets
/// (ascending).
pub fn plan(sweep: &SweepConfig) -> Result<Vec<PlannedRun>> {
    let base = RunConfig::load(&sweep.base, &sweep.set)?;
    let seeds: Vec<Option<u64>> = if sweep.seeds.is_empty() {
        vec![None]
    } else {
        sweep.seeds.iter().copied().map(Some).collect()
    };
    let shortest = sweep
        .tokens
        .iter()
        .map(|&t| steps_for(&base, t))
        .min()
        .unwrap_or(2);
    let mut runs = Vec::new();
    for variant in &sweep.variants {
        let overrides: Vec<String> = sweep.set.iter().chain(&variant.set).cloned().collect();
        let variant_base = RunConfig::load(&sweep.base, &overrides)?;
        for &size in &sweep.sizes {
            for &seed in &seeds {
                let mut row_base = variant_base.clone();
                row_base.model.n_layer = size.n_layer;
                row_base.model.d_model = size.d_model;
                row_base.model.n_head = size.n_head;
                if let Some(seed) = seed {
                    row_base.train.seed = seed;
                }
                let tokens_of = |steps: u64| {
                    sweep
                        .tokens
                        .iter()
                        .copied()
                        .find(|&t| steps_for(&base, t) == steps)
                        .unwrap_or(steps)
                };
                let iters: Vec<u64> = sweep.tokens.iter().map(|&t| steps_for(&base, t)).collect();
                let row = budget_row(
                    &row_base,
                    &sweep.base,
                    &iters,
                    sweep.evals_per_run,
                    shortest,
                    |steps| {
                        let seed = seed.map_or_else(String::new, |s| format!("-s{s}"));
                        format!(
                            "{}-L{}-d{}{seed}-D{}",
                            variant.name,
                            size.n_layer,
                            size.d_model,
                            tokens_of(steps)
                        )
                    },
                )?;
                // Budgets ascending in the plan and its tables; the runner trains a row's
                // source before its branches whatever the order.
                for run in row.into_iter().rev() {
                    runs.push(PlannedRun {
                        id: run.id,
                        variant: variant.clone(),
                        size,
                        seed: run.config.train.seed,
                        tokens: tokens_of(run.iters),
                        branch_of: run.branch_of,
                        config: run.config,
                    });
                }
            }
        }
    }
    Ok(runs)
}

/// Makes `config` train for `steps` steps: the schedule's decay ends there, warmup is at
/// most a tenth of it, and it evaluates and saves a checkpoint `evals` times.
pub fn set_budget(config: &mut RunConfig, steps: u64, evals: u64) {
    let interval = (steps / evals.max(1)).max(1);
    let t = &mut config.train;
    t.max_iters = steps;
    t.lr_decay_iters = Some(steps);
    t.warmup_iters = t.warmup_iters.min(steps / 10);
    t.eval_interval = interval;
    t.checkpoint_interval = Some(interval);
}
