//! The sweep's measured multipliers: no law, only the runs, paired over seeds.
//!
//! For each model size and seed the baseline's runs form a loss-against-compute curve over
//! the token budgets ([`strata_stats::Curve`]). Each of the variant's runs at that size and
//! seed reached loss `L` with compute `C`; its multiplier is the compute at which the
//! baseline's curve of the same size and seed reaches `L`, over `C`, read by interpolation
//! and never extrapolated (a variant that beats the baseline's longest run at that size has
//! no reading there, and the report says so). This is the same reading a comparison makes
//! per budget (`strata-compare`), applied to every size of the grid.
//!
//! A cell (size, budget) counts only when every seed gives it a reading, so that every seed
//! is averaged over the same cells. Per seed, a size's multiplier is the geometric mean over
//! its counted budgets and the grid's over all counted cells; the seeds are then aggregated
//! as paired log multipliers ([`strata_stats::aggregate`]: Student-t and bootstrap
//! intervals, a p-value for "more than 1"). The loss difference at the same size and budget
//! (baseline minus variant) is aggregated the same way.

use crate::config::SweepConfig;
use crate::runner::SweepRecord;
use serde::{Deserialize, Serialize};
use strata_stats::{Curve, Paired, Power, aggregate, multiplier_verdict, power};

/// The multiplier a sweep's seed count is asked to resolve in its power statement.
pub const EFFECT: f64 = 1.05;

/// One variant run read against the baseline's curve of its size and seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellReading {
    /// Seed.
    pub seed: u64,
    /// Token budget.
    pub token_budget: u64,
    /// The variant run's training FLOPs.
    pub compute: f64,
    /// The variant run's final validation loss.
    pub loss: f64,
    /// Baseline compute to reach the loss over the variant's, or why there is none.
    pub multiplier: Result<f64, String>,
    /// The baseline's loss at the same size, seed and budget minus the variant's, or why
    /// there is none.
    pub loss_difference: Result<f64, String>,
}

/// One size of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeReading {
    /// Blocks.
    pub n_layer: usize,
    /// Residual width.
    pub d_model: usize,
    /// Every reading at this size.
    pub cells: Vec<CellReading>,
    /// The budgets every seed reads (the cells counted).
    pub counted_budgets: Vec<u64>,
    /// The paired log multiplier over seeds, or why there is none.
    pub log_multiplier: Result<Paired, String>,
    /// The paired loss difference over seeds, or why there is none.
    pub loss_difference: Result<Paired, String>,
}

/// One variant against the baseline over the whole grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredMultiplier {
    /// Variant name.
    pub variant: String,
    /// One entry per size of the grid.
    pub sizes: Vec<SizeReading>,
    /// The paired log multiplier over every counted cell, or why there is none.
    pub log_multiplier: Result<Paired, String>,
    /// The paired loss difference over every counted cell, or why there is none.
    pub loss_difference: Result<Paired, String>,
    /// How small a multiplier the seeds resolve.
    pub power: Option<Power>,
    /// The verdict in plain words.
    pub verdict: String,
}

/// The seeds of `records`, ascending.
fn seeds(records: &[SweepRecord]) -> Vec<u64> {
    strata_stats::distinct_sorted(records.iter().map(|r| r.seed))
}

/// The readings of `variant` at one size.
fn read_size(
    records: &[SweepRecord],
    baseline: &str,
    variant: &str,
    (n_layer, d_model): (usize, usize),
    seeds: &[u64],
) -> Vec<CellReading> {
    let at = |r: &&SweepRecord, name: &str, seed: u64| {
        r.variant == name && r.n_layer == n_layer && r.d_model == d_model && r.seed == seed
    };
    let mut cells = Vec::new();
    for &seed in seeds {
        let base: Vec<&SweepRecord> = records.iter().filter(|r| at(r, baseline, seed)).collect();
        let curve = Curve::new(base.iter().map(|r| (r.train_flops, r.final_val_loss)));
        for run in records.iter().filter(|r| at(r, variant, seed)) {
            let same_budget = base.iter().find(|b| b.token_budget == run.token_budget);
            cells.push(CellReading {
                seed,
                token_budget: run.token_budget,
                compute: run.train_flops,
                loss: run.final_val_loss,
                multiplier: curve
                    .compute_to_reach(run.final_val_loss)
                    .map(|c| c / run.train_flops)
                    .map_err(|e| e.to_string()),
                loss_difference: same_budget
                    .map(|b| b.final_val_loss - run.final_val_loss)
                    .ok_or_else(|| format!("no baseline run at {} tokens", run.token_budget)),
            });
        }
    }
    cells
}

/// The budgets of `cells` that every seed of `seeds` reads.
fn counted(cells: &[CellReading], seeds: &[u64]) -> Vec<u64> {
    let mut budgets: Vec<u64> = cells.iter().map(|c| c.token_budget).collect();
    budgets.sort_unstable();
    budgets.dedup();
    budgets.retain(|&b| {
        seeds.iter().all(|&s| {
            cells
                .iter()
                .any(|c| c.seed == s && c.token_budget == b && c.multiplier.is_ok())
        })
    });
    budgets
}

/// Per seed, the mean of `value` over the cells whose (size, budget) is in `keep`; `why`
/// explains an empty set.
fn per_seed(
    cells: &[(&CellReading, bool)],
    seeds: &[u64],
    value: impl Fn(&CellReading) -> Result<f64, String>,
    why: &str,
) -> Vec<(u64, Result<f64, String>)> {
    seeds
        .iter()
        .map(|&seed| {
            let values: Result<Vec<f64>, String> = cells
                .iter()
                .filter(|(c, keep)| *keep && c.seed == seed)
                .map(|(c, _)| value(c))
                .collect();
            let mean = values.and_then(|v| {
                if v.is_empty() {
                    Err(why.to_owned())
                } else {
                    Ok(v.iter().sum::<f64>() / v.len() as f64)
                }
            });
            (seed, mean)
        })
        .collect()
}

/// Each of `cells`, marked by whether its budget is one of `counted_budgets` (counted for
/// the multiplier).
fn marked_cells<'a>(
    cells: &'a [CellReading],
    counted_budgets: &[u64],
) -> Vec<(&'a CellReading, bool)> {
    cells
        .iter()
        .map(|c| (c, counted_budgets.contains(&c.token_budget)))
        .collect()
}

/// Every variant of `sweep` against its baseline (the first variant), from `records`.
pub fn measured(sweep: &SweepConfig, records: &[SweepRecord]) -> Vec<MeasuredMultiplier> {
    let baseline = &sweep.variants[0].name;
    let seeds = seeds(records);
    let (resamples, seed) = (sweep.fit.bootstrap.max(1000), sweep.fit.seed);
    let log_of = |c: &CellReading| c.multiplier.clone().map(f64::ln);
    let diff_of = |c: &CellReading| c.loss_difference.clone();
    let none = "no budget at which every seed's baseline curve reaches the variant's loss \
                without extrapolating";
    // The multiplier over the cells marked as counted, and the loss difference over all.
    let read = |marked: &[(&CellReading, bool)]| {
        let every: Vec<(&CellReading, bool)> = marked.iter().map(|&(c, _)| (c, true)).collect();
        (
            aggregate(per_seed(marked, &seeds, log_of, none), resamples, seed),
            aggregate(per_seed(&every, &seeds, diff_of, "no run"), resamples, seed),
        )
    };
    sweep.variants[1..]
        .iter()
        .map(|v| {
            let sizes: Vec<SizeReading> = sweep
                .sizes
                .iter()
                .map(|s| {
                    let cells =
                        read_size(records, baseline, &v.name, (s.n_layer, s.d_model), &seeds);
                    let counted_budgets = counted(&cells, &seeds);
                    let (log_multiplier, loss_difference) =
                        read(&marked_cells(&cells, &counted_budgets));
                    SizeReading {
                        n_layer: s.n_layer,
                        d_model: s.d_model,
                        cells,
                        counted_budgets,
                        log_multiplier,
                        loss_difference,
                    }
                })
                .collect();
            let all: Vec<(&CellReading, bool)> = sizes
                .iter()
                .flat_map(|s| marked_cells(&s.cells, &s.counted_budgets))
                .collect();
            let (log_multiplier, loss_difference) = read(&all);
            let power = log_multiplier.as_ref().ok().map(|p| power(p, EFFECT));
            let verdict = match &log_multiplier {
                Ok(p) => multiplier_verdict(
                    &v.name,
                    baseline,
                    "over the sweep's grid (geometric mean over the cells every seed reads)",
                    p,
                    power.as_ref(),
                ),
                Err(why) => format!("no verdict on `{}`: no paired multiplier ({why})", v.name),
            };
            MeasuredMultiplier {
                variant: v.name.clone(),
                sizes,
                log_multiplier,
                loss_difference,
                power,
                verdict,
            }
        })
        .collect()
}
