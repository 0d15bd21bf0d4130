//! A `Trainer` driven by hand, one step at a time, equals `train()` on the same config bit for
//! bit (CPU): the metrics log's losses and learning rates, the final checkpoint's weights and
//! optimizer state, and the summary's losses; also when the hand-driven run is stopped, and
//! continued with `Trainer::load`. The hooks see each growth event, evaluation and checkpoint
//! the logs record. Alone in its test binary, because concurrent libtorch work in the same
//! process may change BLAS thread scheduling and thus the bits.

mod common;

use common::{corpus, tiny_config};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use strata_growth::GrowthOp;
use strata_train::checkpoint;
use strata_train::growth_schedule::GrowthEvent;
use strata_train::metrics::{MetricRecord, read_records};
use strata_train::trainer::{Evaluation, Growth};
use strata_train::{RunOptions, RunSummary, Trainer, train};

/// The (step, kind, loss, val_loss, lr) of every metric record, for exact comparisons.
type Exact = (u64, String, Option<u64>, Option<u64>, Option<u64>);

/// [`Exact`] of every record of the run folder `run`.
fn exact_records(run: &Path) -> Vec<Exact> {
    let records: Vec<MetricRecord> = read_records(&run.join("metrics.jsonl")).unwrap();
    records
        .iter()
        .map(|r| {
            (
                r.step,
                r.kind.clone(),
                r.loss.map(f64::to_bits),
                r.val_loss.map(f64::to_bits),
                r.lr.map(f64::to_bits),
            )
        })
        .collect()
}

/// Asserts that the latest checkpoints of runs `a` and `b` hold identical weights and
/// optimizer state, at the same step.
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (ca, cb) = (checkpoint::load(a).unwrap(), checkpoint::load(b).unwrap());
    assert_eq!(ca.meta.step, cb.meta.step);
    for (what, ta, tb) in [
        ("weights", &ca.loaded.model, &cb.loaded.model),
        ("optimizer", &ca.loaded.optimizer, &cb.loaded.optimizer),
    ] {
        assert_eq!(ta.len(), tb.len(), "{what}");
        for ((na, xa), (nb, xb)) in ta.iter().zip(tb) {
            assert_eq!(na, nb, "{what}");
            assert!(xa.equal(xb), "{what}: `{na}` differs");
        }
    }
}

/// Asserts that two summaries report bitwise the same losses and counts.
fn assert_same_summary(a: &RunSummary, b: &RunSummary) {
    let bits = |s: &RunSummary| {
        (
            s.steps,
            s.final_train_loss.map(f64::to_bits),
            s.final_val_loss.map(f64::to_bits),
            s.best_val_loss.map(f64::to_bits),
            s.train_flops.to_bits(),
            s.params.total,
            s.interrupted,
        )
    };
    assert_eq!(bits(a), bits(b));
}

/// What the hooks of a trainer saw.
#[derive(Default)]
struct Seen {
    growth: Vec<Growth>,
    evaluations: Vec<Evaluation>,
    checkpoints: Vec<PathBuf>,
}

/// Registers hooks on `trainer` that record into `seen`.
fn watch(trainer: &mut Trainer, seen: &Arc<Mutex<Seen>>) {
    let s = seen.clone();
    trainer.on_growth(move |g| s.lock().unwrap().growth.push(g.clone()));
    let s = seen.clone();
    trainer.on_evaluation(move |e| s.lock().unwrap().evaluations.push(*e));
    let s = seen.clone();
    trainer.on_checkpoint(move |p| s.lock().unwrap().checkpoints.push(p.to_path_buf()));
}

/// Steps `trainer` by hand until it is finished or has done `until` steps, checking each
/// report against the metrics line the step wrote.
fn step_until(trainer: &mut Trainer, until: u64) {
    while !trainer.is_finished() && trainer.steps_done() < until {
        let before = trainer.steps_done();
        let report = trainer.step().unwrap();
        assert_eq!(report.step, before + 1);
        assert!(
            report.loss.is_some_and(f64::is_finite),
            "CPU reads every loss"
        );
        assert_eq!(trainer.steps_done(), report.step);
    }
}

#[test]
fn a_trainer_stepped_by_hand_equals_train_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // A DenseFormer with dropout and a growth event: random state, the DWA and growth must
    // all follow the same path.
    let mut config = tiny_config(&corpus(dir.path()), 24, true, 0.1);
    config.growth = vec![GrowthEvent {
        step: 15,
        op: GrowthOp::InsertBlocks { after: vec![1] },
    }];
    let whole = dir.path().join("whole");
    let by_train = train(config.clone(), &RunOptions::new("tiny.toml", &whole)).unwrap();

    // By hand, start to end.
    let by_hand = dir.path().join("by-hand");
    let mut trainer =
        Trainer::new(config.clone(), &RunOptions::new("tiny.toml", &by_hand)).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    watch(&mut trainer, &seen);
    step_until(&mut trainer, u64::MAX);
    assert!(
        trainer.step().is_err(),
        "a finished run takes no more steps"
    );
    let summary = trainer.finish().unwrap();
    assert_eq!(exact_records(&whole), exact_records(&by_hand));
    assert_same_checkpoint(&whole, &by_hand);
    assert_same_summary(&by_train, &summary);

    // The hooks saw what the logs record: every evaluation (with its losses), every
    // checkpoint folder, and the growth event at its step.
    let seen = seen.lock().unwrap();
    let evals: Vec<(u64, u64, u64)> = read_records(&by_hand.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r.kind == "eval")
        .map(|r| {
            (
                r.step,
                r.loss.unwrap().to_bits(),
                r.val_loss.unwrap().to_bits(),
            )
        })
        .collect();
    let hooked: Vec<(u64, u64, u64)> = seen
        .evaluations
        .iter()
        .map(|e| (e.step, e.train_loss.to_bits(), e.val_loss.to_bits()))
        .collect();
    assert_eq!(hooked, evals);
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 10, 15, 20, 24]
    );
    let steps: Vec<u64> = seen
        .checkpoints
        .iter()
        .map(|p| checkpoint::load(p).unwrap().meta.step)
        .collect();
    assert_eq!(steps, [10, 20, 24]);
    assert_eq!(seen.growth.len(), 1);
    let growth = &seen.growth[0];
    assert_eq!((growth.step, &growth.op), (15, &config.growth[0].op));
    assert!(growth.params_after > growth.params_before, "{growth:?}");

    // By hand, stopped after 13 steps (a checkpoint there, a summary saying so), then
    // continued with `Trainer::load` to the end.
    let split = dir.path().join("split");
    let options = RunOptions::new("tiny.toml", &split);
    let mut first = Trainer::new(config.clone(), &options).unwrap();
    step_until(&mut first, 13);
    let saved = first.save().unwrap();
    assert_eq!(first.save().unwrap(), saved, "one checkpoint per step");
    let stopped = first.finish().unwrap();
    assert!(stopped.interrupted);
    assert_eq!(stopped.steps, 13);
    let mut second = Trainer::load(config, &split, &options).unwrap();
    assert_eq!(second.steps_done(), 13);
    assert_eq!(
        second.last_checkpoint().and_then(Path::file_name),
        saved.file_name(),
        "the checkpoint resumed from is the last good one"
    );
    step_until(&mut second, u64::MAX);
    let resumed = second.finish().unwrap();
    assert_eq!(exact_records(&whole), exact_records(&split));
    assert_same_checkpoint(&whole, &split);
    assert_same_summary(&by_train, &resumed);
}
