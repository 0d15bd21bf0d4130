//! Metrics JSON lines: appending, typed records, truncation on resume, malformed lines.

use serde_json::json;
use strata_train::metrics::{MetricRecord, MetricsLog, read_metrics, read_records};

/// A training record at `step`.
fn train_record(step: u64) -> MetricRecord {
    MetricRecord {
        step,
        kind: "train".to_owned(),
        loss: Some(5.0 - step as f64 * 0.01),
        val_loss: None,
        lr: Some(1e-3),
        tokens_per_sec: Some(12345.5),
        train_flops: None,
        elapsed_s: step as f64 * 0.5,
        ..MetricRecord::default()
    }
}

/// An evaluation record at `step`.
fn eval_record(step: u64) -> MetricRecord {
    MetricRecord {
        step,
        kind: "eval".to_owned(),
        loss: Some(4.0),
        val_loss: Some(4.25),
        lr: None,
        tokens_per_sec: None,
        train_flops: None,
        elapsed_s: step as f64 * 0.5 + 0.1,
        ..MetricRecord::default()
    }
}

#[test]
fn records_round_trip_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut log = MetricsLog::open(&path, None).unwrap();
    let written = vec![
        eval_record(0),
        train_record(10),
        train_record(20),
        eval_record(20),
    ];
    for r in &written {
        log.record(r).unwrap();
    }
    log.log(&json!({"step": 20, "kind": "note", "elapsed_s": 1.0, "extra": "x"}))
        .unwrap();
    // Every line is flushed: readable while the log is still open.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.ends_with('\n'));
    let values = read_metrics(&path).unwrap();
    assert_eq!(values.len(), 5);
    assert_eq!(values[4]["extra"], "x");
    let records = read_records(&path).unwrap();
    assert_eq!(&records[..4], &written[..]);
    assert_eq!(records[4].kind, "note");
}

#[test]
fn resume_drops_lines_after_the_checkpoint_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    // Uninterrupted run: steps 0..=60, eval every 20.
    let full: Vec<MetricRecord> = (0..=6)
        .flat_map(|k| {
            let step = k * 10;
            let mut out = vec![];
            if k > 0 {
                out.push(train_record(step));
            }
            if step % 20 == 0 {
                out.push(eval_record(step));
            }
            out
        })
        .collect();
    // Interrupted run: checkpoint at 40, then went on to 50 before dying.
    let mut log = MetricsLog::open(&path, None).unwrap();
    for r in full.iter().filter(|r| r.step <= 50) {
        log.record(r).unwrap();
    }
    drop(log);
    // Resume at step 40 and continue.
    let mut log = MetricsLog::open(&path, Some(40)).unwrap();
    assert!(read_records(&path).unwrap().iter().all(|r| r.step <= 40));
    for r in full.iter().filter(|r| r.step > 40) {
        log.record(r).unwrap();
    }
    assert_eq!(read_records(&path).unwrap(), full);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "metrics.jsonl")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn resume_without_existing_log_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut log = MetricsLog::open(&path, Some(100)).unwrap();
    log.record(&train_record(101)).unwrap();
    assert_eq!(read_records(&path).unwrap().len(), 1);
}

#[test]
fn malformed_line_error_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(
        &path,
        "{\"step\": 1, \"kind\": \"train\", \"elapsed_s\": 0.1}\n\n{\"step\": 2, oops}\n",
    )
    .unwrap();
    let err = read_metrics(&path).unwrap_err().to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("line 3"),
        "{err}"
    );
    let err = read_records(&path).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
    // A malformed line in the middle is not a torn write: resuming refuses to guess.
    let err = MetricsLog::open(&path, Some(10)).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn record_with_wrong_fields_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(
        &path,
        "{\"step\": 1, \"kind\": \"train\", \"elapsed_s\": 0.1}\n{\"step\": \"two\"}\n",
    )
    .unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), 2);
    let err = read_records(&path).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("not a metrics record"),
        "{err}"
    );
}

#[test]
fn missing_log_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.jsonl");
    let err = read_metrics(&path).unwrap_err().to_string();
    assert!(err.contains("absent.jsonl"), "{err}");
}
