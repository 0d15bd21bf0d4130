//! The analysis of a finished sweep: a law per variant, the baseline's frontier, every
//! variant's compute multiplier, a markdown report and plots.

use crate::config::SweepConfig;
use crate::law::Observation;
use crate::multiplier::{
    Group, Multipliers, Outcome, in_grid_frontier, multiplier, poor_fit, range,
};
use crate::runner::SweepRecord;
use std::path::{Path, PathBuf};
use strata_plots::comparison::{Interval, Series, plot_intervals, plot_lines_log_x};
use strata_tensor::{Error, Result};

/// One variant's fit, or why it has none.
pub struct VariantFit {
    /// Variant name.
    pub name: String,
    /// The fitted group (`None` when the fit failed).
    pub group: Option<Group>,
    /// Why the fit failed.
    pub error: Option<String>,
}

/// Fits and multipliers of a sweep.
pub struct Analysis {
    /// One entry per variant, in config order.
    pub fits: Vec<VariantFit>,
    /// Every variant but the baseline with its multipliers.
    pub multipliers: Vec<(String, Multipliers)>,
}

/// The observations (non-embedding N, tokens, final val loss) and FLOPs of one variant.
pub fn observations(records: &[SweepRecord], variant: &str) -> (Vec<Observation>, Vec<f64>) {
    records
        .iter()
        .filter(|r| r.variant == variant)
        .map(|r| {
            (
                Observation {
                    n: r.params_non_embedding as f64,
                    d: r.tokens as f64,
                    loss: r.final_val_loss,
                },
                r.train_flops,
            )
        })
        .unzip()
}

/// Fits every variant and computes the multipliers against the first.
pub fn analyse(sweep: &SweepConfig, records: &[SweepRecord]) -> Analysis {
    let fits: Vec<VariantFit> = sweep
        .variants
        .iter()
        .map(|v| {
            let (obs, flops) = observations(records, &v.name);
            match Group::new(&v.name, obs, flops) {
                Ok(group) => VariantFit {
                    name: v.name.clone(),
                    group: Some(group),
                    error: None,
                },
                Err(e) => VariantFit {
                    name: v.name.clone(),
                    group: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect();
    let baseline = &fits[0];
    let multipliers = fits[1..]
        .iter()
        .map(|v| {
            let refused = |why: String| Multipliers {
                in_grid: Outcome::Refused(why.clone()),
                frontier: Outcome::Refused(why),
            };
            let outcome = match (&baseline.group, &v.group) {
                (Some(b), Some(g)) => multiplier(b, g, &sweep.fit),
                (None, _) => refused(format!("no fit for the baseline `{}`", baseline.name)),
                (_, None) => refused(format!("no fit for `{}`", v.name)),
            };
            (v.name.clone(), outcome)
        })
        .collect();
    Analysis { fits, multipliers }
}

/// Writes `<stem>.md` with the fits and multipliers, and the plots (PNG and SVG) into
/// `docs`: `<stem>-<variant>-loss-vs-flops`, `<stem>-frontiers`, `<stem>-loss-vs-params`
/// and `<stem>-multipliers`.
pub fn write_report(
    sweep: &SweepConfig,
    records: &[SweepRecord],
    analysis: &Analysis,
    docs: &Path,
    command: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(docs).map_err(Error::io(docs))?;
    let stem = &sweep.name;
    plot_loss_vs_flops(sweep, records, analysis, docs, stem)?;
    plot_loss_vs_params(sweep, records, docs, stem)?;
    let intervals: Vec<Interval> = analysis
        .multipliers
        .iter()
        .flat_map(|(name, m)| {
            [
                (name, "in grid", &m.in_grid),
                (name, "frontier", &m.frontier),
            ]
        })
        .filter_map(|(name, reading, o)| match o {
            Outcome::Reported(m) => Some(Interval {
                label: format!("{name} ({reading})"),
                low: m.low,
                estimate: m.estimate,
                high: m.high,
            }),
            Outcome::Refused(_) => None,
        })
        .collect();
    if !intervals.is_empty() {
        plot_intervals(
            docs,
            &format!("{stem}-multipliers"),
            &format!(
                "Compute multiplier over {} (95% bootstrap interval)",
                sweep.variants[0].name
            ),
            "baseline compute needed / variant compute",
            &intervals,
            1.0,
        )?;
    }
    let text = markdown(sweep, records, analysis, command);
    let path = docs.join(format!("{stem}.md"));
    std::fs::write(&path, text).map_err(Error::io(&path))?;
    Ok(path)
}

/// Per variant, loss against FLOPs: each size's runs joined across budgets, with the
/// variant's fitted frontier over the sizes the sweep measured
/// (`<stem>-<variant>-loss-vs-flops`); and every variant's frontier on one chart
/// (`<stem>-frontiers`).
fn plot_loss_vs_flops(
    sweep: &SweepConfig,
    records: &[SweepRecord],
    analysis: &Analysis,
    docs: &Path,
    stem: &str,
) -> Result<()> {
    let (lo, hi) = range(records.iter().map(|r| r.train_flops));
    let (n_lo, n_hi) = range(records.iter().map(|r| r.params_non_embedding as f64));
    let frontier = |fit: &VariantFit| {
        fit.group.as_ref().map(|group| {
            let kappa = group.kappa();
            Series {
                label: format!("{} fitted frontier", fit.name),
                points: (0..=40)
                    .map(|i| {
                        let c = lo * (hi / lo).powf(i as f64 / 40.0);
                        (c, in_grid_frontier(&group.fit.law, c, kappa, (n_lo, n_hi)))
                    })
                    .collect(),
            }
        })
    };
    for (v, fit) in sweep.variants.iter().zip(&analysis.fits) {
        let mut series: Vec<Series> = sweep
            .sizes
            .iter()
            .map(|s| Series {
                label: format!("L{} d{}", s.n_layer, s.d_model),
                points: records
                    .iter()
                    .filter(|r| {
                        r.variant == v.name && r.n_layer == s.n_layer && r.d_model == s.d_model
                    })
                    .map(|r| (r.train_flops, r.final_val_loss))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        series.extend(frontier(fit));
        if series.is_empty() {
            continue;
        }
        plot_lines_log_x(
            docs,
            &format!("{stem}-{}-loss-vs-flops", v.name),
            &format!("{}: validation loss against training compute", v.name),
            ("training FLOPs (log scale)", "final validation loss"),
            &series,
        )?;
    }
    let frontiers: Vec<Series> = analysis.fits.iter().filter_map(frontier).collect();
    if frontiers.is_empty() {
        return Ok(());
    }
    plot_lines_log_x(
        docs,
        &format!("{stem}-frontiers"),
        "Fitted compute-optimal frontiers",
        ("training FLOPs (log scale)", "validation loss"),
        &frontiers,
    )
}

/// Loss against log10 N (non-embedding), one line per variant and token budget.
fn plot_loss_vs_params(
    sweep: &SweepConfig,
    records: &[SweepRecord],
    docs: &Path,
    stem: &str,
) -> Result<()> {
    let mut series = Vec::new();
    for v in &sweep.variants {
        for &d in &sweep.tokens {
            let mut points: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| r.variant == v.name && r.token_budget == d)
                .map(|r| (r.params_non_embedding as f64, r.final_val_loss))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{} D={d}", v.name),
                    points,
                });
            }
        }
    }
    plot_lines_log_x(
        docs,
        &format!("{stem}-loss-vs-params"),
        "Validation loss against model size, per token budget",
        (
            "non-embedding parameters (log scale)",
            "final validation loss",
        ),
        &series,
    )
}

/// The markdown report.
fn markdown(
    sweep: &SweepConfig,
    records: &[SweepRecord],
    analysis: &Analysis,
    command: &str,
) -> String {
    let stem = &sweep.name;
    let wall: f64 = records.iter().map(|r| r.wall_s).sum();
    let mut s = format!(
        "# Sweep `{stem}`\n\n\
         Command: `{command}` ({} runs, {:.1} minutes of training wall time).\n\n\
         Every run is `{}` with the sweep's overrides. Its steps are its token budget over \
         batch × context, with a cosine over those steps and warmup cut to a tenth of them. \
         Each variant gets its own fit of `L(N, D) = E + A/N^α + B/D^β`: N counts non-embedding \
         parameters, D the tokens trained on, and L is the final validation loss. The fit \
         minimises a Huber loss (δ = 1e-3) on log loss from 432 starting points with L-BFGS, as \
         in Hoffmann et al. (2022), approach 3. Compute multipliers come in two readings, \
         explained with their table below. Their intervals are 95% bootstraps over runs \
         ({} resamples). No multiplier is reported when a fit has RMSE above {} or R² below {} \
         in log loss. Results per run: `results.jsonl` in the sweep folder.\n\n\
         ## Fits\n\n\
         | variant | runs | E | A | α | B | β | RMSE (log) | R² (log) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        records.len(),
        wall / 60.0,
        sweep.base.display(),
        sweep.fit.bootstrap,
        sweep.fit.max_rmse_log,
        sweep.fit.min_r2_log,
    );
    for fit in &analysis.fits {
        match &fit.group {
            Some(g) => {
                let (l, q) = (g.fit.law, g.fit.quality);
                let warning =
                    poor_fit(g, &sweep.fit).map_or(String::new(), |_| " (poor)".to_owned());
                s += &format!(
                    "| {} | {} | {:.4} | {:.4e} | {:.3} | {:.4e} | {:.3} | {:.4}{warning} | {:.3} |\n",
                    fit.name, q.points, l.e, l.a, l.alpha, l.b, l.beta, q.rmse_log, q.r2_log
                );
            }
            None => {
                s += &format!(
                    "| {} | - | fit failed: {} | | | | | | |\n",
                    fit.name,
                    fit.error.clone().unwrap_or_default()
                )
            }
        }
    }
    for g in analysis.fits.iter().filter_map(|f| f.group.as_ref()) {
        let lowest = g
            .observations
            .iter()
            .map(|o| o.loss)
            .fold(f64::INFINITY, f64::min);
        if g.fit.law.e < 0.1 * lowest {
            s += &format!(
                "\n`{}`: E is not identified ({:.4}, against a lowest loss of {lowest:.4}). The \
                 runs are far from the loss floor, so the data term absorbs it. Read the \
                 frontier and the multiplier only inside the sweep's compute range.\n",
                g.name, g.fit.law.e
            );
        }
    }
    s += &format!(
        "\n## Compute multipliers over `{}`\n\n\
         How much more compute the baseline needs to reach each variant's loss. *In grid* takes \
         the fitted loss of each of the variant's runs. It divides the least compute with which \
         the baseline reaches that loss, using a model size inside the grid (2× slack), by the \
         same for the variant, and takes the geometric mean over the runs. *Frontier* compares the compute-optimal frontiers at \
         the variant's middle compute, and is refused when an optimal model lies outside the \
         grid.\n\n\
         | variant | reading | multiplier | 95% interval | at FLOPs | loss there |\n\
         |---|---|---|---|---|---|\n",
        sweep.variants[0].name
    );
    for (name, m) in &analysis.multipliers {
        for (reading, outcome) in [("in grid", &m.in_grid), ("frontier", &m.frontier)] {
            match outcome {
                Outcome::Reported(m) => {
                    s += &format!(
                        "| {name} | {reading} | {:.3} | {:.3} to {:.3} ({} resamples) | {:.3e} | {:.4} |\n",
                        m.estimate, m.low, m.high, m.resamples, m.compute, m.loss
                    )
                }
                Outcome::Refused(why) => {
                    s += &format!("| {name} | {reading} | not reported: {why} | | | |\n")
                }
            }
        }
    }
    s += &format!("\n![fitted frontiers]({stem}-frontiers.png)\n\n");
    for v in &sweep.variants {
        s += &format!(
            "![{0}: loss against compute]({stem}-{0}-loss-vs-flops.png)\n\n",
            v.name
        );
    }
    s += &format!("![loss against size]({stem}-loss-vs-params.png)\n\n");
    if !intervals_empty(analysis) {
        s += &format!("![compute multipliers]({stem}-multipliers.png)\n\n");
    }
    s += "## Runs\n\n| run | N (non-emb.) | N (total) | tokens | FLOPs | final val | best val | wall s |\n\
          |---|---|---|---|---|---|---|---|\n";
    for r in records {
        s += &format!(
            "| {} | {} | {} | {} | {:.3e} | {:.4} | {:.4} | {:.0} |\n",
            r.run,
            r.params_non_embedding,
            r.params_total,
            r.tokens,
            r.train_flops,
            r.final_val_loss,
            r.best_val_loss,
            r.wall_s
        );
    }
    s
}

/// True when no multiplier of any reading is reported.
fn intervals_empty(analysis: &Analysis) -> bool {
    !analysis.multipliers.iter().any(|(_, m)| {
        matches!(m.in_grid, Outcome::Reported(_)) || matches!(m.frontier, Outcome::Reported(_))
    })
}
