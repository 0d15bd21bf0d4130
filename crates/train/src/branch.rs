//! Cooldown branches: many budgets from one warmup-stable-decay run.
//!
//! A WSD run of `B` steps runs at the peak rate until its decay start
//! `B - max(1, round(decay_fraction · B))` and decays after it. Up to that step its learning
//! rate does not depend on `B`, and batches and dropout depend only on the seed and the step,
//! so a longer WSD run with the same settings passes through exactly the state a run of `B`
//! steps has at its decay start. [`cooldown`] resumes that state from a checkpoint of the long
//! run (kept there because its `train.branch_budgets` lists `B`) with `max_iters = B`: the
//! branch equals a dedicated run of `B` steps (bit for bit on CPU, tested) for the cost of
//! its decay.

use crate::checkpoint::{self, checkpoint_dir};
use crate::checkpoint_io;
use crate::config::{RunConfig, TrainConfig};
use crate::driver::train;
use crate::run_folder;
use crate::schedule::ScheduleKind;
use crate::trainer::{RunOptions, RunSummary};
use std::path::Path;
use strata_tensor::{Error, Result};

/// The `[train]` fields a branch may change from its source: the run's length and the
/// checkpoints it keeps. Everything else must be equal for the branch to continue the same
/// run.
pub const SCHEDULE_LENGTH_FIELDS: [&str; 3] = ["max_iters", "lr_decay_iters", "branch_budgets"];

/// The first `[train]` field outside [`SCHEDULE_LENGTH_FIELDS`] in which `a` and `b` differ,
/// as `train.field: a vs b`.
pub fn train_difference(a: &TrainConfig, b: &TrainConfig) -> Option<String> {
    let fields = |t: &TrainConfig| match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (fields(a), fields(b));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| !SCHEDULE_LENGTH_FIELDS.contains(&key.as_str()))
        .find_map(|key| {
            let (x, y) = (a.get(key), b.get(key));
            (x != y).then(|| {
                let show = |v: Option<&serde_json::Value>| {
                    v.map_or("(default)".to_owned(), |v| v.to_string())
                };
                format!("train.{key}: {} vs {}", show(x), show(y))
            })
        })
}

/// The config of a branch of `source` (read from `file`) with `budget_iters` steps: the
/// source's with `max_iters = budget_iters`, no branch budgets of its own and only the growth
/// events before its last step. Refuses a source
/// that is not WSD and a budget whose decay start lies outside the source's stable phase.
pub fn branch_config(source: &RunConfig, budget_iters: u64, file: &Path) -> Result<RunConfig> {
    let t = &source.train;
    if t.schedule != ScheduleKind::Wsd {
        return Err(Error::config(
            file.display().to_string(),
            "train.schedule",
            "\"wsd\" (a cooldown branch continues a run's stable phase; a cosine run has none)",
            "\"cosine\"",
        ));
    }
    let start = t.decay_start(budget_iters);
    let source_start = t.decay_start(t.max_iters);
    if budget_iters == 0 || start < t.warmup_iters || start > source_start {
        return Err(Error::Invalid(format!(
            "cooldown branch of {}: a WSD run of {budget_iters} steps would start its decay at \
             step {start}, outside the source's stable phase (steps {} to {source_start}); \
             expected a budget of at most {} steps whose decay starts after the warmup",
            file.display(),
            t.warmup_iters,
            t.max_iters
        )));
    }
    let mut config = source.clone();
    config.train.max_iters = budget_iters;
    if config.train.lr_decay_iters.is_some() {
        config.train.lr_decay_iters = Some(budget_iters);
    }
    config.train.branch_budgets.clear();
    // Growth the branch never reaches is not its own (a growth at its last step or later).
    config.growth.retain(|event| event.step < budget_iters);
    Ok(config)
}

/// Trains the cooldown branch of the WSD run in `source_run` for a budget of `budget_iters`
/// steps into the run folder `out`: resumes the source's checkpoint at the decay start of a
/// `budget_iters`-step run with the source's config but `max_iters = budget_iters`. The
/// branch's `metrics.jsonl` starts with the source's records up to that step; its summary's
/// wall time includes the source's time up to it.
///
/// `options` supplies `progress`, `stop`, `stop_after` and `overwrite`; its other fields are
/// set here. A finished branch in `out` is returned as it is, an interrupted one resumed;
/// another run in `out` is refused unless `overwrite`. Refuses a source that is not WSD, a
/// budget whose decay start is not in the source's stable phase, a source without a
/// checkpoint there (`train.branch_budgets` of the source must list the budget), and a
/// checkpoint whose training settings differ from the source config beyond the run length.
pub fn cooldown(
    source_run: &Path,
    budget_iters: u64,
    out: &Path,
    options: &RunOptions,
) -> Result<RunSummary> {
    let source_file = source_run.join("config.toml");
    let source = RunConfig::load(&source_file, &[])?;
    let config = branch_config(&source, budget_iters, &source_file)?;
    let step = config.train.decay_start(budget_iters);
    let mut branch = options.clone();
    branch.config_file = source_file;
    branch.out_dir = out.to_path_buf();
    branch.init_from = None;
    let same_branch = RunConfig::load(&out.join("config.toml"), &[]).is_ok_and(|c| c == config);
    if same_branch && !options.overwrite {
        if let Some(done) = RunSummary::finished(out) {
            tracing::info!(branch = %out.display(), "cooldown branch already finished");
            return Ok(done);
        }
        if checkpoint_io::latest_checkpoint(out).is_ok_and(|c| c.is_some()) {
            tracing::info!(branch = %out.display(), "resuming an interrupted cooldown branch");
            branch.resume = Some(out.to_path_buf());
            return train(config, &branch);
        }
    }
    let at = checkpoint_dir(source_run, step);
    if !at.exists() {
        return Err(Error::checkpoint(
            &at,
            format!(
                "no checkpoint at step {step}, where a WSD run of {budget_iters} steps starts its \
                 decay; the source run keeps one there when its train.branch_budgets lists \
                 {budget_iters} (it lists {:?})",
                source.train.branch_budgets
            ),
        ));
    }
    let saved = checkpoint::load(&at)?;
    if let Some(diff) = train_difference(&saved.meta.config.train, &config.train) {
        return Err(Error::checkpoint(
            &at,
            format!(
                "was trained with other settings than {} (only {} may differ in a branch): {diff}",
                branch.config_file.display(),
                SCHEDULE_LENGTH_FIELDS.join(", ")
            ),
        ));
    }
    if saved.meta.step != step {
        return Err(Error::checkpoint(
            &at,
            format!("records step {}, expected {step}", saved.meta.step),
        ));
    }
    // A branch killed before its first checkpoint left only its own files: start it afresh.
    // The folder is prepared under its lock, which is released before `train` takes it again.
    {
        let overwrite = options.overwrite || same_branch;
        let keep = Some(options.config_file.as_path());
        let _lock = run_folder::prepare(out, "branch", false, overwrite, keep)?;
        checkpoint_io::write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
        let metrics = source_run.join("metrics.jsonl");
        if metrics.exists() {
            let bytes = std::fs::read(&metrics).map_err(Error::io(&metrics))?;
            checkpoint_io::write_atomic(&out.join("metrics.jsonl"), &bytes)?;
        }
    }
    tracing::info!(
        source = %source_run.display(),
        step,
        budget_iters,
        branch = %out.display(),
        "starting a cooldown branch"
    );
    branch.resume = Some(at);
    train(config, &branch)
}
