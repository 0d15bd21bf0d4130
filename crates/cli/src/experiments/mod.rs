//! `strata experiment`: the layer-repetition and fine-tune-merging studies, over several
//! seeds, with tables and plots written into a docs folder. Every run lives in its own run
//! folder; a run whose `summary.json` says it finished is reused, so an interrupted study
//! picks up where it stopped.

mod growth;
mod merging;
mod repetition;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use strata_core::ModelConfig;
use strata_plots::comparison::{Series, plot_lines};
use strata_tensor::{Error, Result};
use strata_train::metrics::read_records;
use strata_train::{RunConfig, RunOptions, RunSummary};

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
    overrides: Vec<String>,
    out: PathBuf,
    init_from: Option<PathBuf>,
}

impl<'a> Run<'a> {
    /// A run of the study's recipe with `overrides`, writing into `out`.
    fn new(args: &'a StudyArgs, out: PathBuf, overrides: &[String]) -> Self {
        Self {
            args,
            overrides: overrides.to_vec(),
            out,
            init_from: None,
        }
    }

    /// Starts from a checkpoint's weights and model.
    fn init_from(mut self, checkpoint: &Path) -> Self {
        self.init_from = Some(checkpoint.to_path_buf());
        self
    }

    /// Trains, or reuses a finished run in the same folder that was trained with the same
    /// config (a run folder left by other settings is trained again).
    fn train(self, stop: &Arc<AtomicBool>) -> Result<RunSummary> {
        let config = RunConfig::load(&self.args.config, &self.overrides)?;
        if let Some(done) = RunSummary::finished(&self.out) {
            let saved = RunConfig::load(&self.out.join("config.toml"), &[]).ok();
            if saved.is_some_and(|saved| same_settings(saved, &config, self.init_from.is_some())) {
                tracing::info!(run = %self.out.display(), "reusing a finished run");
                return Ok(done);
            }
            tracing::warn!(run = %self.out.display(), "a finished run with other settings; training again");
        }
        let mut options = RunOptions::new(&self.args.config, &self.out);
        options.overwrite = true;
        options.progress = !self.args.quiet;
        options.stop = stop.clone();
        options.init_from = self.init_from;
        let summary = strata_train::train(config, &options)?;
        if summary.interrupted || stop.load(Ordering::SeqCst) {
            return Err(Error::Invalid(format!(
                "interrupted in {}; run the same command again to continue the study",
                self.out.display()
            )));
        }
        Ok(summary)
    }
}

/// True when a run folder's `config.toml` describes the run `requested` asks for: the
/// vocabulary as the tokenizer resolved it, and the model of a checkpoint for `--init-from`
/// runs, which the folder records in place of the recipe's.
fn same_settings(mut saved: RunConfig, requested: &RunConfig, init_from: bool) -> bool {
    if init_from {
        saved.model = requested.model.clone();
    } else if requested.model.vocab_size == 0 {
        saved.model.vocab_size = 0;
    }
    saved == *requested
}

/// Overrides that fix a run's length, seed and evaluation cadence.
fn schedule(args: &StudyArgs, steps: u64, seed: u64) -> Vec<String> {
    vec![
        format!("train.max_iters={steps}"),
        format!("train.lr_decay_iters={steps}"),
        format!("train.seed={seed}"),
        format!("train.eval_interval={}", args.eval_interval),
    ]
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
    Ok(strata_train::checkpoint::load(run)?.meta.config.model)
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
        "strata experiment {study} --config {} --seeds {} --steps {} --eval-interval {}",
        args.config.display(),
        args.seeds,
        args.steps,
        args.eval_interval
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_run_is_reused_only_with_the_same_settings() {
        let recipe =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/nanogpt-cpu.toml");
        let requested =
            RunConfig::load(&recipe, &["train.learning_rate=0.002".to_owned()]).unwrap();
        let mut saved = requested.clone();
        saved.model.vocab_size = 65; // as the trainer records it
        assert!(same_settings(saved.clone(), &requested, false));
        let mut other_lr = saved.clone();
        other_lr.train.learning_rate = 0.008;
        assert!(!same_settings(other_lr, &requested, false));
        let mut other_model = saved.clone();
        other_model.model.n_layer = 2;
        assert!(!same_settings(other_model.clone(), &requested, false));
        // An --init-from run records its checkpoint's model.
        assert!(same_settings(other_model, &requested, true));
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
