//! [`Trainer`]: one run, driven one optimizer step at a time: batches, the optimizer (AdamW,
//! or Muon for the hidden matrices),
//! schedule, growth, evaluation, checkpoints, exact resume and stopping when the run diverges.
//! [`train`](crate::train) drives it from the first step to the last.
//!
//! What the run's config schedules at a step (growth events, then an evaluation, then a
//! periodic checkpoint) runs once, at the start of [`Trainer::step`] or in
//! [`Trainer::finish`], and is reported to the hooks registered with
//! [`Trainer::on_growth`], [`Trainer::on_evaluation`] and [`Trainer::on_checkpoint`].
//!
//! Divergence: the training loss is checked every step on CPU (where reading it costs
//! nothing) and at every log step on other devices (where reading it would add a device
//! synchronisation per step); evaluation losses are checked at every evaluation, and every
//! weight and optimizer moment before every checkpoint. Anything NaN or infinite stops the run
//! with [`Error::Diverged`], naming the step and the last good checkpoint: no checkpoint,
//! `LATEST` or metrics line is written from a diverged state.
//!
//! Several processes: with [`RunOptions::world`] set, the trainer is one rank of a
//! data-parallel run ([`crate::distributed`]): it trains on its share of every batch, the
//! ranks sum their gradients, and only rank 0 evaluates and writes the run folder.

use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::checkpoint_io;
use crate::config::RunConfig;
use crate::data::random_batch;
use crate::distributed::{Ranks, World, overlapped_sum_failed};
use crate::evaluation::{Evaluator, UnseenLoss};
use crate::finite;
use crate::growth_schedule::{self, growth_seed, rewarm_factor};
use crate::memory;
use crate::metrics::{MetricRecord, MetricsLog};
use crate::optimizer::Optimizer;
use crate::parallel::{BatchShare, DataParallel, worker_count};
use crate::prepare::{prepare_data, resolve_model};
use crate::run_folder;
use crate::run_lock::RunLock;
use crate::schedule::Schedule;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use strata_core::flops::train_flops_per_step;
use strata_core::{Gpt, ModelConfig};
use strata_growth::{GrowthOp, Snapshot};
use strata_kernels::Generator;
use strata_kernels::process_group::GradientReducer;
use strata_tensor::{Error, Result, seeded, set_cpu_threads};
use tch::{Device, Tensor, nn};

pub use crate::run_summary::RunSummary;

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
    /// With `init_from`: keep the run config's model, the checkpoint's plus depth methods,
    /// whose new tensors start at their init ([`crate::retrofit`]).
    pub retrofit: bool,
    /// Replace an existing run in `out_dir`.
    pub overwrite: bool,
    /// Show a progress bar ([`train`](crate::train) only).
    pub progress: bool,
    /// Set (e.g. by SIGINT, SIGTERM or SIGHUP) to save a checkpoint and stop at the next step
    /// ([`train`](crate::train) only).
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted
    /// ([`train`](crate::train) only).
    pub stop_after: Option<u64>,
    /// This process's place in a multi-process run (e.g. [`World::from_env`]); `None` for a
    /// single process.
    pub world: Option<World>,
}

impl RunOptions {
    /// Options for `config_file` writing into `out_dir`, with defaults elsewhere.
    pub fn new(config_file: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_file: config_file.into(),
            out_dir: out_dir.into(),
            resume: None,
            init_from: None,
            retrofit: false,
            overwrite: false,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            stop_after: None,
            world: None,
        }
    }
}

/// One evaluation of the run: its losses at a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Optimizer steps done when it was taken.
    pub step: u64,
    /// Mean loss on the fixed training-split batches.
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Standard error of `val_loss` (see `evaluation::LossEstimate`).
    pub val_loss_se: Option<f64>,
    /// Loss on not-yet-seen training tokens (`train.eval_unseen`), `None` when off or when
    /// none were left.
    pub unseen: Option<UnseenLoss>,
}

impl Evaluation {
    /// The evaluation an `eval` line of the metrics log records, if it holds both losses.
    fn logged(record: &MetricRecord) -> Option<Self> {
        Some(Self {
            step: record.step,
            train_loss: record.loss?,
            val_loss: record.val_loss?,
            val_loss_se: record.val_loss_se,
            unseen: record.unseen_loss.map(|loss| UnseenLoss {
                loss,
                tokens: record.unseen_tokens.unwrap_or(0),
            }),
        })
    }
}

/// A growth event as applied: what the growth hooks are told.
#[derive(Clone, Debug, PartialEq)]
pub struct Growth {
    /// The step it was applied at.
    pub step: u64,
    /// The operation.
    pub op: GrowthOp,
    /// Parameters before.
    pub params_before: usize,
    /// Parameters after.
    pub params_after: usize,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Optimizer steps done after it.
    pub step: u64,
    /// The learning rate it used.
    pub lr: f64,
    /// Its training loss, read at log steps (`train.log_interval`, and the last step) and at
    /// every step on CPU.
    pub loss: Option<f64>,
    /// Training tokens per second of this process's steps so far, at log steps.
    pub tokens_per_sec: Option<f64>,
}

/// A hook told about each growth event, evaluation or checkpoint.
type Hook<T> = Box<dyn FnMut(&T) + Send>;

/// The hooks registered with a trainer.
#[derive(Default)]
struct Hooks {
    growth: Vec<Hook<Growth>>,
    evaluation: Vec<Hook<Evaluation>>,
    checkpoint: Vec<Hook<Path>>,
}

/// Restores libtorch's intra-op thread count when a trainer is dropped, however the run
/// ends, so that a second run in the same process (and the embedding program) sees the
/// original setting.
struct ThreadCountGuard(i32);

impl Drop for ThreadCountGuard {
    fn drop(&mut self) {
        tch::set_num_threads(self.0.max(1));
    }
}

/// The model being trained with its optimizer and data-parallel workers; growth replaces
/// them together.
struct Stage {
    vs: nn::VarStore,
    model: Gpt,
    optimizer: Optimizer,
    parallel: DataParallel,
    /// The variables of `vs` in name order (the same in every rank's process): what ranks
    /// broadcast and sum, listed once per stage instead of once per step.
    sorted: Vec<Tensor>,
    /// In a multi-process run, the reducer that sums the gradients while backward runs
    /// ([`Trainer::attach_reducer`]); `None` sums them after backward.
    reducer: Option<GradientReducer>,
}

impl Stage {
    /// The stage of a model in `vs`.
    fn new(vs: nn::VarStore, model: Gpt, optimizer: Optimizer, parallel: DataParallel) -> Self {
        let sorted = finite::sorted_variables(&vs)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        Self {
            vs,
            model,
            optimizer,
            parallel,
            sorted,
            reducer: None,
        }
    }
}

/// The optimizer over every variable of `vs`, a model with `model`, under the settings of
/// `config` (AdamW, or Muon for the hidden matrices; the one place a run builds it).
fn build_optimizer(
    vs: &nn::VarStore,
    model: &strata_core::ModelConfig,
    config: &RunConfig,
) -> Result<Optimizer> {
    let t = &config.train;
    Optimizer::new(
        vs.variables().into_iter().collect(),
        model,
        &t.optimizer,
        t.adamw(),
        t.learning_rate,
    )
}

/// One training run, stepped by its owner: see the module documentation.
pub struct Trainer {
    /// The run config, its model as grown so far.
    config: RunConfig,
    /// The model the run config describes, before any growth.
    base_model: ModelConfig,
    schedule: Schedule,
    branch_steps: Vec<u64>,
    tokens_per_step: u64,
    /// Growth events already applied.
    growth_applied: usize,
    /// Training FLOPs spent so far.
    train_flops: f64,
    workers: usize,
    threads_per_worker: usize,
    stage: Stage,
    device: Device,
    tokenizer_json: String,
    tokenizer_fingerprint: String,
    train_tokens: Tensor,
    evaluator: Evaluator,
    out_dir: PathBuf,
    /// `None` only for a resumed run that had already finished (`finished_before`).
    metrics: Option<MetricsLog>,
    /// The summary of a resumed run that had already finished: nothing is trained or written.
    finished_before: Option<RunSummary>,
    /// The step this process started at.
    start: u64,
    /// Optimizer steps done.
    step: u64,
    /// The step whose scheduled events have run.
    events_done: Option<u64>,
    best_val: Option<f64>,
    /// The last evaluation: of this process, or the one logged at the resumed step.
    last_eval: Option<Evaluation>,
    elapsed_before: f64,
    clock: Instant,
    /// Seconds spent in this process's training steps.
    train_secs: f64,
    /// The newest checkpoint known to be good: the one resumed from, then each one saved.
    last_checkpoint: Option<PathBuf>,
    /// The step of the checkpoint this process saved last.
    saved_at: Option<u64>,
    hooks: Hooks,
    /// The other ranks of a multi-process run.
    ranks: Option<Ranks>,
    /// This process's stop request ([`RunOptions::stop`]).
    stop: Arc<AtomicBool>,
    /// Whether some rank asked to stop, as agreed at the last step of a multi-process run.
    stop_agreed: bool,
    /// The run folder's lock, held until the trainer is dropped (rank 0's only).
    _lock: Option<RunLock>,
    _threads: ThreadCountGuard,
}

/// Seed for the step's dropout masks, a mix of the run seed and the step.
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
        total += model.loss(x, y, false)?.f_double_value(&[])?;
    }
    Ok(total / batches.len().max(1) as f64)
}

impl Trainer {
    /// A run of `config` into `options.out_dir`: new, from `options.init_from`'s weights, or
    /// continuing `options.resume`. The run folder is locked until the trainer is dropped;
    /// `options.progress` and `stop_after` are for [`train`](crate::train) and are not read
    /// here. With `options.world`, joins the other ranks first (see [`crate::distributed`]).
    pub fn new(config: RunConfig, options: &RunOptions) -> Result<Self> {
        let threads = ThreadCountGuard(tch::get_num_threads());
        let file = options.config_file.display().to_string();
        let ranks = match &options.world {
            Some(world) => Some(Ranks::join(world, &config, &file, &run_key(options))?),
            None => None,
        };
        let mut built = build(config, options, threads, options.world.as_ref());
        if let Some(ranks) = &ranks {
            let agreed = ranks.agree(built.is_ok(), "to start the run");
            built = built.and_then(|trainer| agreed.map(|()| trainer));
        }
        let mut trainer = built?;
        if let Some(ranks) = &ranks {
            ranks.broadcast_from_writer(&trainer.stage.sorted)?;
        }
        trainer.ranks = ranks;
        trainer.attach_reducer()?;
        trainer.finished_before = already_finished(&trainer, options);
        if trainer.finished_before.is_some() || !trainer.writes() {
            return Ok(trainer);
        }
        let out = &options.out_dir;
        let mut as_given = trainer.config.clone();
        as_given.model = trainer.base_model.clone();
        checkpoint_io::write_atomic(&out.join("config.toml"), as_given.to_toml().as_bytes())?;
        let resumed_at = options.resume.is_some().then_some(trainer.start);
        let metrics = MetricsLog::open(&out.join("metrics.jsonl"), resumed_at)?;
        // A resumed run starts from the evaluation logged at its step, if any (the final
        // losses of a run that stopped between its last checkpoint and its summary, for one).
        trainer.last_eval = resumed_at
            .and_then(|s| logged_eval(metrics.path(), s))
            .and_then(|r| Evaluation::logged(&r));
        trainer.metrics = Some(metrics);
        trainer.clock = Instant::now();
        Ok(trainer)
    }

    /// Continues the run checkpointed at `checkpoint` (a checkpoint folder, or a run
    /// folder's latest) with `config`, as [`Trainer::new`] with `options.resume` set.
    pub fn load(config: RunConfig, checkpoint: &Path, options: &RunOptions) -> Result<Self> {
        let options = RunOptions {
            resume: Some(checkpoint.to_path_buf()),
            ..options.clone()
        };
        Self::new(config, &options)
    }

    /// Calls `hook` after each growth event.
    pub fn on_growth(&mut self, hook: impl FnMut(&Growth) + Send + 'static) {
        self.hooks.growth.push(Box::new(hook));
    }

    /// Calls `hook` after each evaluation (scheduled or asked for with [`Self::evaluate`]).
    pub fn on_evaluation(&mut self, hook: impl FnMut(&Evaluation) + Send + 'static) {
        self.hooks.evaluation.push(Box::new(hook));
    }

    /// Calls `hook` with each checkpoint folder saved.
    pub fn on_checkpoint(&mut self, hook: impl FnMut(&Path) + Send + 'static) {
        self.hooks.checkpoint.push(Box::new(hook));
    }

    /// In a multi-process run on CPU with one worker per rank (and `train.overlap_grad_sync`),
    /// gives the stage a reducer that sums the gradients across the ranks while backward runs.
    /// With several workers per rank the master model's gradients are complete only after the
    /// workers' are added, so they are summed after backward, as on CUDA (Gloo there goes
    /// through host copies).
    fn attach_reducer(&mut self) -> Result<()> {
        let Some(ranks) = &self.ranks else {
            return Ok(());
        };
        let stage = &mut self.stage;
        stage.reducer = None;
        if !self.config.train.overlap_grad_sync
            || stage.parallel.workers() != 1
            || self.device != Device::Cpu
        {
            return Ok(());
        }
        let trainable: Vec<(String, Tensor)> = finite::sorted_variables(&stage.vs)
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let reducer = ranks.gradient_reducer(&trainable)?;
        tracing::info!(
            buckets = reducer.buckets(),
            "gradients summed across the ranks while backward runs"
        );
        stage.reducer = Some(reducer);
        Ok(())
    }

    /// Whether this process writes the run folder: always, except on the ranks other than 0
    /// of a multi-process run.
    pub fn writes(&self) -> bool {
        self.ranks.as_ref().is_none_or(|r| r.world().writes())
    }

    /// Whether the run was asked to stop: this process's [`RunOptions::stop`] flag, or, in a
    /// multi-process run, any rank's, as agreed by all ranks at the last step (so that every
    /// rank stops after the same step).
    pub fn stop_requested(&self) -> bool {
        match self.ranks {
            Some(_) => self.stop_agreed,
            None => self.stop.load(Ordering::SeqCst),
        }
    }

    /// Optimizer steps done.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// True once `train.max_iters` steps are done.
    pub fn is_finished(&self) -> bool {
        self.step >= self.config.train.max_iters
    }

    /// The run config, its model as grown so far.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &Gpt {
        &self.stage.model
    }

    /// The last evaluation: of this trainer, or the one logged at the step it resumed at.
    pub fn last_evaluation(&self) -> Option<&Evaluation> {
        self.last_eval.as_ref()
    }

    /// The newest good checkpoint: the one resumed from, then each one saved.
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_deref()
    }

    /// Whether the next [`Self::step`] or [`Self::finish`] first runs events the schedule
    /// holds at the current step (growth, an evaluation, a checkpoint).
    pub fn events_due(&self) -> bool {
        let (step, t) = (self.step, &self.config.train);
        self.events_done != Some(step)
            && (self.growth_due()
                || step % t.eval_interval == 0
                || step == t.max_iters
                || (self.checkpoint_due() && step != self.start))
    }

    /// Whether the next growth event of the schedule is at the current step.
    fn growth_due(&self) -> bool {
        let next = self.config.growth.get(self.growth_applied);
        next.is_some_and(|event| event.step == self.step)
    }

    /// Whether the schedule checkpoints at the current step.
    fn checkpoint_due(&self) -> bool {
        self.step
            .is_multiple_of(self.config.train.checkpoint_every())
            || self.branch_steps.contains(&self.step)
    }

    /// Runs what the schedule holds at the current step, once: its growth events, then an
    /// evaluation when one is due (a grown model is evaluated at once: its loss shows that
    /// growing kept the function), then a periodic checkpoint.
    fn run_due_events(&mut self) -> Result<()> {
        if self.events_done == Some(self.step) {
            return Ok(());
        }
        let step = self.step;
        let mut grew = false;
        while self.growth_due() {
            self.grow()?;
            grew = true;
        }
        let t = &self.config.train;
        let due_eval = step.is_multiple_of(t.eval_interval) || step == t.max_iters || grew;
        let evaluated = self.last_eval.is_some_and(|e| e.step == step);
        if due_eval && (grew || !evaluated) && self.writes() {
            self.evaluate()?;
        }
        if self.checkpoint_due() && step != self.start {
            self.save()?;
        }
        self.events_done = Some(step);
        Ok(())
    }

    /// Runs the events due at the current step, then one optimizer step. Refused once the
    /// run is finished.
    pub fn step(&mut self) -> Result<StepReport> {
        if self.is_finished() {
            return Err(Error::Invalid(format!(
                "the run is finished: {} of {} steps done",
                self.step, self.config.train.max_iters
            )));
        }
        self.run_due_events()?;
        let step = self.step;
        let t = &self.config.train;
        let lr =
            self.schedule.at(step) * rewarm_factor(&self.config.growth, self.growth_applied, step);
        let step_clock = Instant::now();
        let (x, y) = training_batch(&self.config, &self.train_tokens, step, self.device)?;
        self.evaluator.observe_step(step);
        let stage = &mut self.stage;
        let global_rows = x.size()[0];
        let ((x, y), first_chunk) = match &self.ranks {
            Some(ranks) => {
                let chunks = ranks.world().rank * stage.parallel.workers();
                (ranks.shard(&x, &y)?, chunks as u64)
            }
            None => ((x, y), 0),
        };
        stage.optimizer.zero_grad();
        let dropout_seed = (self.config.model.dropout > 0.0).then(|| step_seed(t.seed, step));
        let share = BatchShare {
            global_rows,
            first_chunk,
        };
        if let Some(reducer) = &stage.reducer {
            reducer.prepare()?;
        }
        let mut loss = stage
            .parallel
            .forward_backward_share(&stage.model, &x, &y, dropout_seed, share)
            .map_err(|e| match (&self.ranks, &stage.reducer) {
                (Some(ranks), Some(_)) => overlapped_sum_failed(e, ranks.world()),
                _ => e,
            })?;
        if let Some(reducer) = &stage.reducer {
            reducer.check_finished()?;
        }
        if let Some(ranks) = &self.ranks {
            let sum = ranks.sum_step(
                &stage.sorted,
                &loss,
                self.stop.load(Ordering::SeqCst),
                stage.reducer.is_some(),
            )?;
            self.stop_agreed = sum.stop;
            loss = sum.loss;
        }
        let _grad_norm = stage.optimizer.clip_grad_norm(t.grad_clip)?;
        stage.optimizer.step(lr)?;
        let model = &self.config.model;
        self.train_flops += train_flops_per_step(model, t.batch_size, model.block_size);
        self.step += 1;
        let step = self.step;
        let log_now = step.is_multiple_of(t.log_interval) || step == t.max_iters;
        let loss = (log_now || self.device == Device::Cpu)
            .then(|| loss.f_double_value(&[]))
            .transpose()?;
        if let Some(loss) = loss.filter(|l| !l.is_finite()) {
            return Err(self.diverged(format!("the training loss is {loss}")));
        }
        self.train_secs += step_clock.elapsed().as_secs_f64();
        let mut tokens_per_sec = None;
        if let Some(loss) = loss.filter(|_| log_now) {
            let done = step - self.start;
            let tok_s = (done * self.tokens_per_step) as f64 / self.train_secs.max(1e-9);
            tokens_per_sec = Some(tok_s);
            self.record(&MetricRecord {
                step,
                kind: "train".to_owned(),
                loss: Some(loss),
                lr: Some(lr),
                tokens_per_sec: Some(tok_s),
                train_flops: Some(self.train_flops),
                elapsed_s: self.elapsed(),
                ..MetricRecord::default()
            })?;
        }
        Ok(StepReport {
            step,
            lr,
            loss,
            tokens_per_sec,
        })
    }

    /// Evaluates the model now (on the run's fixed evaluation sets), logs the losses to the
    /// metrics log and tells the evaluation hooks.
    pub fn evaluate(&mut self) -> Result<Evaluation> {
        let step = self.step;
        let stage = &mut self.stage;
        let reading = self.evaluator.evaluate(&mut stage.parallel, &stage.model)?;
        let (train_loss, val_loss) = (reading.train_loss, reading.val.mean);
        let unseen = reading.unseen.map_or(0.0, |u| u.loss);
        for (what, loss) in [("train", train_loss), ("val", val_loss), ("unseen", unseen)] {
            if !loss.is_finite() {
                return Err(self.diverged(format!("the evaluation {what} loss is {loss}")));
            }
        }
        self.best_val = Some(self.best_val.map_or(val_loss, |b: f64| b.min(val_loss)));
        let evaluation = Evaluation {
            step,
            train_loss,
            val_loss,
            val_loss_se: reading.val.se,
            unseen: reading.unseen,
        };
        self.last_eval = Some(evaluation);
        self.record(&MetricRecord {
            step,
            kind: "eval".to_owned(),
            loss: Some(train_loss),
            val_loss: Some(val_loss),
            val_loss_se: reading.val.se,
            unseen_loss: reading.unseen.map(|u| u.loss),
            unseen_tokens: reading.unseen.map(|u| u.tokens),
            train_flops: Some(self.train_flops),
            elapsed_s: self.elapsed(),
            ..MetricRecord::default()
        })?;
        tracing::info!(step, train_loss, val_loss, "eval");
        for hook in &mut self.hooks.evaluation {
            hook(&evaluation);
        }
        Ok(evaluation)
    }

    /// Saves a checkpoint of the current step (once per step: a second call returns the
    /// first's folder), unless a weight or optimizer moment is NaN or infinite (then nothing
    /// is written, `LATEST` included, and the run has diverged).
    pub fn save(&mut self) -> Result<PathBuf> {
        let step = self.step;
        if !self.writes() {
            return Ok(checkpoint::checkpoint_dir(&self.out_dir, step));
        }
        if let (Some(saved), Some(dir)) = (self.saved_at, &self.last_checkpoint)
            && saved == step
        {
            return Ok(dir.clone());
        }
        let weights = finite::sorted_variables(&self.stage.vs);
        let optimizer = self.stage.optimizer.state_tensors();
        let tensors = weights.iter().chain(&optimizer);
        if let Some(name) = finite::first_non_finite(tensors.map(|(n, t)| (n.as_str(), t)))? {
            return Err(self.diverged(format!("tensor `{name}` holds NaN or infinite values")));
        }
        let t = &self.config.train;
        let meta = CheckpointMeta {
            config: self.config.clone(),
            tokenizer: self.tokenizer_json.clone(),
            tokenizer_fingerprint: self.tokenizer_fingerprint.clone(),
            step,
            seed: t.seed,
            tokens_seen: step * (t.batch_size * self.config.model.block_size) as u64,
            best_val_loss: self.best_val,
            elapsed_s: self.elapsed(),
            growth_applied: self.growth_applied,
            train_flops: self.train_flops,
        };
        let dir = checkpoint::save(&self.out_dir, &self.stage.vs, optimizer, &meta)?;
        if let Some(keep_last) = t.keep_last {
            run_folder::prune_checkpoints(&self.out_dir, keep_last, step, &self.branch_steps);
        }
        self.last_checkpoint = Some(dir.clone());
        self.saved_at = Some(step);
        for hook in &mut self.hooks.checkpoint {
            hook(&dir);
        }
        Ok(dir)
    }

    /// Ends the run at the current step: runs the events due there, saves a checkpoint,
    /// writes the plots and `summary.json`, and returns the summary (`interrupted` when fewer
    /// than `train.max_iters` steps are done). A resumed run that had already finished
    /// returns its summary and writes nothing.
    pub fn finish(mut self) -> Result<RunSummary> {
        if let Some(done) = self.finished_before.take() {
            return Ok(done);
        }
        self.run_due_events()?;
        self.save()?;
        let interrupted = !self.is_finished();
        if interrupted {
            tracing::warn!(step = self.step, "stopped early; the run can be resumed");
        }
        let wall_s = self.elapsed();
        if self.writes() {
            self.write_plots()?;
        }
        let (step, done) = (self.step, self.step - self.start);
        let last = self.last_eval;
        let summary = RunSummary {
            name: self.config.name.clone(),
            variant: self.config.model.variant_name(),
            params: self.stage.model.param_count(),
            steps: step,
            tokens: step * self.tokens_per_step,
            train_flops: self.train_flops,
            final_train_loss: last.map(|e| e.train_loss),
            final_val_loss: last.map(|e| e.val_loss),
            best_val_loss: self.best_val,
            final_val_loss_se: last.and_then(|e| e.val_loss_se),
            val_tokens: self.evaluator.val_tokens(),
            final_unseen_loss: last.and_then(|e| e.unseen.map(|u| u.loss)),
            epochs: (step * self.tokens_per_step) as f64 / self.train_tokens.size1()?.max(1) as f64,
            wall_s,
            tokens_per_sec: (done * self.tokens_per_step) as f64 / self.train_secs.max(1e-9),
            ms_per_iter: 1e3 * self.train_secs / done.max(1) as f64,
            peak_rss_mib: memory::peak_rss_bytes().map(memory::mib),
            peak_device_mib: strata_kernels::device_memory::peak_allocated_bytes(self.device)
                .map(memory::mib),
            device: format!("{:?}", self.device),
            threads: tch::get_num_threads(),
            workers: self.stage.parallel.workers(),
            interrupted,
            out_dir: self.out_dir.clone(),
        };
        if self.writes() {
            let json = serde_json::to_string_pretty(&summary)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            checkpoint_io::write_atomic(&self.out_dir.join("summary.json"), json.as_bytes())?;
        }
        Ok(summary)
    }

    /// Seconds of the whole run so far, evaluations included (summed across resumes).
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.clock.elapsed().as_secs_f64()
    }

    /// Appends `record` to the metrics log.
    fn record(&mut self, record: &MetricRecord) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        match &mut self.metrics {
            Some(metrics) => metrics.record(record),
            None => Err(Error::Invalid(
                "the run had already finished; nothing is logged".to_owned(),
            )),
        }
    }

    /// The error of a run that diverged at the current step: what was not finite, and the
    /// last good checkpoint to go back to.
    fn diverged(&self, what: String) -> Error {
        Error::Diverged {
            step: self.step,
            what,
            last_good: self.last_checkpoint.clone(),
        }
    }

    /// Loss curves from the metrics log and, for a DenseFormer, the DWA weight heatmap.
    fn write_plots(&self) -> Result<()> {
        let records = crate::metrics::read_records(&self.out_dir.join("metrics.jsonl"))?;
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
        let title = format!(
            "{} ({})",
            self.config.name,
            self.config.model.variant_name()
        );
        let growth: Vec<u64> = self.config.growth[..self.growth_applied]
            .iter()
            .map(|e| e.step)
            .collect();
        strata_plots::plot_loss_curves(&self.out_dir, &title, &train, &val, &growth)?;
        if self.config.model.dwa.is_some() {
            strata_plots::plot_dwa_heatmap(&self.out_dir, &self.stage.model.dwa_weight_matrix()?)?;
        }
        Ok(())
    }

    /// Applies the next growth event of the schedule at the current step: the model, its
    /// optimizer (with the moments carried by the operator and the same step count) and the
    /// data-parallel workers are rebuilt at the new size.
    fn grow(&mut self) -> Result<()> {
        let (index, step) = (self.growth_applied, self.step);
        let event = self.config.growth[index].clone();
        let source = PathBuf::from(format!(
            "growth[{index}] ({}) at step {step}",
            event.op.label()
        ));
        let snapshot = Snapshot {
            config: self.config.model.clone(),
            params: strata_merge::state_of(&self.stage.vs)?,
            moments: Some(self.stage.optimizer.moments()?),
        };
        let params_before = self.stage.model.param_count().total;
        let grown = event
            .op
            .apply(&snapshot, growth_seed(self.config.train.seed, index))?;
        let vs = nn::VarStore::new(self.device);
        let model = Gpt::new(&vs.root(), &grown.config)?
            .with_kernel(self.stage.model.depth.kernel())
            .with_generator(Generator::new(self.config.train.seed)?);
        let params: Vec<(String, Tensor)> = grown.params.into_iter().collect();
        checkpoint::restore_weights(&vs, &params, &source)?;
        let mut optimizer = build_optimizer(&vs, &grown.config, &self.config)?;
        optimizer.load_moments(
            &grown.moments.unwrap_or_default(),
            self.stage.optimizer.steps_taken(),
            &source,
        )?;
        let parallel = DataParallel::new(&vs, &model, self.workers, self.threads_per_worker)?;
        tch::set_num_threads(self.threads_per_worker as i32);
        let growth = Growth {
            step,
            op: event.op.clone(),
            params_before,
            params_after: model.param_count().total,
        };
        tracing::info!(
            step,
            op = %growth.op.label(),
            params_before,
            params_after = growth.params_after,
            "grew the model"
        );
        self.stage = Stage::new(vs, model, optimizer, parallel);
        self.attach_reducer()?;
        self.config.model = grown.config;
        self.growth_applied += 1;
        for hook in &mut self.hooks.growth {
            hook(&growth);
        }
        Ok(())
    }
}

/// What every rank of a multi-process run must have been given alike, besides the config.
fn run_key(options: &RunOptions) -> String {
    format!(
        "resume={} init_from={} retrofit={}",
        options.resume.is_some(),
        options.init_from.is_some(),
        options.retrofit
    )
}

/// Builds the trainer, from scratch or from a checkpoint, and locks (and readies) its run
/// folder (only rank 0 of a multi-process run `world` touches it); the metrics log is opened
/// by the caller.
fn build(
    config: RunConfig,
    options: &RunOptions,
    threads: ThreadCountGuard,
    world: Option<&World>,
) -> Result<Trainer> {
    let resumed: Option<Checkpoint> = options
        .resume
        .as_deref()
        .map(run_folder::load_for_resume)
        .transpose()?;
    let initial: Option<Checkpoint> = options
        .init_from
        .as_deref()
        .map(|path| crate::interop::load_initial(path, &config))
        .transpose()?;
    for ckpt in resumed.iter().chain(&initial) {
        finite::ensure_finite_weights(&ckpt.loaded.model, &ckpt.loaded.path)?;
    }
    if resumed.is_some() && initial.is_some() {
        return Err(Error::ResumeAndInitFrom);
    }
    let start_from = resumed.as_ref().or(initial.as_ref());
    let data = prepare_data(&config, start_from.map(|c| c.tokenizer.clone()))?;
    if options.retrofit && initial.is_none() {
        return Err(Error::Invalid(
            "a retrofit starts from a checkpoint: give init_from with it".to_owned(),
        ));
    }
    let base_model = match &initial {
        Some(init) if options.retrofit => {
            let wanted = resolve_model(&config, &data.tokenizer, &options.config_file)?;
            let file = options.config_file.display().to_string();
            crate::retrofit::check(init, &wanted, &file)?;
            tracing::info!(
                checkpoint = %init.loaded.path.display(),
                model = %wanted.variant_name(),
                "retrofitting depth methods onto a checkpoint"
            );
            wanted
        }
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
        // A retrofit's model differs from the checkpoint's by design (checked above).
        let model = if options.retrofit {
            &ckpt.meta.config.model
        } else {
            &model_config
        };
        checkpoint::ensure_compatible(ckpt, model, &config, &options.config_file)?;
    }
    if let Some(ckpt) = &resumed {
        checkpoint::ensure_same_optimizer(ckpt, &config, &options.config_file)?;
    }
    let lock = match world {
        Some(world) if !world.writes() => None,
        _ => Some(run_folder::prepare(
            &options.out_dir,
            "train",
            options.resume.is_some(),
            options.overwrite,
            Some(&options.config_file),
        )?),
    };
    let t = &config.train;
    set_cpu_threads(match world {
        // Ranks on one machine share its cores, unless the config says otherwise.
        Some(world) if t.threads == 0 && world.local_size > 1 => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            (cores / world.local_size).max(1)
        }
        _ => t.threads,
    });
    let device = match (t.device.resolve()?, world) {
        (Device::Cuda(_), Some(world)) => Device::Cuda(world.local_rank),
        (device, _) => device,
    };
    let threads_total = tch::get_num_threads().max(1) as usize;
    let workers = if t.data_parallel {
        worker_count(device, threads_total, t.batch_size)
    } else {
        1
    };
    let threads_per_worker = (threads_total / workers).max(1);
    let vs = nn::VarStore::new(device);
    // Dropout draws from the model's own generator, reseeded for every batch chunk.
    let model = seeded(t.seed, || Gpt::new(&vs.root(), &model_config))?
        .with_generator(Generator::new(t.seed)?);
    let mut optimizer = build_optimizer(&vs, &model_config, &config)?;
    if let Some(init) = &initial {
        if options.retrofit {
            let added = crate::retrofit::restore(&vs, init, &model_config, t.seed)?;
            tracing::info!(
                tensors = added.len(),
                "new depth-method tensors at their init"
            );
        } else {
            checkpoint::restore_weights(&vs, &init.loaded.model, &init.loaded.path)?;
        }
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
    let (schedule, branch_steps) = (t.schedule(), t.branch_steps());
    let tokens_per_step = (t.batch_size * model_config.block_size) as u64;
    let mut config = config;
    config.model = model_config;
    Ok(Trainer {
        base_model,
        schedule,
        branch_steps,
        tokens_per_step,
        growth_applied,
        train_flops,
        workers,
        threads_per_worker,
        tokenizer_json: data.tokenizer.to_json(),
        tokenizer_fingerprint: data.tokenizer.fingerprint(),
        train_tokens: data.splits.train,
        config,
        stage: Stage::new(vs, model, optimizer, parallel),
        device,
        evaluator,
        out_dir: options.out_dir.clone(),
        metrics: None,
        finished_before: None,
        start,
        step: start,
        events_done: None,
        best_val,
        last_eval: None,
        elapsed_before,
        clock: Instant::now(),
        train_secs: 0.0,
        last_checkpoint: resumed.map(|c| c.loaded.path),
        saved_at: None,
        hooks: Hooks::default(),
        ranks: None,
        stop: options.stop.clone(),
        stop_agreed: false,
        _lock: lock,
        _threads: threads,
    })
}

/// The summary of a resumed run that had already finished.
fn already_finished(trainer: &Trainer, options: &RunOptions) -> Option<RunSummary> {
    if options.resume.is_none() || trainer.start < trainer.config.train.max_iters {
        return None;
    }
    let done = RunSummary::finished(&options.out_dir).filter(|s| s.steps == trainer.start)?;
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
