//! The report of a comparison: `<name>.md` with the method, the verdicts, the multipliers
//! and loss differences per budget, steps to the target and every run, and three plots (PNG
//! and SVG): `<name>-loss-vs-compute` (per arm the mean over seeds with the seeds' lowest
//! and highest loss as a band), `<name>-multipliers` (per arm and budget, the multiplier
//! with its 95% t interval) and `<name>-paired-differences` (per variant and seed, the loss
//! difference at equal compute against compute).

use crate::analysis::{Analysis, CompareRecord};
use crate::config::CompareConfig;
use std::path::{Path, PathBuf};
use strata_plots::comparison::{Interval, Series, plot_intervals, plot_lines_log_x};
use strata_stats::Paired;
use strata_stats::describe_multiplier as describe;
use strata_tensor::{Error, Result};
use strata_train::RunConfig;

/// Writes the report and plots into `docs`; returns the markdown file. `base` is the run
/// config every run starts from (with the comparison's overrides), `command` the command
/// line that produced it.
pub fn write_report(
    compare: &CompareConfig,
    base: &RunConfig,
    records: &[CompareRecord],
    analysis: &Analysis,
    docs: &Path,
    command: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(docs).map_err(Error::io(docs))?;
    let stem = &compare.name;
    let arms: Vec<String> = compare.all_arms().into_iter().map(|a| a.name).collect();
    if !records.is_empty() {
        plot_loss(records, &arms, docs, stem)?;
    }
    let intervals = multiplier_intervals(analysis);
    if !intervals.is_empty() {
        plot_intervals(
            docs,
            &format!("{stem}-multipliers"),
            &format!(
                "Compute multiplier over {} per budget (95% paired t interval)",
                analysis.baseline
            ),
            "baseline compute needed / variant compute",
            &intervals,
            1.0,
        )?;
    }
    let differences = difference_series(analysis);
    if !differences.is_empty() {
        plot_lines_log_x(
            docs,
            &format!("{stem}-paired-differences"),
            &format!(
                "Loss of {} minus the variant's at equal compute, per seed",
                analysis.baseline
            ),
            ("variant training FLOPs (log scale)", "loss difference"),
            &differences,
        )?;
    }
    let text = markdown(
        compare,
        base,
        records,
        analysis,
        command,
        (!intervals.is_empty(), !differences.is_empty()),
    );
    let path = docs.join(format!("{stem}.md"));
    std::fs::write(&path, text).map_err(Error::io(&path))?;
    Ok(path)
}

/// Per arm: the mean final loss over seeds against compute, and the seeds' lowest and
/// highest loss (the band).
fn plot_loss(records: &[CompareRecord], arms: &[String], docs: &Path, stem: &str) -> Result<()> {
    let mut series = Vec::new();
    for arm in arms {
        let mut budgets: Vec<u64> = records
            .iter()
            .filter(|r| &r.arm == arm)
            .map(|r| r.iters)
            .collect();
        budgets.sort_unstable();
        budgets.dedup();
        let (mut mean, mut low, mut high) = (Vec::new(), Vec::new(), Vec::new());
        for b in budgets {
            let runs: Vec<&CompareRecord> = records
                .iter()
                .filter(|r| &r.arm == arm && r.iters == b)
                .collect();
            let n = runs.len() as f64;
            let c = runs.iter().map(|r| r.train_flops).sum::<f64>() / n;
            let losses = runs.iter().map(|r| r.final_val_loss);
            mean.push((c, losses.clone().sum::<f64>() / n));
            low.push((c, losses.clone().fold(f64::INFINITY, f64::min)));
            high.push((c, losses.fold(f64::NEG_INFINITY, f64::max)));
        }
        if mean.is_empty() {
            continue;
        }
        for (label, points) in [
            (format!("{arm} (mean over seeds)"), mean),
            (format!("{arm} (lowest seed)"), low),
            (format!("{arm} (highest seed)"), high),
        ] {
            series.push(Series { label, points });
        }
    }
    plot_lines_log_x(
        docs,
        &format!("{stem}-loss-vs-compute"),
        "Final validation loss against training compute, band over seeds",
        ("training FLOPs (log scale)", "final validation loss"),
        &series,
    )
}

/// Every reported multiplier with its t interval, labelled `<arm> @ <steps>`.
fn multiplier_intervals(analysis: &Analysis) -> Vec<Interval> {
    analysis
        .arms
        .iter()
        .flat_map(|a| {
            a.budgets.iter().filter_map(move |b| {
                b.log_multiplier.as_ref().ok().map(|e| Interval {
                    label: format!("{} @ {}", a.arm, b.iters),
                    low: e.t_interval.0.exp(),
                    estimate: e.mean.exp(),
                    high: e.t_interval.1.exp(),
                })
            })
        })
        .collect()
}

/// Per variant (A/A aside) and seed, the loss difference at equal compute over the budgets
/// where there is one.
fn difference_series(analysis: &Analysis) -> Vec<Series> {
    let mut series = Vec::new();
    for arm in analysis.arms.iter().filter(|a| !a.aa) {
        let mut seeds: Vec<u64> = arm
            .budgets
            .iter()
            .flat_map(|b| b.pairs.iter().map(|p| p.seed))
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        for seed in seeds {
            let points: Vec<(f64, f64)> = arm
                .budgets
                .iter()
                .flat_map(|b| b.pairs.iter())
                .filter(|p| p.seed == seed)
                .filter_map(|p| p.loss_difference.as_ref().ok().map(|d| (p.compute, *d)))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{} seed {seed}", arm.arm),
                    points,
                });
            }
        }
    }
    series
}

/// A loss-difference estimate as text.
fn describe_difference(d: &Paired) -> String {
    format!(
        "{:+.4} (t {:+.4} to {:+.4}; bootstrap {:+.4} to {:+.4})",
        d.mean, d.t_interval.0, d.t_interval.1, d.bootstrap_interval.0, d.bootstrap_interval.1
    )
}

/// The markdown report (`plots`: whether the multiplier and difference plots exist).
fn markdown(
    compare: &CompareConfig,
    base: &RunConfig,
    records: &[CompareRecord],
    analysis: &Analysis,
    command: &str,
    plots: (bool, bool),
) -> String {
    let stem = &compare.name;
    let t = &base.train;
    let wall: f64 = records.iter().map(|r| r.wall_s).sum();
    let evaluation = match t.eval_tokens {
        Some(slice) => format!(
            "the final validation loss on a fixed slice of the held-out split (`train.eval_tokens \
             = {}`: consecutive windows of {} tokens from its start), the same tokens for every \
             arm and every seed",
            serde_json::to_string(&slice).unwrap_or_default(),
            base.model.block_size
        ),
        None => format!(
            "the final validation loss on the run's fixed validation batches ({} batches × {} \
             sequences × {} tokens = {} tokens of the held-out split, drawn from the seed: the \
             same for every arm of a seed)",
            t.eval_iters,
            t.batch_size,
            base.model.block_size,
            t.eval_iters * t.batch_size * base.model.block_size
        ),
    };
    let mut s = format!(
        "# Comparison `{stem}`\n\n\
         Command: `{command}` ({} runs, {:.1} minutes of training wall time).\n\n\
         ## Verdicts (at {} steps, the middle budget)\n\n",
        records.len(),
        wall / 60.0,
        analysis.headline_iters,
    );
    for arm in &analysis.arms {
        s += &format!("- **{}**: {}.\n", arm.arm, arm.verdict);
    }
    s += &format!(
        "\n## Method\n\n\
         Every run is `{}` with the comparison's overrides. Arms: `{}` (baseline){}. Seeds: \
         {:?}; the runs of one seed are **paired**: every arm trains on the identical token \
         stream (batches are drawn from the seed and the step only) and starts from the same \
         seed. Budgets (steps): every arm trains each of {:?}{}; with a warmup-stable-decay \
         schedule a smaller budget is a cooldown branch of its arm and seed's longest run \
         (identical to a dedicated run of that length), otherwise a run of its own length \
         with the schedule ending at its last step. Evaluation: {evaluation}.\n\n\
         **Multiplier** at a budget: for each seed, the compute at which the baseline's \
         curve of that seed (final loss against training FLOPs over its budgets, linear in \
         log compute between them, never extrapolated) reaches the variant's loss, over the \
         variant's compute; more than 1 means the variant is worth more compute. Seeds are \
         aggregated as the mean of log multipliers, reported as a ratio, with a 95% **paired \
         Student-t** interval and a 95% **paired percentile bootstrap** interval ({} \
         resamples of the seed pairs, seed {}), and the one-sided t-test p-value for \
         \"multiplier > 1\". A verdict names a winner only when both intervals exclude 1. \
         **Loss difference** at equal compute: the baseline's loss at the variant's compute \
         minus the variant's loss (positive: the variant is better), with the same paired \
         intervals. **Power**: from the spread `sd` of the paired log multipliers at the \
         middle budget, the smallest multiplier resolved with 80% power at the 95% level is \
         `exp((t(0.975, n-1) + t(0.8, n-1)) · sd / √n)`, and the seeds needed for 1.05× the \
         least `n` for which that is at most 1.05.\n\n",
        compare.base.display(),
        analysis.baseline,
        analysis
            .arms
            .iter()
            .map(|a| format!(", `{}`{}", a.arm, if a.aa { " (A/A)" } else { "" }))
            .collect::<String>(),
        compare.seeds,
        compare.budgets,
        if compare.baseline_extra_budgets.is_empty() {
            String::new()
        } else {
            format!(
                ", and the baseline also {:?} (so that its curve reaches the variants' \
                 losses)",
                compare.baseline_extra_budgets
            )
        },
        compare.bootstrap,
        compare.bootstrap_seed,
    );
    s += &format!(
        "## Multipliers and loss differences over `{}`\n\n\
         | arm | steps | FLOPs | multiplier | loss difference at equal compute | half-width (log) |\n\
         |---|---|---|---|---|---|\n",
        analysis.baseline
    );
    for arm in &analysis.arms {
        for b in &arm.budgets {
            let (m, half) = match &b.log_multiplier {
                Ok(e) => (describe(e), format!("{:.3}", e.half_width())),
                Err(why) => (format!("not reported: {why}"), String::new()),
            };
            let d = match &b.loss_difference {
                Ok(d) => describe_difference(d),
                Err(why) => format!("not reported: {why}"),
            };
            s += &format!(
                "| {} | {} | {:.3e} | {m} | {d} | {half} |\n",
                arm.arm, b.iters, b.compute
            );
        }
    }
    if let Some(target) = &analysis.target {
        s += &format!(
            "\n## Steps to a validation loss of {}\n\n\
             Per seed, interpolated in log steps between the budgets' final losses (never \
             extrapolated); the speed-up is baseline steps over the arm's, paired over seeds.\n\n\
             | arm | mean steps | speed-up over the baseline |\n|---|---|---|\n",
            compare.target_loss.unwrap_or_default()
        );
        for (arm, outcome) in target {
            match outcome {
                Ok(t) => {
                    let mean = t.steps.iter().sum::<f64>() / t.steps.len().max(1) as f64;
                    let speedup = t.log_speedup.as_ref().map_or("".to_owned(), describe);
                    s += &format!("| {arm} | {mean:.0} | {speedup} |\n");
                }
                Err(why) => s += &format!("| {arm} | not reported: {why} | |\n"),
            }
        }
    }
    s += &format!("\n![loss against compute]({stem}-loss-vs-compute.png)\n\n");
    if plots.0 {
        s += &format!("![multipliers]({stem}-multipliers.png)\n\n");
    }
    if plots.1 {
        s += &format!("![paired differences]({stem}-paired-differences.png)\n\n");
    }
    s += "## Runs\n\nA cooldown branch's wall time counts only its own steps, not its source's up to \
          the branch point.\n\n| run | arm | seed | steps | FLOPs | final val | wall s |\n\
          |---|---|---|---|---|---|---|\n";
    for r in records {
        s += &format!(
            "| {} | {} | {} | {} | {:.3e} | {:.4} | {:.0} |\n",
            r.run, r.arm, r.seed, r.steps, r.train_flops, r.final_val_loss, r.wall_s
        );
    }
    s
}
