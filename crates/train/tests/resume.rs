//! Kill and resume: an interrupted run continued from its checkpoint equals the
//! uninterrupted run bit for bit (CPU). Alone in its test binary, because concurrent
//! libtorch work in the same process may change BLAS thread scheduling and thus the bits.

mod common;

use common::{corpus, tiny_config};
use strata_train::checkpoint;
use strata_train::metrics::{MetricRecord, read_records};
use strata_train::{RunOptions, train};

/// The (step, kind, loss, val_loss) of every metric record, for exact comparisons.
fn losses(records: &[MetricRecord]) -> Vec<(u64, String, Option<u64>, Option<u64>)> {
    records
        .iter()
        .map(|r| {
            (
                r.step,
                r.kind.clone(),
                r.loss.map(f64::to_bits),
                r.val_loss.map(f64::to_bits),
            )
        })
        .collect()
}

#[test]
fn kill_and_resume_reproduces_the_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // A DenseFormer with dropout, so the resumed run must also restore random state.
    let config = tiny_config(&corpus(dir.path()), 30, true, 0.1);
    let whole = dir.path().join("whole");
    train(config.clone(), &RunOptions::new("tiny.toml", &whole)).unwrap();

    let split = dir.path().join("split");
    let mut first = RunOptions::new("tiny.toml", &split);
    first.stop_after = Some(13);
    let stopped = train(config.clone(), &first).unwrap();
    assert!(stopped.interrupted);
    assert_eq!(stopped.steps, 13);
    let mut second = RunOptions::new("tiny.toml", &split);
    second.resume = Some(split.clone());
    let resumed = train(config, &second).unwrap();
    assert!(!resumed.interrupted);

    let a = read_records(&whole.join("metrics.jsonl")).unwrap();
    let b = read_records(&split.join("metrics.jsonl")).unwrap();
    assert_eq!(a.len(), 30 + 4);
    assert_eq!(losses(&a), losses(&b));
    let wa = checkpoint::load(&whole).unwrap();
    let wb = checkpoint::load(&split).unwrap();
    for ((na, ta), (nb, tb)) in wa.loaded.model.iter().zip(&wb.loaded.model) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
}
