//! `strata experiment`: the layer-repetition and fine-tune-merging studies, over several
//! seeds, with tables and plots written into a docs folder. Every run lives in its own run
//! folder and goes through the run registry that sweep and compare use: a finished run with
//! the same settings is reused and an interrupted one continued, so an interrupted study
//! picks up where it stopped.

mod growth;
mod merging;
mod repetition;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use strata_core::ModelConfig;
use strata_plots::comparison::{Series, plot_lines};
use strata_stats::{paired, resolvable};
use strata_sweep::registry::{self, Job, Launch};
use strata_tensor::{Error, Result};
use strata_train::evaluation::EvalTokens;
use strata_train::metrics::read_records;
use strata_train::{RunConfig, RunSummary};

/// Options shared by the studies.
#[derive(Clone, Debug, clap::Args)]
pub struct StudyArgs {
    /// The recipe every run starts from.
    #[arg(long, default_value = "configs/nanogpt-cpu.toml")]
    pub config: PathBuf,
    /// Seeds per variant (at least 1).
    #[arg(long, default_value_t = 3, value_parser = crate::bounds::count_u64(crate::bounds::MAX_STUDY_COUNT))]
    pub seeds: u64,
    /// Training steps of a phase (see the study's description; at least 1).
    #[arg(long, default_value_t = 600, value_parser = crate::bounds::count_u64(crate::bounds::MAX_STUDY_COUNT))]
    pub steps: u64,
    /// Evaluate every this many steps (at least 1).
    #[arg(long, default_value_t = 100, value_parser = crate::bounds::count_u64(crate::bounds::MAX_STUDY_COUNT))]
    pub eval_interval: u64,
    /// Validation tokens of every evaluation: one fixed slice of the held-out split, the same
    /// for every run and seed (at least 1; the whole split when it is shorter).
    #[arg(long, default_value_t = 32768, value_parser = crate::bounds::count_u64(crate::bounds::MAX_EVAL_TOKENS))]
    pub eval_tokens: u64,
    /// Folder of the run folders.
    #[arg(long, default_value = "runs/experiments")]
    pub out: PathBuf,
    /// Folder for the tables and plots.
    #[arg(long, default_value = "docs/experiments")]
    pub docs: PathBuf,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The studies.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Study {
    /// A trained 2-layer model grown to 4 layers by `1-1-2-2`, `1-2-1-2` and identity
    /// insertion, trained on for the same steps, against a 4-layer model trained from scratch
    /// with the same total compute.
    Repetition(StudyArgs),
    /// One base fine-tuned on two halves of the corpus, merged by every method; validation
    /// loss on each half.
    Merging(StudyArgs),
    /// Growth paths from smaller models (identity blocks, wider residual stream and heads,
    /// wider MLP) against the final size trained from scratch with a tuned learning rate, all
    /// at the same training FLOPs.
    Growth(StudyArgs),
}

/// Runs a study.
pub fn run(study: Study, stop: &Arc<AtomicBool>) -> Result<()> {
    match study {
        Study::Repetition(args) => repetition::run(&args, stop),
        Study::Merging(args) => merging::run(&args, stop),
        Study::Growth(args) => growth::run(&args, stop),
    }
}

/// One training run of a study.
struct Run<'a> {
    args: &'a StudyArgs,
    config: RunConfig,
    out: PathBuf,
    init_from: Option<PathBuf>,
}

impl<'a> Run<'a> {
    /// A run of `config` (the study's recipe with the run's own settings), writing into `out`.
    fn new(args: &'a StudyArgs, out: PathBuf, config: RunConfig) -> Self {
        Self {
            args,
            config,
            out,
            init_from: None,
        }
    }

    /// Starts from a checkpoint's weights and model.
    fn init_from(mut self, checkpoint: &Path) -> Self {
        self.init_from = Some(checkpoint.to_path_buf());
        self
    }

    /// Trains through the run registry (`strata_sweep::registry`, as sweep and compare do):
    /// a finished run in the folder with the same settings is reused, an interrupted one
    /// continued from its latest checkpoint, one left by other settings trained again.
    fn train(self, stop: &Arc<AtomicBool>) -> Result<RunSummary> {
        self.config
            .validate(&self.args.config.display().to_string())?;
        let job = Job {
            id: self.out.display().to_string(),
            dir: self.out.clone(),
            config: self.config,
            branch_of: None,
            init_from: self.init_from,
        };
        if registry::is_done(&job) {
            tracing::info!(run = %job.id, "reusing a finished run");
        } else {
            let launch = Launch {
                jobs: 1,
                executable: None,
                progress: !self.args.quiet,
                stop: stop.clone(),
            };
            registry::train_jobs(&[&job], &launch, "study")?;
        }
        match RunSummary::finished(&self.out) {
            Some(summary) if !stop.load(Ordering::SeqCst) => Ok(summary),
            _ => Err(Error::Invalid(format!(
                "interrupted in {}; run the same command again to continue the study",
                self.out.display()
            ))),
        }
    }
}

/// The study's recipe, as its config file gives it.
fn recipe(args: &StudyArgs) -> Result<RunConfig> {
    RunConfig::load(&args.config, &[])
}

/// `recipe` with a run's length, seed, evaluation cadence and evaluation slice fixed.
fn scheduled(args: &StudyArgs, recipe: &RunConfig, steps: u64, seed: u64) -> RunConfig {
    let mut config = recipe.clone();
    let t = &mut config.train;
    t.max_iters = steps;
    t.lr_decay_iters = Some(steps);
    t.seed = seed;
    t.eval_interval = args.eval_interval;
    t.eval_tokens = Some(EvalTokens::Count(args.eval_tokens));
    config
}

/// `(training FLOPs, val_loss)` of every evaluation of a run, as its metrics counted them.
fn val_curve_by_flops(run: &Path) -> Result<Vec<(f64, f64)>> {
    Ok(read_records(&run.join("metrics.jsonl"))?
        .into_iter()
        .filter(|r| r.kind == "eval")
        .filter_map(|r| Some((r.train_flops?, r.val_loss?)))
        .collect())
}

/// `(step, val_loss)` of every evaluation of a run.
fn val_curve(run: &Path) -> Result<Vec<(u64, f64)>> {
    Ok(read_records(&run.join("metrics.jsonl"))?
        .into_iter()
        .filter(|r| r.kind == "eval")
        .filter_map(|r| r.val_loss.map(|v| (r.step, v)))
        .collect())
}

/// The model config a finished run trained.
fn trained_model(run: &Path) -> Result<ModelConfig> {
    Ok(strata_train::checkpoint::load_meta(run)?.config.model)
}

/// One variant's results over the seeds.
struct Outcome {
    label: String,
    final_val: Vec<f64>,
    flops: f64,
    wall_s: Vec<f64>,
    /// Mean validation loss against cumulative training FLOPs.
    curve: Vec<(f64, f64)>,
}

/// Adds one seed's result to the variant called `label`, averaging curves point by point.
fn record(
    outcomes: &mut Vec<Outcome>,
    label: &str,
    final_val: Option<f64>,
    flops: f64,
    wall_s: f64,
    curve: Vec<(f64, f64)>,
) {
    let index = match outcomes.iter().position(|o| o.label == label) {
        Some(i) => i,
        None => {
            outcomes.push(Outcome {
                label: label.to_owned(),
                final_val: Vec::new(),
                flops,
                wall_s: Vec::new(),
                curve: vec![(0.0, 0.0); curve.len()],
            });
            outcomes.len() - 1
        }
    };
    let o = &mut outcomes[index];
    let seeds = o.final_val.len() as f64;
    o.final_val.push(final_val.unwrap_or(f64::NAN));
    o.wall_s.push(wall_s);
    for (mean, (x, y)) in o.curve.iter_mut().zip(curve) {
        *mean = (x, (mean.1 * seeds + y) / (seeds + 1.0));
    }
}

/// Plots every outcome's mean validation curve against training FLOPs into
/// `<docs>/<stem>.png` and `.svg`.
fn plot_outcomes(args: &StudyArgs, stem: &str, title: &str, outcomes: &[Outcome]) -> Result<()> {
    let series: Vec<Series> = outcomes
        .iter()
        .map(|o| Series {
            label: o.label.clone(),
            points: o.curve.clone(),
        })
        .collect();
    plot_lines(
        &args.docs,
        stem,
        title,
        ("training FLOPs", "validation loss"),
        &series,
    )
}

/// A markdown table row: label, final loss mean ± std, FLOPs, mean wall seconds.
fn outcome_row(o: &Outcome) -> String {
    let wall = o.wall_s.iter().sum::<f64>() / o.wall_s.len().max(1) as f64;
    format!(
        "| {} | {} | {:.3e} | {wall:.0} |\n",
        o.label,
        pm(&o.final_val),
        o.flops
    )
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// `mean ± std` with four decimals.
fn pm(values: &[f64]) -> String {
    let (m, s) = mean_std(values);
    format!("{m:.4} ± {s:.4}")
}

/// Bootstrap resamples of the paired intervals.
const RESAMPLES: usize = 2000;

/// A markdown section with every variant's final validation loss minus the baseline's,
/// paired by seed (the same token stream and evaluation slice), with its 95% t and
/// bootstrap intervals and a verdict that never calls a winner inside the interval.
/// Variants whose label `skip` accepts are left out.
fn paired_section(outcomes: &[Outcome], baseline: &str, skip: impl Fn(&str) -> bool) -> String {
    let Some(base) = outcomes.iter().find(|o| o.label == baseline) else {
        return String::new();
    };
    let mut s = format!(
        "\n## Paired differences from `{baseline}`\n\n\
         Final validation loss of each variant minus the baseline's with the same seed \
         (the same training batches and evaluation tokens), mean over seeds with its 95% \
         Student-t and percentile-bootstrap ({RESAMPLES} resamples, seed 1) intervals. A \
         difference is called only when both intervals exclude 0; otherwise the verdict is \
         \"no difference resolved\". With seeds n and spread sd, the smallest difference \
         this design resolves with 80% power is shown too.\n\n\
         | variant | mean difference | 95% t interval | 95% bootstrap | sd | resolvable | verdict |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for o in outcomes
        .iter()
        .filter(|o| o.label != baseline && !skip(&o.label))
    {
        let diffs: Vec<f64> = o
            .final_val
            .iter()
            .zip(&base.final_val)
            .map(|(v, b)| v - b)
            .collect();
        match paired(&diffs, RESAMPLES, 1) {
            Some(p) => {
                let verdict = if !p.excludes_zero() {
                    "no difference resolved"
                } else if p.mean < 0.0 {
                    "lower loss than the baseline"
                } else {
                    "higher loss than the baseline"
                };
                s += &format!(
                    "| {} | {:+.4} | {:+.4} to {:+.4} | {:+.4} to {:+.4} | {:.4} | {:.4} | {verdict} |\n",
                    o.label,
                    p.mean,
                    p.t_interval.0,
                    p.t_interval.1,
                    p.bootstrap_interval.0,
                    p.bootstrap_interval.1,
                    p.sd,
                    resolvable(p.sd, p.n),
                );
            }
            None => {
                s += &format!(
                    "| {} | {} | - | - | - | - | no interval: it needs at least 2 finished seeds |\n",
                    o.label,
                    diffs.first().map_or("-".to_owned(), |d| format!("{d:+.4}"))
                )
            }
        }
    }
    s
}

/// Writes a markdown file into the docs folder.
fn write_doc(args: &StudyArgs, name: &str, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(&args.docs).map_err(Error::io(&args.docs))?;
    let path = args.docs.join(name);
    std::fs::write(&path, text).map_err(Error::io(&path))?;
    Ok(path)
}

/// The command line that reproduces a study.
fn command_line(study: &str, args: &StudyArgs) -> String {
    format!(
        "strata experiment {study} --config {} --seeds {} --steps {} --eval-interval {} \
         --eval-tokens {}",
        args.config.display(),
        args.seeds,
        args.steps,
        args.eval_interval,
        args.eval_tokens
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outcome with these final losses.
    fn outcome(label: &str, final_val: &[f64]) -> Outcome {
        Outcome {
            label: label.to_owned(),
            final_val: final_val.to_vec(),
            flops: 1.0,
            wall_s: vec![1.0; final_val.len()],
            curve: Vec::new(),
        }
    }

    #[test]
    fn paired_differences_call_a_winner_only_outside_the_noise() {
        let base = outcome("base", &[2.00, 2.10, 1.90, 2.05, 1.95]);
        // Unpaired spread 0.08, but every seed is 0.010 ± 0.001 lower: resolved.
        let better = outcome("better", &[1.990, 2.091, 1.889, 2.040, 1.941]);
        // Differences of both signs: not resolved.
        let noisy = outcome("noisy", &[2.01, 2.09, 1.91, 2.04, 1.95]);
        let skipped = outcome("skipped", &[9.0; 5]);
        let section = paired_section(&[base, better, noisy, skipped], "base", |l| l == "skipped");
        let row = |name: &str| {
            section
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap()
                .to_owned()
        };
        let better = row("better");
        assert!(better.contains("| -0.0098 |"), "{better}");
        assert!(
            better.ends_with("| lower loss than the baseline |"),
            "{better}"
        );
        assert!(row("noisy").ends_with("| no difference resolved |"));
        assert!(!section.contains("| skipped |"));
        let single = paired_section(
            &[outcome("base", &[2.0]), outcome("v", &[1.9])],
            "base",
            |_| false,
        );
        assert!(single.contains("| v | -0.1000 |") && single.contains("at least 2 finished seeds"));
    }

    #[test]
    fn mean_and_sample_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
        assert_eq!(pm(&[1.0, 3.0]), "2.0000 ± 1.4142");
    }
}
