//! The growth study: does growing a small model to the final size beat training the final
//! size from scratch, at the same training FLOPs?
//!
//! The final size is the recipe's model. The scratch baseline gets a small learning-rate
//! sweep (seed 1; every group's rate scaled together), then its best rates for every seed.
//! Each growth path starts from a smaller model, grows to the final size by the run's
//! `[[growth]]` schedule after half the scratch run's steps, and trains on until it has spent
//! the scratch run's FLOPs (counted by `strata_core::flops` for the model of every step). Growth paths use the baseline's tuned
//! learning rate (not tuned for themselves), so the learning rate is not a confound and any
//! tuning advantage stays with the baseline.

use super::{
    Outcome, Run, StudyArgs, command_line, outcome_row, paired_section, plot_outcomes, recipe,
    record, scheduled, trained_model, val_curve_by_flops, write_doc,
};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_core::ModelConfig;
use strata_core::flops::train_flops_per_step;
use strata_growth::GrowthOp;
use strata_tensor::Result;
use strata_train::growth_schedule::GrowthEvent;
use strata_train::optimizer::{OptimizerKind, ParamGroup};
use strata_train::{RunConfig, RunSummary};

/// Learning rates of the scratch baseline's sweep, as multiples of the recipe's.
const LR_MULTIPLES: [f64; 3] = [0.5, 1.0, 2.0];

/// How often the sweep may widen when its best rate sits at an edge (a factor of 2 each
/// time, so the grid can reach 2^5 times beyond the recipe's rate either way).
const MAX_EXTENSIONS: usize = 4;

/// Whether the sweep's best rate is interior (a worse rate on both sides), in words, naming
/// the points on both sides.
fn interior_statement(sweep: &[SweepPoint]) -> String {
    let best = best_index(sweep);
    let show = |p: &SweepPoint| format!("{} ({:.4})", rate(p.lr), p.final_val);
    if best > 0 && best + 1 < sweep.len() {
        format!(
            "The chosen rate {} is interior to the grid: the rates on either side score worse, \
             {} below and {} above.",
            show(&sweep[best]),
            show(&sweep[best - 1]),
            show(&sweep[best + 1]),
        )
    } else {
        format!(
            "The chosen rate {} sits at the edge of the grid after {MAX_EXTENSIONS} \
             extensions, so the baseline is not shown to be tuned: a rate beyond the grid may \
             score better.",
            show(&sweep[best]),
        )
    }
}

/// A learning rate in two significant digits, `8e-3` or `1.6e-2`: distinct for every rate
/// the sweep's doublings and halvings of a 1- or 2-digit rate produce.
fn rate(lr: f64) -> String {
    format!("{lr:.1e}").replace(".0e", "e")
}

/// The index of the lowest final loss.
fn best_index(sweep: &[SweepPoint]) -> usize {
    sweep
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.final_val.total_cmp(&b.1.final_val))
        .map_or(0, |(i, _)| i)
}

/// A growth path: label, folder, how the starting model differs from the final one, and the
/// growth operations that take it to the final size.
struct Path {
    label: &'static str,
    folder: &'static str,
    shrink: fn(&mut ModelConfig, &ModelConfig),
    ops: fn(&ModelConfig) -> Vec<GrowthOp>,
}

/// Symmetry-breaking noise of every Net2WiderNet operation of the study.
const NOISE: f64 = 0.01;

/// The growth paths compared, each ending at the recipe's size.
fn paths() -> Vec<Path> {
    vec![
        Path {
            label: "deeper: half the layers, identity blocks inserted",
            folder: "deepen",
            shrink: |small, m| small.n_layer = m.n_layer / 2,
            ops: |m| {
                vec![GrowthOp::InsertBlocks {
                    after: (1..=m.n_layer / 2).collect(),
                }]
            },
        },
        Path {
            label: "wider: half the residual width and heads, Net2WiderNet",
            folder: "widen",
            shrink: |small, m| {
                small.d_model = m.d_model / 2;
                small.head_dim = Some(m.head_dim() / 2);
                small.mlp_hidden = Some(m.mlp_hidden() / 2);
            },
            ops: |m| {
                vec![
                    GrowthOp::WidenResidual {
                        d_model: m.d_model,
                        noise: NOISE,
                        widen_heads: false,
                    },
                    GrowthOp::AddHeads {
                        n_head: 2 * m.n_head,
                        noise: NOISE,
                    },
                    GrowthOp::WidenMlp {
                        hidden: m.mlp_hidden(),
                        noise: NOISE,
                    },
                ]
            },
        },
        Path {
            label: "wider MLP: a quarter of the MLP units, Net2WiderNet",
            folder: "widen-mlp",
            shrink: |small, m| small.mlp_hidden = Some(m.mlp_hidden() / 4),
            ops: |m| {
                vec![GrowthOp::WidenMlp {
                    hidden: m.mlp_hidden(),
                    noise: NOISE,
                }]
            },
        },
    ]
}

/// One scratch run of the sweep.
struct SweepPoint {
    /// Every learning rate of the recipe times this.
    multiple: f64,
    /// The hidden matrices' peak rate at that multiple (Muon's with the Muon optimizer).
    lr: f64,
    final_val: f64,
}

/// Runs the study and writes `growth.md` and `growth.png`/`.svg`.
pub fn run(args: &StudyArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let root = args.out.join("growth");
    let recipe = recipe(args)?;
    let t = &recipe.train;
    let steps = args.steps;
    // Every group's peak and final learning rate scaled together.
    let at_rate = |mut config: RunConfig, multiple: f64| {
        config.train.scale_learning_rates(multiple);
        config
    };
    let hidden_lr = |multiple: f64| t.peak_lr(ParamGroup::Hidden) * multiple;
    // (run folder, summary, the run's changes to the recipe)
    let scratch_run =
        |seed: u64, multiple: f64| -> Result<(std::path::PathBuf, RunSummary, Vec<String>)> {
            let dir = root.join(format!(
                "scratch-lr{}-seed-{seed}",
                rate(hidden_lr(multiple))
            ));
            let config = at_rate(scheduled(args, &recipe, steps, seed), multiple);
            let changes = config.changes_from(&recipe);
            let summary = Run::new(args, dir.clone(), config).train(stop)?;
            Ok((dir, summary, changes))
        };
    // The sweep widens by factors of 2 while its best rate sits at an edge,
    // so that the baseline's rate is a real optimum of the grid.
    let mut sweep: Vec<SweepPoint> = Vec::new();
    let mut multiples = LR_MULTIPLES.to_vec();
    for _ in 0..=MAX_EXTENSIONS {
        for &multiple in &multiples {
            if sweep.iter().any(|p| p.multiple == multiple) {
                continue;
            }
            let (_, summary, _) = scratch_run(1, multiple)?;
            sweep.push(SweepPoint {
                multiple,
                lr: hidden_lr(multiple),
                final_val: summary.final_val_loss.unwrap_or(f64::INFINITY),
            });
        }
        sweep.sort_by(|a, b| a.multiple.total_cmp(&b.multiple));
        let best = best_index(&sweep);
        let next = if best + 1 == sweep.len() {
            sweep[best].multiple * 2.0
        } else if best == 0 {
            sweep[best].multiple / 2.0
        } else {
            break;
        };
        multiples.push(next);
    }
    let best = &sweep[best_index(&sweep)];
    let (best_multiple, best_lr) = (best.multiple, best.lr);
    let (rate_name, _) = rate_words(&recipe);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut runs: Vec<RunRow> = Vec::new();
    let mut final_model = None;
    for seed in 1..=args.seeds {
        let (dir, summary, changes) = scratch_run(seed, best_multiple)?;
        let model = trained_model(&dir)?;
        let f_final = train_flops_per_step(&model, t.batch_size, model.block_size);
        let label = scratch_label(rate_name, best_lr);
        record(
            &mut outcomes,
            &label,
            summary.final_val_loss,
            summary.train_flops,
            summary.wall_s,
            val_curve_by_flops(&dir)?,
        );
        runs.push(RunRow::new(&label, seed, steps, changes, &summary));
        let budget = f_final * steps as f64;
        for path in paths() {
            let mut small = model.clone();
            (path.shrink)(&mut small, &model);
            small.validate(&args.config.display().to_string())?;
            let f_small = train_flops_per_step(&small, t.batch_size, small.block_size);
            let grow_at = steps / 2;
            let rest = ((budget - grow_at as f64 * f_small) / f_final).round() as u64;
            let total = grow_at + rest;
            let mut config = at_rate(scheduled(args, &recipe, total, seed), best_multiple);
            (path.shrink)(&mut config.model, &model);
            config.growth = (path.ops)(&model)
                .into_iter()
                .map(|op| GrowthEvent { step: grow_at, op })
                .collect();
            let changes = config.changes_from(&recipe);
            let dir = root.join(format!("{}-seed-{seed}", path.folder));
            let summary = Run::new(args, dir.clone(), config).train(stop)?;
            record(
                &mut outcomes,
                path.label,
                summary.final_val_loss,
                summary.train_flops,
                summary.wall_s,
                val_curve_by_flops(&dir)?,
            );
            runs.push(RunRow::new(path.label, seed, total, changes, &summary));
        }
        final_model = Some(model);
    }
    plot_outcomes(
        args,
        "growth",
        "Growing to the recipe's size vs training it from scratch (mean over seeds)",
        &outcomes,
    )?;
    let doc = report(
        args,
        &recipe,
        final_model.as_ref(),
        &sweep,
        best_lr,
        &outcomes,
        &runs,
    );
    let path = write_doc(args, "growth.md", &doc)?;
    tracing::info!(doc = %path.display(), "wrote the growth study");
    Ok(())
}

/// The scratch baseline's label: `rate_name` and the chosen rate.
fn scratch_label(rate_name: &str, lr: f64) -> String {
    format!("from scratch ({rate_name} {}, best of the sweep)", rate(lr))
}

/// What the sweep's rates are called (the hidden matrices' rate, Muon's under Muon) and what
/// the sweep scales, in words.
fn rate_words(recipe: &RunConfig) -> (&'static str, &'static str) {
    match recipe.train.optimizer.kind {
        OptimizerKind::Muon => (
            "Muon lr",
            "Muon's rate for the hidden matrices, every AdamW group's rate scaled with it",
        ),
        OptimizerKind::Adamw => ("lr", "every group's rate scaled with it"),
    }
}

/// One run, as listed in the report.
struct RunRow {
    label: String,
    seed: u64,
    steps: u64,
    overrides: Vec<String>,
    final_val: Option<f64>,
    flops: f64,
    params: usize,
    wall_s: f64,
}

impl RunRow {
    /// The row of a finished run.
    fn new(
        label: &str,
        seed: u64,
        steps: u64,
        overrides: Vec<String>,
        summary: &RunSummary,
    ) -> Self {
        Self {
            label: label.to_owned(),
            seed,
            steps,
            overrides: overrides
                .into_iter()
                .filter(|o| !o.starts_with("train.seed") && !o.starts_with("train.eval_interval"))
                .collect(),
            final_val: summary.final_val_loss,
            flops: summary.train_flops,
            params: summary.params.total,
            wall_s: summary.wall_s,
        }
    }
}

/// The markdown report: results, sweep, every run's settings and the recipe.
fn report(
    args: &StudyArgs,
    recipe: &RunConfig,
    final_model: Option<&ModelConfig>,
    sweep: &[SweepPoint],
    best_lr: f64,
    outcomes: &[Outcome],
    runs: &[RunRow],
) -> String {
    let params = runs.first().map_or(0, |r| r.params);
    let mut s = format!(
        "# Growth at equal compute\n\n\
         Command: `{}`.\n\n\
         The final size is the recipe's model (`{config}`, {params} parameters). The baseline \
         trains it from scratch for {steps} steps. Its learning rate is the best of a sweep over \
         {lrs} ({what}; seed 1, peak and final rate scaled together; the sweep widens by \
         factors of 2 while its best rate sits at an edge). Each growth path starts smaller, \
         grows at step {half} by the run's `[[growth]]` schedule (`strata train` applies it \
         mid-run and carries the optimizer's state, AdamW's moments and Muon's momentum; see \
         `strata_growth`), and trains on until it \
         has spent the baseline's training FLOPs. FLOPs are counted for the model of each step. \
         Growth paths use the baseline's chosen learning rate, not tuned for themselves. Every run uses the recipe's \
         batch, context and warmup, and a cosine over its own length. Evaluation runs every \
         {eval} steps on the same {eval_tokens} held-out tokens for every run and seed. Seeds 1 to {seeds}. Run \
         folders, each with its full `config.toml`: `{out}/growth/`.\n\n\
         | variant | final val loss (mean ± std) | training FLOPs | wall s (mean) |\n\
         |---|---|---|---|\n",
        command_line("growth", args),
        config = args.config.display(),
        steps = args.steps,
        what = rate_words(recipe).1,
        lrs = sweep
            .iter()
            .map(|p| rate(p.lr))
            .collect::<Vec<_>>()
            .join(", "),
        half = args.steps / 2,
        eval = args.eval_interval,
        eval_tokens = args.eval_tokens,
        seeds = args.seeds,
        out = args.out.display(),
    );
    for o in outcomes {
        s += &outcome_row(o);
    }
    s += &paired_section(
        outcomes,
        &scratch_label(rate_words(recipe).0, best_lr),
        |_| false,
    );
    s += "\n![validation loss against training FLOPs](growth.png)\n\n\
          ## Learning-rate sweep of the baseline (seed 1)\n\n\
          | peak learning rate | final val loss |\n|---|---|\n";
    for p in sweep {
        let mark = if p.lr == best_lr { " (chosen)" } else { "" };
        s += &format!("| {}{mark} | {:.4} |\n", rate(p.lr), p.final_val);
    }
    s += &format!("\n{}\n", interior_statement(sweep));
    s += "\n## Every run\n\nEach run is the recipe below with these `--set` overrides \
          (plus `train.seed` and `train.eval_interval`).\n\n\
          | variant | seed | steps | final params | final val loss | training FLOPs | wall s | overrides |\n\
          |---|---|---|---|---|---|---|---|\n";
    for r in runs {
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.3e} | {:.0} | `{}` |\n",
            r.label,
            r.seed,
            r.steps,
            r.params,
            r.final_val.map_or("-".to_owned(), |v| format!("{v:.4}")),
            r.flops,
            r.wall_s,
            r.overrides.join(" ").replace('|', "\\|"),
        );
    }
    let mut recipe = recipe.clone();
    if let Some(model) = final_model {
        recipe.model = model.clone();
    }
    s += &format!(
        "\n## The recipe (final-size model, vocabulary resolved)\n\n```toml\n{}```\n",
        recipe.to_toml()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep with these (rate, loss) points.
    fn sweep(points: &[(f64, f64)]) -> Vec<SweepPoint> {
        points
            .iter()
            .map(|&(lr, final_val)| SweepPoint {
                multiple: lr / 4e-3,
                lr,
                final_val,
            })
            .collect()
    }

    #[test]
    fn the_report_says_whether_the_chosen_rate_is_interior() {
        let interior = interior_statement(&sweep(&[(4e-3, 1.94), (8e-3, 1.93), (1.6e-2, 1.99)]));
        assert!(interior.contains("8e-3 (1.9300) is interior"), "{interior}");
        assert!(
            interior.contains("4e-3 (1.9400) below and 1.6e-2 (1.9900) above"),
            "{interior}"
        );
        assert_eq!(rate(1e-3 * 2f64.powi(5)), "3.2e-2");
        let edge = interior_statement(&sweep(&[(4e-3, 1.94), (8e-3, 1.93)]));
        assert!(edge.contains("sits at the edge") && edge.contains("not shown to be tuned"));
        let low_edge = interior_statement(&sweep(&[(4e-3, 1.90), (8e-3, 1.93)]));
        assert!(
            low_edge.contains("4e-3 (1.9000) sits at the edge"),
            "{low_edge}"
        );
    }
}
