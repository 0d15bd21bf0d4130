//! The runs of a comparison: for every arm and seed, one long run at the largest budget
//! (the source) and one run per smaller budget.
//!
//! With a warmup-stable-decay base (`train.schedule = "wsd"`) the source keeps a checkpoint
//! where each smaller budget's decay starts (`train.branch_budgets`), and every smaller budget
//! is a cooldown branch of it ([`strata_train::branch::cooldown`]): the same run up to that
//! step, then its own decay, bit for bit what a dedicated run of that length computes. With a
//! cosine base every budget is a run of its own length, its schedule ending at its last step.

use crate::config::{BudgetUnit, CompareConfig};
use strata_sweep::Variant;
use strata_sweep::plan::budget_row;
use strata_tensor::Result;
use strata_train::RunConfig;

/// One planned run.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Folder name, e.g. `baseline-s1-i500`.
    pub id: String,
    /// The arm.
    pub arm: Variant,
    /// The seed.
    pub seed: u64,
    /// Optimizer steps.
    pub iters: u64,
    /// True for the longest run of its arm and seed (the source of the branches).
    pub source: bool,
    /// The id of the source this run is a cooldown branch of (WSD bases only).
    pub branch_of: Option<String>,
    /// The complete run config.
    pub config: RunConfig,
}

/// The budgets of `compare` in steps, ascending and without repeats; `extra` adds the
/// baseline's extra budgets.
pub fn budget_iters(compare: &CompareConfig, base: &RunConfig, extra: bool) -> Vec<u64> {
    let per_step = (base.train.batch_size * base.model.block_size) as u64;
    let mut iters: Vec<u64> = compare
        .budgets
        .iter()
        .chain(compare.baseline_extra_budgets.iter().filter(|_| extra))
        .map(|&b| match compare.budget_unit {
            BudgetUnit::Iters => b,
            BudgetUnit::Tokens => b.div_ceil(per_step),
        })
        .map(|b| b.max(2))
        .collect();
    iters.sort_unstable();
    iters.dedup();
    iters
}

/// Every run of `compare`: seeds outermost, then arms, then budgets (longest first, so that
/// the source of the branches comes before them; [`budget_row`]). Trained in this order, a
/// comparison stopped early holds whole seeds: every arm's runs of the first seeds.
pub fn plan(compare: &CompareConfig) -> Result<Vec<PlannedRun>> {
    let base = RunConfig::load(&compare.base, &compare.set)?;
    let baseline = compare.baseline().name.clone();
    let shortest = budget_iters(compare, &base, true)
        .first()
        .copied()
        .unwrap_or(0);
    let mut arms = Vec::new();
    for arm in compare.all_arms() {
        let is_baseline = arm.name == baseline || arm.name == compare.aa_name();
        let budgets = budget_iters(compare, &base, is_baseline);
        let overrides: Vec<String> = compare.set.iter().chain(&arm.set).cloned().collect();
        let arm_base = RunConfig::load(&compare.base, &overrides)?;
        arms.push((arm, budgets, arm_base));
    }
    let mut runs = Vec::new();
    for &seed in &compare.seeds {
        for (arm, budgets, arm_base) in &arms {
            let mut row_base = arm_base.clone();
            row_base.train.seed = seed;
            let row = budget_row(
                &row_base,
                &compare.base,
                budgets,
                compare.evals_per_run,
                shortest,
                |iters| format!("{}-s{seed}-i{iters}", arm.name),
            )?;
            for (k, run) in row.into_iter().enumerate() {
                runs.push(PlannedRun {
                    id: run.id,
                    arm: arm.clone(),
                    seed,
                    iters: run.iters,
                    source: k == 0,
                    branch_of: run.branch_of,
                    config: run.config,
                });
            }
        }
    }
    Ok(runs)
}
