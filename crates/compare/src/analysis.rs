//! The analysis of a finished comparison, from its records alone (no libtorch).
//!
//! For seed `s`, the baseline's curve is its final validation loss against training compute
//! over its budgets ([`Curve`]). At each budget, the variant's run of seed `s` reached loss
//! `L` with compute `C`; its **multiplier** is the compute at which the baseline's curve of
//! the same seed reaches `L`, over `C` (more than 1: the variant is worth more compute). Its
//! **loss difference at equal compute** is the baseline's loss at `C` minus `L` (more than
//! 0: the variant is better). Both are aggregated over the seed pairs with [`paired`]
//! (multipliers as logs, reported as ratios). A budget where any seed's curve cannot answer
//! without extrapolating is reported with the reason instead of a number.

use serde::{Deserialize, Serialize};
use strata_stats::{
    Curve, Paired, Power, aggregate, describe_multiplier, multiplier_verdict, paired,
};

/// What every finished run contributes to the results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRecord {
    /// Run folder name.
    pub run: String,
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Planned budget in steps.
    pub iters: u64,
    /// Steps trained.
    pub steps: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Training FLOPs (`strata_core::flops`, counted per step).
    pub train_flops: f64,
    /// Final validation loss.
    pub final_val_loss: f64,
    /// Wall-clock seconds (evaluations included).
    pub wall_s: f64,
    /// Every parameter.
    pub params_total: usize,
}

/// How to aggregate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Bootstrap resamples.
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub bootstrap_seed: u64,
    /// The loss whose steps-to-reach are reported, if any.
    pub target_loss: Option<f64>,
    /// The multiplier the seed-count statement is made for (e.g. 1.05).
    pub effect: f64,
}

/// One seed pair at one budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairOutcome {
    /// Seed.
    pub seed: u64,
    /// The variant's compute.
    pub compute: f64,
    /// The variant's final validation loss.
    pub loss: f64,
    /// Baseline compute needed over the variant's, or why there is none.
    pub multiplier: Result<f64, String>,
    /// The baseline's loss at the variant's compute minus the variant's loss, or why there
    /// is none.
    pub loss_difference: Result<f64, String>,
}

/// One variant against the baseline at one budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetComparison {
    /// Budget in steps.
    pub iters: u64,
    /// The variant's compute at this budget (mean over seeds).
    pub compute: f64,
    /// Every seed pair.
    pub pairs: Vec<PairOutcome>,
    /// The paired estimate of the log multiplier, or why there is none.
    pub log_multiplier: Result<Paired, String>,
    /// The paired estimate of the loss difference at equal compute, or why there is none.
    pub loss_difference: Result<Paired, String>,
}

/// Steps to reach the target loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetSteps {
    /// Steps per seed (interpolated in log steps between budgets).
    pub steps: Vec<f64>,
    /// The paired estimate of log(baseline steps / these steps) (variants only).
    pub log_speedup: Option<Paired>,
}

/// One arm against the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmComparison {
    /// Arm name.
    pub arm: String,
    /// True for the A/A arm.
    pub aa: bool,
    /// One entry per budget the arm trained, ascending.
    pub budgets: Vec<BudgetComparison>,
    /// Power at the headline budget (when its multiplier exists).
    pub power: Option<Power>,
    /// The verdict in plain words.
    pub verdict: String,
}

/// The whole analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The baseline's name.
    pub baseline: String,
    /// The budget the verdicts speak about: the middle one of the variants' budgets.
    pub headline_iters: u64,
    /// Every other arm against the baseline.
    pub arms: Vec<ArmComparison>,
    /// Steps to the target loss per arm (baseline first), or why there are none.
    pub target: Option<Vec<(String, Result<TargetSteps, String>)>>,
}

/// The records of `arm` and `seed`, budget ascending.
fn runs_of<'a>(records: &'a [CompareRecord], arm: &str, seed: u64) -> Vec<&'a CompareRecord> {
    let mut runs: Vec<&CompareRecord> = records
        .iter()
        .filter(|r| r.arm == arm && r.seed == seed)
        .collect();
    runs.sort_by_key(|r| r.iters);
    runs
}

/// The seeds of the records, ascending.
fn seeds(records: &[CompareRecord]) -> Vec<u64> {
    strata_stats::distinct_sorted(records.iter().map(|r| r.seed))
}

/// `arm` against `baseline` at every budget of `arm`.
fn compare_budgets(
    records: &[CompareRecord],
    baseline: &str,
    arm: &str,
    settings: &Settings,
) -> Vec<BudgetComparison> {
    let seeds = seeds(records);
    let mut budgets: Vec<u64> = records
        .iter()
        .filter(|r| r.arm == arm)
        .map(|r| r.iters)
        .collect();
    budgets.sort_unstable();
    budgets.dedup();
    let curves: Vec<(u64, Curve)> = seeds
        .iter()
        .map(|&s| {
            let points = runs_of(records, baseline, s)
                .into_iter()
                .map(|r| (r.train_flops, r.final_val_loss));
            (s, Curve::new(points))
        })
        .collect();
    budgets
        .into_iter()
        .map(|iters| {
            let pairs: Vec<PairOutcome> = curves
                .iter()
                .filter_map(|(seed, curve)| {
                    let run = records
                        .iter()
                        .find(|r| r.arm == arm && r.seed == *seed && r.iters == iters)?;
                    let (c, l) = (run.train_flops, run.final_val_loss);
                    Some(PairOutcome {
                        seed: *seed,
                        compute: c,
                        loss: l,
                        multiplier: curve
                            .compute_to_reach(l)
                            .map(|cb| cb / c)
                            .map_err(|e| e.to_string()),
                        loss_difference: curve
                            .loss_at(c)
                            .map(|lb| lb - l)
                            .map_err(|e| e.to_string()),
                    })
                })
                .collect();
            let compute = pairs.iter().map(|p| p.compute).sum::<f64>() / pairs.len().max(1) as f64;
            let log_multiplier = aggregate(
                pairs
                    .iter()
                    .map(|p| (p.seed, p.multiplier.clone().map(f64::ln)))
                    .collect(),
                settings.bootstrap,
                settings.bootstrap_seed,
            );
            let loss_difference = aggregate(
                pairs
                    .iter()
                    .map(|p| (p.seed, p.loss_difference.clone()))
                    .collect(),
                settings.bootstrap,
                settings.bootstrap_seed,
            );
            BudgetComparison {
                iters,
                compute,
                pairs,
                log_multiplier,
                loss_difference,
            }
        })
        .collect()
}

/// Steps to `target` for every seed of `arm`, or why not every seed reaches it.
fn steps_to(records: &[CompareRecord], arm: &str, target: f64) -> Result<Vec<f64>, String> {
    seeds(records)
        .into_iter()
        .map(|seed| {
            let curve = Curve::new(
                runs_of(records, arm, seed)
                    .into_iter()
                    .map(|r| (r.steps as f64, r.final_val_loss)),
            );
            curve.compute_to_reach(target).map_err(|e| {
                format!(
                    "target loss {target} not read off for `{arm}` at seed {seed}: {}",
                    e.to_string().replace("FLOPs", "steps")
                )
            })
        })
        .collect()
}

/// Steps to the target per arm (baseline first), each variant paired with the baseline.
fn target_steps(
    records: &[CompareRecord],
    arms: &[String],
    target: f64,
    settings: &Settings,
) -> Vec<(String, Result<TargetSteps, String>)> {
    let baseline = steps_to(records, &arms[0], target);
    arms.iter()
        .enumerate()
        .map(|(i, arm)| {
            let steps = if i == 0 {
                baseline.clone()
            } else {
                steps_to(records, arm, target)
            };
            let outcome = steps.map(|steps| {
                let log_speedup = match (&baseline, i) {
                    (Ok(base), i) if i > 0 => {
                        let logs: Vec<f64> =
                            base.iter().zip(&steps).map(|(b, v)| (b / v).ln()).collect();
                        paired(&logs, settings.bootstrap, settings.bootstrap_seed)
                    }
                    _ => None,
                };
                TargetSteps { steps, log_speedup }
            });
            (arm.clone(), outcome)
        })
        .collect()
}

/// The verdict on `arm` at the headline budget, in plain words.
fn verdict(arm: &ArmComparison, baseline: &str, headline: u64) -> String {
    let Some(budget) = arm.budgets.iter().find(|b| b.iters == headline) else {
        return format!(
            "`{}` has no run at the headline budget of {headline} steps",
            arm.arm
        );
    };
    let estimate = match &budget.log_multiplier {
        Ok(e) => e,
        Err(why) => {
            return format!(
                "no verdict on `{}` at {headline} steps: no multiplier ({why})",
                arm.arm
            );
        }
    };
    let m = describe_multiplier(estimate);
    if arm.aa {
        let power = arm
            .power
            .as_ref()
            .map(strata_stats::power_sentence)
            .unwrap_or_default();
        return if estimate.excludes_zero() {
            format!(
                "A/A check FAILED: the baseline against itself gives {m}; the arms are not \
                 paired as they should be, so no verdict here can be trusted"
            )
        } else if estimate.sd == 0.0 {
            "A/A check passed: the baseline against itself gives exactly 1× at every seed \
             (training is deterministic and the pairing exact)"
                .to_owned()
        } else {
            format!("A/A check passed: the baseline against itself gives {m}; {power}")
        };
    }
    multiplier_verdict(
        &arm.arm,
        baseline,
        &format!("at {headline} steps"),
        estimate,
        arm.power.as_ref(),
    )
}

/// Analyses `records` of the arms `arms` (baseline first; `aa`: the A/A arm's name, if any)
/// over the variants' `budgets` (in steps).
pub fn analyse(
    records: &[CompareRecord],
    arms: &[String],
    aa: Option<&str>,
    budgets: &[u64],
    settings: &Settings,
) -> Analysis {
    let baseline = arms[0].clone();
    let mut sorted = budgets.to_vec();
    sorted.sort_unstable();
    let headline_iters = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let arms_out = arms[1..]
        .iter()
        .map(|arm| {
            let budgets = compare_budgets(records, &baseline, arm, settings);
            let power = budgets
                .iter()
                .find(|b| b.iters == headline_iters)
                .and_then(|b| b.log_multiplier.as_ref().ok())
                .map(|e| strata_stats::power(e, settings.effect));
            let mut out = ArmComparison {
                arm: arm.clone(),
                aa: aa == Some(arm.as_str()),
                budgets,
                power,
                verdict: String::new(),
            };
            out.verdict = verdict(&out, &baseline, headline_iters);
            out
        })
        .collect();
    let target = settings
        .target_loss
        .map(|t| target_steps(records, arms, t, settings));
    Analysis {
        baseline,
        headline_iters,
        arms: arms_out,
        target,
    }
}
