//! The analysis of a finished sweep: a law per variant, the baseline's frontier, every
//! variant's compute multiplier, a markdown report and plots.

use crate::config::SweepConfig;
use crate::law::Observation;
use crate::measured::{MeasuredMultiplier, measured};
use crate::multiplier::{
    Group, Multipliers, Outcome, in_grid_frontier, multiplier, paired_multiplier, poor_fit, range,
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
    /// Every variant but the baseline with its multipliers from the fitted laws.
    pub multipliers: Vec<(String, Multipliers)>,
    /// Every variant but the baseline with its measured multipliers, paired over seeds.
    pub measured: Vec<MeasuredMultiplier>,
    /// The seeds of the records.
    pub seeds: Vec<u64>,
}

/// The observations (non-embedding N, tokens, final val loss) and FLOPs of one variant
/// (of one seed, when `seed` is given).
pub fn observations(
    records: &[SweepRecord],
    variant: &str,
    seed: Option<u64>,
) -> (Vec<Observation>, Vec<f64>) {
    records
        .iter()
        .filter(|r| r.variant == variant && seed.is_none_or(|s| r.seed == s))
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
            let (obs, flops) = observations(records, &v.name, None);
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
    let seeds = strata_stats::distinct_sorted(records.iter().map(|r| r.seed));
    let baseline = &fits[0];
    let multipliers = fits[1..]
        .iter()
        .map(|v| {
            let refused = |why: String| Multipliers {
                in_grid: Outcome::Refused(why.clone()),
                frontier: Outcome::Refused(why),
            };
            let outcome = match (&baseline.group, &v.group) {
                (Some(_), Some(_)) if seeds.len() > 1 => {
                    match per_seed_groups(records, &baseline.name, &v.name, &seeds) {
                        Ok(pairs) => paired_multiplier(&pairs, &sweep.fit),
                        Err(why) => refused(why),
                    }
                }
                (Some(b), Some(g)) => multiplier(b, g, &sweep.fit),
                (None, _) => refused(format!("no fit for the baseline `{}`", baseline.name)),
                (_, None) => refused(format!("no fit for `{}`", v.name)),
            };
            (v.name.clone(), outcome)
        })
        .collect();
    Analysis {
        fits,
        multipliers,
        measured: measured(sweep, records),
        seeds,
    }
}

/// Each seed's fits of the baseline and the variant, or why one failed.
fn per_seed_groups(
    records: &[SweepRecord],
    baseline: &str,
    variant: &str,
    seeds: &[u64],
) -> std::result::Result<Vec<(u64, Group, Group)>, String> {
    seeds
        .iter()
        .map(|&seed| {
            let fit = |name: &str| {
                let (obs, flops) = observations(records, name, Some(seed));
                Group::new(name, obs, flops)
                    .map_err(|e| format!("no fit for `{name}` at seed {seed}: {e}"))
            };
            Ok((seed, fit(baseline)?, fit(variant)?))
        })
        .collect()
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
    let mut intervals: Vec<Interval> = analysis
        .measured
        .iter()
        .filter_map(|m| {
            m.log_multiplier.as_ref().ok().map(|p| Interval {
                label: format!("{} (measured, paired)", m.variant),
                low: p.t_interval.0.exp(),
                estimate: p.mean.exp(),
                high: p.t_interval.1.exp(),
            })
        })
        .collect();
    intervals.extend(
        analysis
            .multipliers
            .iter()
            .flat_map(|(name, m)| {
                [
                    (name, "law, in grid", &m.in_grid),
                    (name, "law, frontier", &m.frontier),
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
            }),
    );
    if !intervals.is_empty() {
        plot_intervals(
            docs,
            &format!("{stem}-multipliers"),
            &format!(
                "Compute multiplier over {} (95% interval)",
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
    let seeds = &analysis.seeds;
    let wsd = records
        .first()
        .is_some_and(|r| r.config.train.schedule == strata_train::schedule::ScheduleKind::Wsd);
    let schedule = if wsd {
        "a warmup-stable-decay schedule: each (variant, size, seed) trains its longest budget \
         once, and every shorter budget is a cooldown branch of it, resumed from the stable \
         phase and decayed over its own last steps (bit for bit what a dedicated run of that \
         length computes)"
    } else {
        "a cosine over those steps and warmup cut to a tenth of them"
    };
    let evaluation = match records
        .first()
        .map(|r| (&r.config.train.eval_tokens, r.config.train.eval_iters))
    {
        Some((Some(strata_train::evaluation::EvalTokens::Count(n)), _)) => {
            format!("the same {n} held-out tokens for every run")
        }
        Some((Some(_), _)) => "the whole held-out split for every run".to_owned(),
        Some((None, iters)) => format!("the base config's {iters} fixed validation batches"),
        None => "none".to_owned(),
    };
    let pairing = if seeds.len() > 1 {
        format!(
            "Seeds {}: the variants of one seed are paired (the same token stream, and the same \
             initial values for every parameter they share). Every multiplier below is \
             aggregated over the seed pairs as a log ratio, with a 95% Student-t interval, a \
             seed-pair bootstrap interval and a one-sided p-value for \"more than 1\" \
             (`strata_stats`, as `strata compare` does).",
            seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "One seed ({}): no multiplier here has a paired interval; list `seeds` in the sweep \
             file to get one. The law readings' intervals are bootstraps over runs ({} \
             resamples).",
            seeds.first().copied().unwrap_or_default(),
            sweep.fit.bootstrap
        )
    };
    let mut s = format!(
        "# Sweep `{stem}`\n\n\
         Command: `{command}` ({} runs, {:.1} minutes of training wall time).\n\n\
         Every run is `{}` with the sweep's overrides. Its steps are its token budget over \
         batch × context, with {schedule}. Validation: {evaluation}. {pairing}\n\n",
        records.len(),
        wall / 60.0,
        sweep.base.display(),
    );
    s += &measured_section(&analysis.measured, &sweep.variants[0].name);
    s += &format!(
        "## Fits\n\n\
         Each variant gets its own fit of `L(N, D) = E + A/N^α + B/D^β` to all its runs: N \
         counts non-embedding parameters, D the tokens trained on, and L is the final validation \
         loss. The fit minimises a Huber loss (δ = 1e-3) on log loss from 432 starting points \
         with L-BFGS, as in Hoffmann et al. (2022), approach 3. No multiplier is read from a fit \
         with RMSE above {} or R² below {} in log loss.\n\n\
         | variant | runs | E | A | α | B | β | RMSE (log) | R² (log) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        sweep.fit.max_rmse_log, sweep.fit.min_r2_log,
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
        "\n## Compute multipliers from the fitted laws, over `{}`\n\n\
         How much more compute the baseline needs to reach each variant's loss, read from the \
         fits (with several seeds: each seed's fits, paired). *In grid* takes \
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
                    let interval = match &m.paired {
                        Some(p) => format!(
                            "{:.3} to {:.3} (paired t over {} seeds; bootstrap {:.3} to {:.3}; {})",
                            m.low,
                            m.high,
                            p.n,
                            p.bootstrap_interval.0.exp(),
                            p.bootstrap_interval.1.exp(),
                            strata_stats::p_value(p.p_greater)
                        ),
                        None => format!(
                            "{:.3} to {:.3} (bootstrap over runs, {} resamples)",
                            m.low, m.high, m.resamples
                        ),
                    };
                    s += &format!(
                        "| {name} | {reading} | {:.3} | {interval} | {:.3e} | {:.4} |\n",
                        m.estimate, m.compute, m.loss
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
    s += "## Runs\n\nA cooldown branch's wall time counts only its own steps.\n\n\
          | run | seed | N (non-emb.) | N (total) | tokens | FLOPs | final val | best val | wall s |\n\
          |---|---|---|---|---|---|---|---|---|\n";
    for r in records {
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.3e} | {:.4} | {:.4} | {:.0} |\n",
            r.run,
            r.seed,
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

/// The measured multipliers: per variant a verdict, the grid's paired multiplier and loss
/// difference, and one row per size.
fn measured_section(measured: &[MeasuredMultiplier], baseline: &str) -> String {
    let mut s = format!(
        "## Measured multipliers over `{baseline}`\n\n\
         No law here, only the runs. At each size and seed, the baseline's runs form a \
         loss-against-compute curve over the token budgets (linear in log compute between \
         runs). A variant run's multiplier is the compute at which the baseline's curve of the \
         same size and seed reaches the variant's loss, over the variant's compute: read by \
         interpolation, never extrapolated, so a variant that beats the baseline's longest run \
         of a size has no reading there. A budget counts only when every seed reads it. The \
         loss difference is the baseline's final loss minus the variant's at the same size, \
         seed and budget (more than 0: the variant is better).\n\n"
    );
    let paired = |p: &std::result::Result<strata_stats::Paired, String>, ratio: bool| match p {
        Ok(p) if ratio => format!(
            "{:.3} | {:.3} to {:.3} (bootstrap {:.3} to {:.3}) | {}",
            p.mean.exp(),
            p.t_interval.0.exp(),
            p.t_interval.1.exp(),
            p.bootstrap_interval.0.exp(),
            p.bootstrap_interval.1.exp(),
            strata_stats::p_value(p.p_greater)
        ),
        Ok(p) => format!(
            "{:+.4} | {:+.4} to {:+.4}",
            p.mean, p.t_interval.0, p.t_interval.1
        ),
        Err(why) if ratio => format!("none: {why} | | "),
        Err(why) => format!("none: {why} | "),
    };
    for m in measured {
        s += &format!("**{}**: {}.\n\n", m.variant, m.verdict);
        s += "| size | budgets counted | multiplier | 95% interval (t) | p for > 1 | loss difference | 95% interval |\n\
               |---|---|---|---|---|---|---|\n";
        for size in &m.sizes {
            s += &format!(
                "| L{} d{} | {} | {} | {} |\n",
                size.n_layer,
                size.d_model,
                if size.counted_budgets.is_empty() {
                    "none".to_owned()
                } else {
                    size.counted_budgets
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                paired(&size.log_multiplier, true),
                paired(&size.loss_difference, false)
            );
        }
        s += &format!(
            "| whole grid | | {} | {} |\n\n",
            paired(&m.log_multiplier, true),
            paired(&m.loss_difference, false)
        );
        let refused: Vec<String> = m
            .sizes
            .iter()
            .flat_map(|size| {
                size.cells.iter().filter_map(move |c| {
                    c.multiplier.as_ref().err().map(|why| {
                        format!(
                            "L{} d{}, {} tokens, seed {}: {why}",
                            size.n_layer, size.d_model, c.token_budget, c.seed
                        )
                    })
                })
            })
            .collect();
        if !refused.is_empty() {
            s += &format!(
                "Cells without a reading ({}):\n\n{}\n\n",
                refused.len(),
                refused
                    .iter()
                    .map(|r| format!("- {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    s
}

/// True when no multiplier of any reading is reported.
fn intervals_empty(analysis: &Analysis) -> bool {
    analysis.measured.iter().all(|m| m.log_multiplier.is_err())
        && !analysis.multipliers.iter().any(|(_, m)| {
            matches!(m.in_grid, Outcome::Reported(_)) || matches!(m.frontier, Outcome::Reported(_))
        })
}
