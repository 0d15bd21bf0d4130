//! The run folder: what strata writes into it, readying it for a writer (lock, stale
//! temporaries, replacing a run), finding its checkpoints, and pruning old ones.
//!
//! [`RUN_ENTRIES`] is the one list of names strata writes into a run folder. Replacing a run
//! (`RunOptions::overwrite`) removes exactly those and refuses, deleting nothing, when the
//! folder holds anything else (a user's notes survive).

use crate::checkpoint::{self, Checkpoint};
use crate::checkpoint_io::{self, LATEST_FILE, META_FILE};
use crate::metrics::read_records;
use crate::run_lock::{LOCK_FILE, RunLock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};

/// Folder of the checkpoints inside a run folder.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// Every name strata writes into a run folder: checkpoints, the config as run (`config.toml`,
/// a sweep's `run.toml` and a child process's `job.json`, a merge's `merge.toml`), metrics,
/// summary, plots and the lock file.
pub const RUN_ENTRIES: &[&str] = &[
    CHECKPOINTS_DIR,
    "config.toml",
    "run.toml",
    "job.json",
    "merge.toml",
    "metrics.jsonl",
    "summary.json",
    "loss.png",
    "loss.svg",
    "dwa_weights.png",
    "dwa_weights.svg",
    LOCK_FILE,
];

/// Prefix of the probe files [`checkpoint_io::check_writable`] writes.
const PROBE_PREFIX: &str = ".strata-write-probe-";

/// Locks the run folder `dir` for `what` and readies it for writing: stale temporaries are
/// removed, and an existing run is kept when `continuing`, replaced when `overwrite` (only
/// what strata wrote, `keep` aside: e.g. the config file the new run reads), and otherwise
/// refused. The returned lock must be held for as long as the writer writes.
pub fn prepare(
    dir: &Path,
    what: &str,
    continuing: bool,
    overwrite: bool,
    keep: Option<&Path>,
) -> Result<RunLock> {
    checkpoint_io::check_writable(dir)?;
    let lock = RunLock::acquire(dir, what)?;
    remove_stale_temporaries(dir);
    if !continuing && holds_run(dir) {
        if !overwrite {
            return Err(Error::RunFolderTaken {
                dir: dir.to_path_buf(),
                has_checkpoint: has_checkpoint(dir),
            });
        }
        clear(dir, keep)?;
    }
    Ok(lock)
}

/// True when `dir` holds (part of) a run: checkpoints or a metrics log.
fn holds_run(dir: &Path) -> bool {
    dir.join(CHECKPOINTS_DIR).exists() || dir.join("metrics.jsonl").exists()
}

/// True when `dir` looks like a run folder (it holds something only a run writes).
pub fn is_run_folder(dir: &Path) -> bool {
    holds_run(dir) || dir.join("summary.json").exists() || dir.join("config.toml").exists()
}

/// Removes what strata wrote into `dir` (the lock file and `keep` aside); refuses, removing
/// nothing, when `dir` holds anything else.
fn clear(dir: &Path, keep: Option<&Path>) -> Result<()> {
    let keep = keep.and_then(|k| std::fs::canonicalize(k).ok());
    let mut doomed = Vec::new();
    for (name, path) in entries(dir)? {
        if name == LOCK_FILE || (keep.is_some() && std::fs::canonicalize(&path).ok() == keep) {
            continue;
        }
        if !RUN_ENTRIES.contains(&name.as_str()) {
            return Err(unexpected(dir, &name));
        }
        if name == CHECKPOINTS_DIR && path.is_dir() {
            for (inner, _) in entries(&path)? {
                let known = inner == LATEST_FILE
                    || step_of(&inner).is_some()
                    || temporary_target(&inner).is_some();
                if !known {
                    return Err(unexpected(dir, &format!("{CHECKPOINTS_DIR}/{inner}")));
                }
            }
        }
        doomed.push(path);
    }
    for path in doomed {
        remove(&path)?;
    }
    tracing::info!(folder = %dir.display(), "removed the previous run (overwrite)");
    Ok(())
}

/// The refusal to replace the run in `dir`, which holds `name`, which strata did not write.
fn unexpected(dir: &Path, name: &str) -> Error {
    Error::ForeignEntry {
        dir: dir.to_path_buf(),
        name: name.to_owned(),
    }
}

/// (file name, path) of every entry of `dir`, sorted by name.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

/// Removes a file or a folder tree.
fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(Error::io(path))
}

/// The name a strata temporary (`.<name>.tmp-<pid>`, `.<stem>.tmp-<pid>.<ext>`,
/// `.<name>.old-<pid>`) stands in for, and whether it is an `old` copy; `None` for other names.
fn temporary_target(name: &str) -> Option<(String, bool)> {
    let rest = name.strip_prefix('.')?;
    for (marker, old) in [(".tmp-", false), (".old-", true)] {
        let Some(at) = rest.rfind(marker) else {
            continue;
        };
        let (base, tail) = (&rest[..at], &rest[at + marker.len()..]);
        let (pid, ext) = tail
            .split_once('.')
            .map_or((tail, None), |(p, e)| (p, Some(e)));
        if base.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let target = ext.map_or_else(|| base.to_owned(), |ext| format!("{base}.{ext}"));
        return Some((target, old));
    }
    None
}

/// True for a probe file left by [`checkpoint_io::check_writable`].
fn is_probe(name: &str) -> bool {
    name.strip_prefix(PROBE_PREFIX)
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporaries killed writers left in the run folder `dir` and its checkpoints
/// folder: half-written files and checkpoint folders under strata's own temporary names (only
/// those). A checkpoint whose replacement was interrupted is put back from its complete copy.
/// Call it only while holding the folder's lock; failures are logged, not fatal.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(top) = entries(dir) else { return };
    for (name, path) in top {
        let ours = is_probe(&name)
            || temporary_target(&name)
                .is_some_and(|(target, old)| !old && RUN_ENTRIES.contains(&target.as_str()));
        if ours {
            discard(&path);
        }
    }
    let folder = dir.join(CHECKPOINTS_DIR);
    let Ok(inner) = entries(&folder) else { return };
    for (name, path) in inner {
        let Some((target, old)) = temporary_target(&name) else {
            continue;
        };
        if target != LATEST_FILE && step_of(&target).is_none() {
            continue;
        }
        let complete = folder.join(&target);
        if old && !complete.exists() {
            // Killed between moving a checkpoint aside and renaming its replacement in: the
            // moved copy is complete (the replacement was synced before it was moved).
            match std::fs::rename(&path, &complete) {
                Ok(()) => {
                    tracing::warn!(checkpoint = %complete.display(), "restored a checkpoint whose replacement was interrupted")
                }
                Err(e) => {
                    tracing::warn!(folder = %path.display(), error = %e, "cannot restore an interrupted checkpoint")
                }
            }
        } else {
            discard(&path);
        }
    }
}

/// Removes one stale temporary, logging what happened.
fn discard(path: &Path) {
    match remove(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed a temporary left by an interrupted run")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale temporary")
        }
    }
}

/// The step of a checkpoint folder name (`step-000500` -> 500).
fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The checkpoint folders of the run folder `dir` by step (temporaries aside).
pub fn checkpoint_steps(dir: &Path) -> BTreeMap<u64, PathBuf> {
    entries(&dir.join(CHECKPOINTS_DIR))
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, path)| path.is_dir())
        .filter_map(|(name, path)| Some((step_of(&name)?, path)))
        .collect()
}

/// True when the run folder `dir` has a checkpoint (or a `LATEST` naming one).
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(CHECKPOINTS_DIR).join(LATEST_FILE).exists() || !checkpoint_steps(dir).is_empty()
}

/// The newest checkpoint of the run folder `dir` that reads back completely, for a run
/// folder that lost its `LATEST`.
pub fn newest_valid_checkpoint(dir: &Path) -> Option<PathBuf> {
    for (_, path) in checkpoint_steps(dir).into_iter().rev() {
        match checkpoint_io::read_checkpoint(&path) {
            Ok(_) => return Some(path),
            Err(e) => tracing::warn!(error = %e, "skipping a checkpoint that does not read back"),
        }
    }
    None
}

/// Loads the checkpoint a resumed run names (`RunOptions::resume`): a checkpoint folder, or a run folder's latest; a
/// run folder whose run stopped before its first checkpoint gets an error saying what to run.
pub fn load_for_resume(path: &Path) -> Result<Checkpoint> {
    let bare_run = !path.join(META_FILE).exists() && is_run_folder(path) && !has_checkpoint(path);
    if bare_run {
        return Err(Error::NothingToResume {
            dir: path.to_path_buf(),
        });
    }
    checkpoint::load(path)
}

/// Deletes old checkpoints of the run folder `dir` so that the newest `keep_last` remain,
/// never the latest (`latest_step`) nor the one with the best validation loss in the metrics
/// log, nor any step in `protected` (the branch points of a WSD run); checkpoints after
/// `latest_step` (left by an abandoned continuation) are not touched. Problems are logged,
/// not fatal: pruning is housekeeping.
pub fn prune_checkpoints(dir: &Path, keep_last: usize, latest_step: u64, protected: &[u64]) {
    let mut steps = checkpoint_steps(dir);
    steps.retain(|&step, _| step <= latest_step);
    let older: Vec<u64> = steps.keys().copied().filter(|&s| s < latest_step).collect();
    let keep_older = keep_last.saturating_sub(1);
    if older.len() <= keep_older {
        return;
    }
    let best = match best_validation_step(dir, &steps) {
        Ok(best) => best,
        Err(e) => {
            tracing::warn!(error = %e, "not pruning checkpoints: cannot tell the best one");
            return;
        }
    };
    for step in &older[..older.len() - keep_older] {
        if Some(*step) == best || protected.contains(step) {
            continue;
        }
        let path = &steps[step];
        match remove(path) {
            Ok(()) => {
                tracing::info!(checkpoint = %path.display(), keep_last, "pruned an old checkpoint")
            }
            Err(e) => {
                tracing::warn!(checkpoint = %path.display(), error = %e, "cannot prune a checkpoint")
            }
        }
    }
}

/// The step of the checkpoint (among `steps`) with the lowest validation loss evaluated at
/// its step, by the metrics log of `dir` (the last evaluation of a step counts).
fn best_validation_step(dir: &Path, steps: &BTreeMap<u64, PathBuf>) -> Result<Option<u64>> {
    let mut val_at = BTreeMap::new();
    for record in read_records(&dir.join("metrics.jsonl"))? {
        if let (true, Some(val)) = (record.kind == "eval", record.val_loss) {
            val_at.insert(record.step, val);
        }
    }
    Ok(val_at
        .into_iter()
        .filter(|(step, val)| steps.contains_key(step) && !val.is_nan())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(step, _)| step))
}
