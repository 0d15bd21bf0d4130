//! `strata`: train, evaluate, sample and compare small transformers.

mod bounds;
mod compare;
mod demo;
mod errors;
mod experiments;
mod inspect;
mod jobs;
mod launch;
mod merge_run;
mod signals;
mod study_args;
mod sweep;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use strata_core::SampleOptions;
use strata_tensor::{DeviceChoice, Result};
use strata_train::{RunConfig, RunOptions};

/// Architecture research on small transformers.
#[derive(Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Train a model described by a TOML config.
    Train {
        /// The run config (see configs/).
        #[arg(long)]
        config: PathBuf,
        /// Override a field: `--set train.max_iters=500` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run folder (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from a checkpoint; without a value, the run folder's latest one.
        #[arg(long, num_args = 0..=1)]
        resume: Option<Option<PathBuf>>,
        /// Start from a checkpoint's weights, model and tokenizer (e.g. a merged or expanded
        /// model) with a fresh optimizer at step 0.
        #[arg(long, value_name = "CHECKPOINT")]
        init_from: Option<PathBuf>,
        /// With --init-from: keep this config's model, the checkpoint's plus depth methods
        /// ([model.dwa], [model.depth]), whose new weights start at their init.
        #[arg(long, requires = "init_from")]
        retrofit: bool,
        /// Replace an existing run in the run folder.
        #[arg(long)]
        overwrite: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Train with N processes on this machine (data parallel over libtorch's c10d, Gloo):
        /// each rank takes an equal share of every batch. Under torchrun or Slurm, leave it
        /// out: the ranks read RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
        #[arg(long, value_name = "N", value_parser = bounds::count(1024))]
        nproc: Option<usize>,
    },
    /// Evaluate a checkpoint (or a run folder's latest) on its run's fixed batches.
    Eval {
        /// Checkpoint folder or run folder.
        checkpoint: PathBuf,
        /// Batches per split (default: the run's eval_iters; at most what the corpus fills).
        #[arg(long, value_parser = bounds::batches())]
        batches: Option<usize>,
        /// Device: cpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the train split's evaluation batches (safetensors `x`, `y`) to this
        /// file, to recompute the train loss with another implementation.
        #[arg(long, value_name = "FILE")]
        save_batches: Option<PathBuf>,
    },
    /// Train runs from job files (`job.json`) that `sweep` or `compare --write-jobs` wrote:
    /// finished runs are skipped, runs another process is training are left to it.
    Job {
        /// Job files, trained one after another.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Generate text from a checkpoint.
    Sample {
        /// Checkpoint folder or run folder.
        checkpoint: PathBuf,
        /// Text to continue.
        #[arg(long, default_value = "\n")]
        prompt: String,
        /// Tokens to generate (1 to 1000000).
        #[arg(long, default_value_t = 200, value_parser = bounds::count(bounds::MAX_SAMPLE_TOKENS))]
        tokens: usize,
        /// Softmax temperature, finite and >= 0 (0: greedy).
        #[arg(long, default_value_t = 0.8, value_parser = bounds::temperature())]
        temperature: f64,
        /// Sample among the k most likely tokens (k >= 1).
        #[arg(long, value_parser = bounds::count(u64::MAX))]
        top_k: Option<usize>,
        /// Sampling seed.
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Device: cpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Print the prompt's and the continuation's token ids and text as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint's model (weights, architecture, tokenizer) in another layout.
    Export {
        /// Checkpoint folder or run folder.
        checkpoint: PathBuf,
        /// `hf-gpt2` (Hugging Face transformers' GPT2LMHeadModel) or `strata` (any model).
        #[arg(long)]
        format: strata_train::interop::ExportFormat,
        /// The folder to write.
        out: PathBuf,
        /// Replace an earlier export in `out`.
        #[arg(long)]
        overwrite: bool,
    },
    /// Describe a checkpoint: config, parameters, step, losses, tokenizer.
    Info {
        /// Checkpoint folder or run folder.
        checkpoint: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Merge fine-tunes of one base model and/or build a model by a layer plan.
    Merge {
        /// The merge config (see docs/merge.md).
        #[arg(long)]
        config: PathBuf,
        /// Run folder to write (default: the config's `out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing run in the run folder.
        #[arg(long)]
        overwrite: bool,
    },
    /// Train nanoGPT's CPU recipe and its DenseFormer twin on Tiny Shakespeare and compare.
    Demo(demo::DemoArgs),
    /// Train a grid of model sizes, token budgets and variants (resumable), fit scaling laws
    /// and report every variant's compute multiplier over the baseline.
    Sweep(study_args::StudyArgs),
    /// Compare a baseline with variants over paired seeds and budgets (resumable): compute
    /// multipliers with intervals, power and a plain verdict.
    Compare(compare::CompareArgs),
    /// Run a study over several seeds and write its table and plot (docs/experiments/).
    Experiment {
        /// The study.
        #[command(subcommand)]
        study: experiments::Study,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // A child process of a sweep or comparison trains its job and does nothing else.
    let result = strata_sweep::registry::run_child_if_requested(signals::stop_flag)
        .unwrap_or_else(|| run(Cli::parse()));
    if let Err(err) = &result {
        eprintln!("error: {}", errors::describe(err));
    }
    // A run stopped by a signal has saved what it could; the status says which signal.
    match (signals::exit_code(), result) {
        (Some(code), _) => ExitCode::from(code),
        (None, Ok(())) => ExitCode::SUCCESS,
        (None, Err(_)) => ExitCode::FAILURE,
    }
}

/// Dispatches a subcommand.
fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            overrides,
            out,
            resume,
            init_from,
            retrofit,
            overwrite,
            quiet,
            nproc,
        } => {
            if let Some(nproc) = nproc.filter(|&n| n > 1) {
                return launch::run(nproc, &signals::stop_flag());
            }
            let run_config = RunConfig::load(&config, &overrides)?;
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&run_config.name));
            let mut options = RunOptions::new(&config, &out);
            options.resume = resume.map(|p| p.unwrap_or_else(|| out.clone()));
            options.init_from = init_from;
            options.retrofit = retrofit;
            options.overwrite = overwrite;
            options.progress = !quiet;
            options.stop = signals::stop_flag();
            options.world = strata_train::World::from_env()?;
            let writes = options
                .world
                .as_ref()
                .is_none_or(strata_train::World::writes);
            let summary = strata_train::train(run_config, &options)?;
            if !writes {
                return Ok(());
            }
            if summary.interrupted {
                tracing::warn!(steps = summary.steps, "stopped early; resume with --resume");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            Ok(())
        }
        Command::Eval {
            checkpoint,
            batches,
            device,
            json,
            save_batches,
        } => {
            let loaded = inspect::load(&checkpoint, device)?;
            let report = inspect::evaluate_checkpoint(&loaded, batches, save_batches.as_deref())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!(
                    "step {}: train loss {:.4}, val loss {:.4} ({} batches per split)",
                    report.step, report.train_loss, report.val_loss, report.batches
                );
            }
            Ok(())
        }
        Command::Sample {
            checkpoint,
            prompt,
            tokens,
            temperature,
            top_k,
            seed,
            device,
            json,
        } => {
            let loaded = inspect::load(&checkpoint, device)?;
            let options = SampleOptions {
                temperature,
                top_k,
                seed,
            };
            let sample = inspect::sample(&loaded, &prompt, tokens, &options)?;
            if json {
                println!("{}", serde_json::to_string(&sample).unwrap_or_default());
            } else {
                println!("{}", sample.text);
            }
            Ok(())
        }
        Command::Export {
            checkpoint,
            format,
            out,
            overwrite,
        } => {
            let ckpt = strata_train::checkpoint::load(&checkpoint)?;
            strata_train::interop::export(&ckpt, format, &out, overwrite)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Info { checkpoint, json } => {
            let loaded = inspect::load(&checkpoint, DeviceChoice::Cpu)?;
            let info = inspect::info(&loaded);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                println!("checkpoint   {}", info.path);
                println!("run          {} ({})", info.name, info.variant);
                println!("step         {} ({} tokens)", info.step, info.tokens_seen);
                println!(
                    "parameters   {} total, {} non-embedding",
                    info.params.total, info.params.non_embedding
                );
                if let Some(v) = info.best_val_loss {
                    println!("best val     {v:.4}");
                }
                println!("tokenizer    {}", info.tokenizer);
                println!("\n{}", info.config);
            }
            Ok(())
        }
        Command::Merge {
            config,
            out,
            overwrite,
        } => {
            let merge_config = strata_merge::MergeConfig::load(&config)?;
            let outcome = merge_run::merge(&merge_config, &config, out.as_deref(), overwrite)?;
            println!(
                "wrote {} ({}, {} layers, {} parameters)",
                outcome.checkpoint.display(),
                outcome.model.variant_name(),
                outcome.model.n_layer,
                outcome.params.total
            );
            Ok(())
        }
        Command::Job { files } => jobs::run(&files, &signals::stop_flag()),
        Command::Experiment { study } => experiments::run(study, &signals::stop_flag()),
        Command::Sweep(args) => sweep::run(&args, &signals::stop_flag()),
        Command::Compare(args) => compare::run(&args, &signals::stop_flag()),
        Command::Demo(args) => {
            // The children get a terminal's Ctrl-C too and save; the demo waits for them, then
            // stops.
            let stop = signals::stop_flag();
            demo::run(args, &stop)
        }
    }
}
