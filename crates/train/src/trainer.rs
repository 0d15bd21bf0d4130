//! The training loop: batches, the optimizer (AdamW, or Muon for hidden matrices), schedule,
//! evaluation, checkpoints, resume, stopping on request (signals), and stopping when the run
//! diverges.
//!
//! Divergence: the training loss is checked every step on CPU (where reading it costs
//! nothing) and at every log step on other devices (where reading it would add a device
//! synchronisation per step); evaluation losses are checked at every evaluation, and every
//! weight and optimizer moment before every checkpoint. Anything NaN or infinite stops the run
//! with an error naming the step and the last good checkpoint: no checkpoint, `LATEST` or
//! metrics line is written from a diverged state.

use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::checkpoint_io;
use crate::config::RunConfig;
use crate::data::random_batch;
use crate::evaluation::Evaluator;
use crate::finite;
use crate::growth_schedule::{self, growth_seed, rewarm_factor};
use crate::memory;
use crate::metrics::{MetricRecord, MetricsLog};
use crate::optimizer::Optimizer;
use crate::parallel::{DataParallel, worker_count};
use crate::plots;
use crate::prepare::{prepare_data, resolve_model};
use crate::run_folder;
use crate::run_lock::RunLock;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use strata_core::flops::train_flops_per_step;
use strata_core::{Gpt, ModelConfig, ParamCount};
use strata_growth::Snapshot;
use strata_tensor::{Error, Result, seeded, set_cpu_threads};
use tch::{Device, Tensor, nn};

/// How to run a training job (everything that is not the experiment itself).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The config file, named in error messages.
    pub config_file: PathBuf,
    /// Run folder: checkpoints, metrics, plots and summary go here.
    pub out_dir: PathBuf,
    /// Continue from this checkpoint (or the latest one of this run folder).
    pub resume: Option<PathBuf>,
    /// Start a new run from this checkpoint's weights, model config and tokenizer (e.g. a
    /// merged or expanded model) with a fresh optimizer at step 0.
    pub init_from: Option<PathBuf>,
    /// Replace an existing run in `out_dir`.
    pub overwrite: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Set (e.g. by SIGINT, SIGTERM or SIGHUP) to save a checkpoint and stop at the next step.
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted.
    pub stop_after: Option<u64>,
}

impl RunOptions {
    /// Options for `config_file` writing into `out_dir`, with defaults elsewhere.
    pub fn new(config_file: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_file: config_file.into(),
            out_dir: out_dir.into(),
            resume: None,
            init_from: None,
            overwrite: false,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            stop_after: None,
        }
    }
}

/// What a finished (or interrupted) run reports, also written to `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run name.
    pub name: String,
    /// Architecture label (`baseline`, `denseformer-4x5`, ...).
    pub variant: String,
    /// Parameter counts.
    pub params: ParamCount,
    /// Optimizer steps completed.
    pub steps: u64,
    /// Training tokens consumed.
    pub tokens: u64,
    /// Training FLOPs spent, counted step by step with the model of each step (so growth
    /// stages are counted at their own size; see `strata_core::flops`).
    #[serde(default)]
    pub train_flops: f64,
    /// Last evaluated training loss.
    pub final_train_loss: Option<f64>,
    /// Last evaluated validation loss.
    pub final_val_loss: Option<f64>,
    /// Best validation loss.
    pub best_val_loss: Option<f64>,
    /// Standard error of `final_val_loss`: over windows with `train.eval_tokens`, over
    /// batches otherwise (see `evaluation::LossEstimate`).
    #[serde(default)]
    pub final_val_loss_se: Option<f64>,
    /// Tokens each validation reads (`eval_tokens` rounded down to whole windows, or
    /// `eval_iters · batch_size · block_size`).
    #[serde(default)]
    pub val_tokens: u64,
    /// Last loss on not-yet-seen training tokens (`train.eval_unseen`; see
    /// `evaluation::UnseenTracker`), `None` when off or when none were left.
    #[serde(default)]
    pub final_unseen_loss: Option<f64>,
    /// Passes over the training split: tokens trained on / tokens in the training split.
    #[serde(default)]
    pub epochs: f64,
    /// Wall-clock seconds of the whole run, evaluations included (summed across resumes).
    pub wall_s: f64,
    /// Training tokens per second of this process's training steps.
    pub tokens_per_sec: f64,
    /// Milliseconds per optimizer step in this process.
    pub ms_per_iter: f64,
    /// Peak resident memory of this process in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Peak GPU memory libtorch's allocator handed out in this process, in MiB (CUDA runs).
    #[serde(default)]
    pub peak_device_mib: Option<f64>,
    /// Device used.
    pub device: String,
    /// libtorch intra-op threads per worker.
    pub threads: i32,
    /// Data-parallel worker threads (1 on CUDA or when `train.data_parallel` is off).
    #[serde(default = "one")]
    pub workers: usize,
    /// True when the run stopped early (a stop signal or `stop_after`).
    pub interrupted: bool,
    /// The run folder.
    pub out_dir: PathBuf,
}

impl RunSummary {
    /// The summary of a finished (not interrupted, finally evaluated) run in the run folder
    /// `dir`, if there is one.
    pub fn finished(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
        let summary: Self = serde_json::from_str(&text).ok()?;
        (!summary.interrupted && summary.final_val_loss.is_some()).then_some(summary)
    }
}

/// Seed for the step's dropout masks, a mix of the run seed and the step.
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Restores libtorch's intra-op thread count when a run ends, however it ends, so that a
/// second run in the same process (and the embedding program) sees the original setting.
struct ThreadCountGuard(i32);

impl Drop for ThreadCountGuard {
    fn drop(&mut self) {
        tch::set_num_threads(self.0.max(1));
    }
}

/// Serde default of [`RunSummary::workers`] for summaries written before it existed.
fn one() -> usize {
    1
}

/// One batch: token ids and next-token targets, both `[batch, time]`.
pub type Batch = (Tensor, Tensor);

/// The training batch of optimizer step `step`: a function of the data, `train.seed`,
/// `train.batch_size`, `model.block_size` and the step only, so runs that differ in anything
/// else (architecture, length, schedule) train on identical batches.
pub fn training_batch(
    config: &RunConfig,
    train_tokens: &Tensor,
    step: u64,
    device: Device,
) -> Result<Batch> {
    let t = &config.train;
    random_batch(
        train_tokens,
        t.batch_size,
        config.model.block_size,
        t.seed,
        step,
        device,
    )
}

/// Mean loss over fixed batches, without gradients.
pub fn evaluate(model: &Gpt, batches: &[(Tensor, Tensor)]) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let mut total = 0.0;
    for (x, y) in batches {
        total += model.loss(x, y, false)?.double_value(&[]);
    }
    Ok(total / batches.len().max(1) as f64)
}

/// Everything the loop needs, built before the first step.
struct Run {
    config: RunConfig,
    /// The model the run config describes, before any growth.
    base_model: ModelConfig,
    /// Growth events already applied.
    growth_applied: usize,
    /// Training FLOPs spent so far.
    train_flops: f64,
    workers: usize,
    threads_per_worker: usize,
    vs: nn::VarStore,
    model: Gpt,
    optimizer: Optimizer,
    device: Device,
    tokenizer_json: String,
    tokenizer_fingerprint: String,
    train_tokens: Tensor,
    evaluator: Evaluator,
    parallel: DataParallel,
    start: u64,
    best_val: Option<f64>,
    elapsed_before: f64,
    /// The newest checkpoint known to be good: the one resumed from, then each one saved.
    last_checkpoint: Option<PathBuf>,
    /// The run folder's lock, held until the run ends.
    _lock: RunLock,
}

/// Builds the run, from scratch or from a checkpoint.
fn build_run(config: RunConfig, options: &RunOptions) -> Result<Run> {
    let resumed: Option<Checkpoint> = options
        .resume
        .as_deref()
        .map(run_folder::load_for_resume)
        .transpose()?;
    let initial: Option<Checkpoint> = options
        .init_from
        .as_deref()
        .map(checkpoint::load)
        .transpose()?;
    for ckpt in resumed.iter().chain(&initial) {
        finite::ensure_finite_weights(&ckpt.loaded.model, &ckpt.loaded.path)?;
    }
    if resumed.is_some() && initial.is_some() {
        return Err(Error::Invalid(
            "--resume continues a run and --init-from starts a new one from a checkpoint's \
             weights: pass one of them"
                .to_owned(),
        ));
    }
    let start_from = resumed.as_ref().or(initial.as_ref());
    let data = prepare_data(&config, start_from.map(|c| c.tokenizer.clone()))?;
    let base_model = match &initial {
        Some(init) => {
            let model = init.meta.config.model.clone();
            tracing::info!(
                checkpoint = %init.loaded.path.display(),
                model = %model.variant_name(),
                "starting from a checkpoint's weights and model config"
            );
            model
        }
        None => resolve_model(&config, &data.tokenizer, &options.config_file)?,
    };
    let file = options.config_file.display().to_string();
    growth_schedule::validate(&config.growth, &base_model, config.train.max_iters, &file)?;
    crate::budget::check_run(&config, &base_model, config.train.device.resolve()?, &file)?;
    let growth_applied = resumed.as_ref().map_or(0, |c| c.meta.growth_applied);
    let model_config = growth_schedule::model_after(&config.growth, &base_model, growth_applied)?;
    if let Some(ckpt) = start_from {
        checkpoint::ensure_compatible(ckpt, &model_config, &config, &options.config_file)?;
    }
    let lock = run_folder::prepare(
        &options.out_dir,
        "train",
        options.resume.is_some(),
        options.overwrite,
        Some(&options.config_file),
    )?;
    let t = &config.train;
    set_cpu_threads(t.threads);
    let device = t.device.resolve()?;
    let threads = tch::get_num_threads().max(1) as usize;
    let workers = if t.data_parallel {
        worker_count(device, threads, t.batch_size)
    } else {
        1
    };
    let threads_per_worker = (threads / workers).max(1);
    let vs = nn::VarStore::new(device);
    let model = seeded(t.seed, || Gpt::new(&vs.root(), &model_config))?;
    let mut optimizer = new_optimizer(&vs, &model_config, t)?;
    if let Some(init) = &initial {
        checkpoint::restore_weights(&vs, &init.loaded.model, &init.loaded.path)?;
    }
    let (mut start, mut best_val, mut elapsed_before) = (0, None, 0.0);
    let train_flops = resumed.as_ref().map_or(0.0, |c| c.meta.train_flops);
    if let Some(ckpt) = &resumed {
        checkpoint::restore_weights(&vs, &ckpt.loaded.model, &ckpt.loaded.path)?;
        optimizer.load_state(&ckpt.loaded.optimizer, ckpt.meta.step, &ckpt.loaded.path)?;
        (start, best_val, elapsed_before) =
            (ckpt.meta.step, ckpt.meta.best_val_loss, ckpt.meta.elapsed_s);
        tracing::info!(step = start, checkpoint = %ckpt.loaded.path.display(), "resuming");
    }
    let parallel = DataParallel::new(&vs, &model, workers, threads_per_worker)?;
    tch::set_num_threads(threads_per_worker as i32);
    let evaluator = Evaluator::new(t, &data.splits, model_config.block_size, start, device)?;
    let mut config = config;
    config.model = model_config;
    Ok(Run {
        base_model,
        growth_applied,
        train_flops,
        workers,
        threads_per_worker,
        tokenizer_json: data.tokenizer.to_json(),
        tokenizer_fingerprint: data.tokenizer.fingerprint(),
        train_tokens: data.splits.train,
        config,
        vs,
        model,
        optimizer,
        device,
        evaluator,
        parallel,
        start,
        best_val,
        elapsed_before,
        last_checkpoint: resumed.map(|c| c.loaded.path),
        _lock: lock,
    })
}

/// The progress bar (hidden when not wanted or not on a terminal).
fn progress_bar(options: &RunOptions, start: u64, total: u64, name: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(start);
    let style = ProgressStyle::with_template(
        "{prefix} {bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(name.to_owned());
    bar
}

/// Trains `config` as described by `options`; returns the summary also written to
/// `summary.json` in the run folder.
pub fn train(config: RunConfig, options: &RunOptions) -> Result<RunSummary> {
    let _threads = ThreadCountGuard(tch::get_num_threads());
    let mut run = build_run(config, options)?;
    if let Some(done) = already_finished(&run, options) {
        return Ok(done);
    }
    let out = options.out_dir.clone();
    let mut as_given = run.config.clone();
    as_given.model = run.base_model.clone();
    checkpoint_io::write_atomic(&out.join("config.toml"), as_given.to_toml().as_bytes())?;
    let resumed_at = (options.resume.is_some()).then_some(run.start);
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"), resumed_at)?;
    let t = run.config.train.clone();
    let schedule = t.schedule();
    let tokens_per_step = (t.batch_size * run.config.model.block_size) as u64;
    let bar = progress_bar(options, run.start, t.max_iters, &run.config.name);
    let clock = Instant::now();
    let mut train_secs = 0.0;
    // A resumed run starts from the evaluation logged at its step, if any (the final losses
    // of a run that stopped between its last checkpoint and its summary, for one).
    let logged = resumed_at.and_then(|s| logged_eval(metrics.path(), s));
    let mut last_train_loss = logged.as_ref().and_then(|r| r.loss);
    let mut last_val = logged.as_ref().and_then(|r| r.val_loss);
    let mut last_reading = None;
    let branch_steps = t.branch_steps();
    let mut interrupted = false;
    let elapsed = |run: &Run| run.elapsed_before + clock.elapsed().as_secs_f64();
    let mut step = run.start;
    loop {
        let mut grew = false;
        while run
            .config
            .growth
            .get(run.growth_applied)
            .is_some_and(|event| event.step == step)
        {
            bar.suspend(|| grow(&mut run, step))?;
            grew = true;
        }
        // The grown model is evaluated at once: its loss shows that growing kept the function.
        let due_eval = step % t.eval_interval == 0 || step == t.max_iters || grew;
        if due_eval && (resumed_at != Some(step) || logged.is_none()) {
            let reading = run.evaluator.evaluate(&mut run.parallel, &run.model)?;
            let (train_loss, val_loss) = (reading.train_loss, reading.val.mean);
            let unseen = reading.unseen.map_or(0.0, |u| u.loss);
            for (what, loss) in [("train", train_loss), ("val", val_loss), ("unseen", unseen)] {
                if !loss.is_finite() {
                    let what = format!("the evaluation {what} loss is {loss}");
                    return Err(diverged(step, &what, run.last_checkpoint.as_deref()));
                }
            }
            run.best_val = Some(run.best_val.map_or(val_loss, |b: f64| b.min(val_loss)));
            (last_train_loss, last_val) = (Some(train_loss), Some(val_loss));
            last_reading = Some(reading);
            metrics.record(&MetricRecord {
                step,
                kind: "eval".to_owned(),
                loss: Some(train_loss),
                val_loss: Some(val_loss),
                val_loss_se: reading.val.se,
                unseen_loss: reading.unseen.map(|u| u.loss),
                unseen_tokens: reading.unseen.map(|u| u.tokens),
                train_flops: Some(run.train_flops),
                elapsed_s: elapsed(&run),
                ..MetricRecord::default()
            })?;
            bar.suspend(|| {
                tracing::info!(step, train_loss, val_loss, "eval");
            });
        }
        let stop_now = options.stop.load(Ordering::SeqCst) || options.stop_after == Some(step);
        let finished = step >= t.max_iters;
        let periodic = step % t.checkpoint_every() == 0 || branch_steps.contains(&step);
        if stop_now || finished || (periodic && step != run.start) {
            run.last_checkpoint = Some(save(&run, &out, step, elapsed(&run))?);
        }
        if finished {
            break;
        }
        if stop_now {
            interrupted = true;
            bar.suspend(|| tracing::warn!(step, "stopped early; resume with --resume"));
            break;
        }
        let lr = schedule.at(step) * rewarm_factor(&run.config.growth, run.growth_applied, step);
        let step_clock = Instant::now();
        let (x, y) = training_batch(&run.config, &run.train_tokens, step, run.device)?;
        run.evaluator.observe_step(step);
        run.optimizer.zero_grad();
        let dropout_seed = (run.config.model.dropout > 0.0).then(|| step_seed(t.seed, step));
        let loss = run
            .parallel
            .forward_backward(&run.model, &x, &y, dropout_seed)?;
        let _grad_norm = run.optimizer.clip_grad_norm(t.grad_clip)?;
        run.optimizer.step(lr)?;
        run.train_flops +=
            train_flops_per_step(&run.config.model, t.batch_size, run.config.model.block_size);
        step += 1;
        let log_now = step % t.log_interval == 0 || step == t.max_iters;
        let loss = (log_now || run.device == Device::Cpu).then(|| loss.double_value(&[]));
        if let Some(loss) = loss.filter(|l| !l.is_finite()) {
            let what = format!("the training loss is {loss}");
            return Err(diverged(step, &what, run.last_checkpoint.as_deref()));
        }
        if let Some(loss) = loss.filter(|_| log_now) {
            train_secs += step_clock.elapsed().as_secs_f64();
            let done = step - run.start;
            let tok_s = (done * tokens_per_step) as f64 / train_secs.max(1e-9);
            metrics.record(&MetricRecord {
                step,
                kind: "train".to_owned(),
                loss: Some(loss),
                val_loss: None,
                lr: Some(lr),
                tokens_per_sec: Some(tok_s),
                train_flops: Some(run.train_flops),
                elapsed_s: elapsed(&run),
                ..MetricRecord::default()
            })?;
            bar.set_message(format!(
                "loss {loss:.4} lr {lr:.2e} {:.1}k tok/s",
                tok_s / 1e3
            ));
        } else {
            train_secs += step_clock.elapsed().as_secs_f64();
        }
        bar.set_position(step);
    }
    bar.finish_and_clear();
    let wall_s = elapsed(&run);
    write_plots(&run, &out)?;
    let done = step - run.start;
    let summary = RunSummary {
        name: run.config.name.clone(),
        variant: run.config.model.variant_name(),
        params: run.model.param_count(),
        steps: step,
        tokens: step * tokens_per_step,
        train_flops: run.train_flops,
        final_train_loss: last_train_loss,
        final_val_loss: last_val,
        best_val_loss: run.best_val,
        // Without an evaluation in this process, the last one is the evaluation logged at
        // the resumed step.
        final_val_loss_se: match last_reading {
            Some(r) => r.val.se,
            None => logged.as_ref().and_then(|r| r.val_loss_se),
        },
        val_tokens: run.evaluator.val_tokens(),
        final_unseen_loss: match last_reading {
            Some(r) => r.unseen.map(|u| u.loss),
            None => logged.as_ref().and_then(|r| r.unseen_loss),
        },
        epochs: (step * tokens_per_step) as f64 / run.train_tokens.size1()?.max(1) as f64,
        wall_s,
        tokens_per_sec: (done * tokens_per_step) as f64 / train_secs.max(1e-9),
        ms_per_iter: 1e3 * train_secs / done.max(1) as f64,
        peak_rss_mib: memory::peak_rss_bytes().map(memory::mib),
        peak_device_mib: strata_kernels::device_memory::peak_allocated_bytes(run.device)
            .map(memory::mib),
        device: format!("{:?}", run.device),
        threads: tch::get_num_threads(),
        workers: run.parallel.workers(),
        interrupted,
        out_dir: out.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?;
    checkpoint_io::write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// The summary of a resumed run that had already finished: nothing is trained or written.
fn already_finished(run: &Run, options: &RunOptions) -> Option<RunSummary> {
    if options.resume.is_none() || run.start < run.config.train.max_iters {
        return None;
    }
    let done = RunSummary::finished(&options.out_dir).filter(|s| s.steps == run.start)?;
    tracing::info!(run = %options.out_dir.display(), steps = done.steps, "the run is already finished; nothing to do");
    Some(done)
}

/// The last evaluation the metrics log at `path` records at `step`.
fn logged_eval(path: &Path, step: u64) -> Option<MetricRecord> {
    let records = crate::metrics::read_records(path).ok()?;
    records
        .into_iter()
        .rev()
        .find(|r| r.kind == "eval" && r.step == step)
}

/// The error of a run that diverged at `step`: what was not finite, and the last good
/// checkpoint to go back to.
fn diverged(step: u64, what: &str, last_good: Option<&Path>) -> Error {
    let last_good = match last_good {
        Some(path) => format!(
            "the last good checkpoint is {} (continue from it with `--resume {}` and, say, a \
             lower train.learning_rate)",
            path.display(),
            path.display()
        ),
        None => "this run has no good checkpoint to go back to".to_owned(),
    };
    Error::Invalid(format!(
        "training diverged at step {step}: {what}; nothing was saved from the diverged state, \
         and {last_good}"
    ))
}

/// Saves a checkpoint of `run` after `step` steps, unless a weight or optimizer moment is NaN
/// or infinite (then nothing is written, `LATEST` included, and the run has diverged).
fn save(run: &Run, out: &Path, step: u64, elapsed_s: f64) -> Result<PathBuf> {
    let weights = finite::sorted_variables(&run.vs);
    let optimizer = run.optimizer.state_tensors();
    let tensors = weights.iter().chain(&optimizer);
    if let Some(name) = finite::first_non_finite(tensors.map(|(n, t)| (n.as_str(), t)))? {
        let what = format!("tensor `{name}` holds NaN or infinite values");
        return Err(diverged(step, &what, run.last_checkpoint.as_deref()));
    }
    let meta = CheckpointMeta {
        config: run.config.clone(),
        tokenizer: run.tokenizer_json.clone(),
        tokenizer_fingerprint: run.tokenizer_fingerprint.clone(),
        step,
        seed: run.config.train.seed,
        tokens_seen: step * (run.config.train.batch_size * run.config.model.block_size) as u64,
        best_val_loss: run.best_val,
        elapsed_s,
        growth_applied: run.growth_applied,
        train_flops: run.train_flops,
    };
    let dir = checkpoint::save(out, &run.vs, optimizer, &meta)?;
    if let Some(keep_last) = run.config.train.keep_last {
        run_folder::prune_checkpoints(out, keep_last, step, &run.config.train.branch_steps());
    }
    Ok(dir)
}

/// Loss curves from the metrics log and, for a DenseFormer, the DWA weight heatmap.
fn write_plots(run: &Run, out: &Path) -> Result<()> {
    let records = crate::metrics::read_records(&out.join("metrics.jsonl"))?;
    let train: Vec<(u64, f64)> = records
        .iter()
        .filter(|r| r.kind == "train")
        .filter_map(|r| r.loss.map(|l| (r.step, l)))
        .collect();
    let val: Vec<(u64, f64)> = records
        .iter()
        .filter(|r| r.kind == "eval")
        .filter_map(|r| r.val_loss.map(|l| (r.step, l)))
        .collect();
    let title = format!("{} ({})", run.config.name, run.config.model.variant_name());
    let growth: Vec<u64> = run.config.growth[..run.growth_applied]
        .iter()
        .map(|e| e.step)
        .collect();
    plots::plot_loss_curves(out, &title, &train, &val, &growth)?;
    if run.config.model.dwa.is_some() {
        plots::plot_dwa_heatmap(out, &run.model.dwa_weight_matrix()?)?;
    }
    Ok(())
}

/// The optimizer of every variable of `vs`, a model with `model`, under the settings `t`.
fn new_optimizer(
    vs: &nn::VarStore,
    model: &ModelConfig,
    t: &crate::config::TrainConfig,
) -> Result<Optimizer> {
    Optimizer::new(
        vs.variables().into_iter().collect(),
        model,
        &t.optimizer,
        t.adamw(),
        t.learning_rate,
    )
}

/// Applies the next growth event of the schedule at `step`: the model, its optimizer (with
/// the moments carried by the operator and the same step count) and the data-parallel
/// workers are rebuilt at the new size.
fn grow(run: &mut Run, step: u64) -> Result<()> {
    let index = run.growth_applied;
    let event = run.config.growth[index].clone();
    let source = PathBuf::from(format!(
        "growth[{index}] ({}) at step {step}",
        event.op.label()
    ));
    let snapshot = Snapshot {
        config: run.config.model.clone(),
        params: strata_merge::state_of(&run.vs)?,
        moments: Some(run.optimizer.moments()?),
    };
    let before = run.model.param_count().total;
    let grown = event
        .op
        .apply(&snapshot, growth_seed(run.config.train.seed, index))?;
    let vs = nn::VarStore::new(run.device);
    let model = Gpt::new(&vs.root(), &grown.config)?;
    let params: Vec<(String, Tensor)> = grown.params.into_iter().collect();
    checkpoint::restore_weights(&vs, &params, &source)?;
    let mut optimizer = new_optimizer(&vs, &grown.config, &run.config.train)?;
    optimizer.load_moments(
        &grown.moments.unwrap_or_default(),
        run.optimizer.steps_taken(),
        &source,
    )?;
    let parallel = DataParallel::new(&vs, &model, run.workers, run.threads_per_worker)?;
    tch::set_num_threads(run.threads_per_worker as i32);
    tracing::info!(
        step,
        op = %event.op.label(),
        params_before = before,
        params_after = model.param_count().total,
        "grew the model"
    );
    run.parallel = parallel;
    run.optimizer = optimizer;
    run.model = model;
    run.vs = vs;
    run.config.model = grown.config;
    run.growth_applied += 1;
    Ok(())
}
