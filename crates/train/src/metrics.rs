//! Training metrics as JSON lines: one object per line in `<run>/metrics.jsonl`.
//!
//! Each line is flushed as it is written, so an interrupted run loses at most the line being
//! written. Resuming at step `s` drops the lines the interrupted run wrote after `s` (and a torn
//! last line), so the log of a resumed run matches that of an uninterrupted one.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};

/// One typed metrics line: a training step (`kind` = `"train"`) or an evaluation (`"eval"`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MetricRecord {
    /// Optimizer steps completed when the record was taken.
    pub step: u64,
    /// `"train"` or `"eval"`.
    pub kind: String,
    /// Training loss (of the last batch for `train`, of the fixed eval batches for `eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Validation loss (`eval` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Standard error of `val_loss` (`eval` records): over windows with `train.eval_tokens`,
    /// over batches otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss_se: Option<f64>,
    /// Loss on training tokens no step had trained on yet (`eval` records with
    /// `train.eval_unseen`; see `evaluation::UnseenTracker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_loss: Option<f64>,
    /// How many tokens `unseen_loss` averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_tokens: Option<u64>,
    /// Learning rate used for the step (`train` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Training throughput (`train` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    /// Training FLOPs spent so far (summed across growth stages and resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_flops: Option<f64>,
    /// Seconds since the start of the run (summed across resumes).
    pub elapsed_s: f64,
}

/// An open metrics log that appends one JSON object per line.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (creating if needed) the log at `path` for appending; with
    /// `truncate_after_step = Some(s)` first drops lines with `step > s` (atomic rewrite).
    pub fn open(path: &Path, truncate_after_step: Option<u64>) -> Result<Self> {
        if let Some(step) = truncate_after_step {
            truncate_after(path, step)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(Error::io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file this log writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `value` (which must be a JSON object) as one line and flushes it.
    pub fn log(&mut self, value: &serde_json::Value) -> Result<()> {
        if !value.is_object() {
            return Err(Error::Invalid(format!(
                "{}: metrics lines must be JSON objects, got {value}",
                self.path.display()
            )));
        }
        let mut line = serde_json::to_string(value).map_err(|e| {
            Error::Invalid(format!(
                "{}: cannot encode metrics line: {e}",
                self.path.display()
            ))
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(Error::io(&self.path))?;
        self.file.flush().map_err(Error::io(&self.path))
    }

    /// Appends a typed record as one line and flushes it.
    pub fn record(&mut self, record: &MetricRecord) -> Result<()> {
        let value = serde_json::to_value(record).map_err(|e| {
            Error::Invalid(format!(
                "{}: cannot encode metrics record: {e}",
                self.path.display()
            ))
        })?;
        self.log(&value)
    }
}

/// Reads every line of a metrics log (blank lines are skipped); a malformed line is an error
/// naming its line number.
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    Ok(read_lines(path)?
        .into_iter()
        .map(|(_, value)| value)
        .collect())
}

/// Reads a metrics log as typed records; a line that is not a [`MetricRecord`] is an error
/// naming its line number.
pub fn read_records(path: &Path) -> Result<Vec<MetricRecord>> {
    read_lines(path)?
        .into_iter()
        .map(|(number, value)| {
            serde_json::from_value(value).map_err(|e| {
                Error::data(
                    path,
                    format!(
                        "line {number}: not a metrics record (step, kind, elapsed_s, ...): {e}"
                    ),
                )
            })
        })
        .collect()
}

/// Parses a metrics log into (1-based line number, object) pairs.
fn read_lines(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push((index + 1, parse_line(path, index + 1, line)?));
    }
    Ok(out)
}

/// Parses one line, which must hold a JSON object.
fn parse_line(path: &Path, number: usize, line: &str) -> Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        Error::data(
            path,
            format!("line {number}: malformed JSON (expected one object per line): {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(Error::data(
            path,
            format!("line {number}: expected a JSON object, found {value}"),
        ));
    }
    Ok(value)
}

/// Rewrites the log at `path` without lines whose `step` exceeds `step` (no-op if missing).
///
/// A malformed last line without a trailing newline is a write torn by the interruption and is
/// dropped with a warning; any other malformed line is an error.
fn truncate_after(path: &Path, step: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path)(e)),
    };
    let torn_tail = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0usize;
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = match parse_line(path, index + 1, line) {
            Ok(value) => value,
            Err(_) if torn_tail && index + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), line = index + 1, "dropping torn last metrics line");
                dropped += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if value
            .get("step")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|s| s > step)
        {
            dropped += 1;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if dropped == 0 && !torn_tail {
        return Ok(());
    }
    crate::checkpoint_io::write_atomic(path, kept.as_bytes())?;
    tracing::info!(path = %path.display(), dropped, after_step = step, "truncated metrics log for resume");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_dropped_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"lo").unwrap();
        let mut log = MetricsLog::open(&path, Some(5)).unwrap();
        log.log(&serde_json::json!({"step": 6})).unwrap();
        let steps: Vec<u64> = read_metrics(&path)
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 6]);
    }

    #[test]
    fn non_objects_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        assert!(log.log(&serde_json::json!([1, 2])).is_err());
        std::fs::write(&path, "{\"step\":1}\n42\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
