//! Resume across growth: runs stopped before, at and after a growth step and resumed
//! reproduce the uninterrupted run bit for bit (CPU). Alone in its test binary, as
//! `resume.rs`, so that no concurrent libtorch work changes BLAS scheduling.

mod common;

use common::{corpus, tiny_config};
use strata_growth::GrowthOp;
use strata_train::growth_schedule::GrowthEvent;
use strata_train::metrics::read_records;
use strata_train::{RunOptions, checkpoint, train};

#[test]
fn resuming_across_growth_reproduces_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&corpus(dir.path()), 20, true, 0.1);
    config.growth = vec![
        GrowthEvent {
            step: 7,
            op: GrowthOp::WidenResidual {
                d_model: 64,
                noise: 0.05,
                widen_heads: false,
            },
        },
        GrowthEvent {
            step: 12,
            op: GrowthOp::InsertBlocks { after: vec![2] },
        },
    ];
    let whole = dir.path().join("whole");
    train(config.clone(), &RunOptions::new("tiny.toml", &whole)).unwrap();
    let reference = read_records(&whole.join("metrics.jsonl")).unwrap();
    let bits =
        |records: &[strata_train::metrics::MetricRecord]| -> Vec<(u64, Option<u64>, Option<u64>)> {
            records
                .iter()
                .map(|r| {
                    (
                        r.step,
                        r.loss.map(f64::to_bits),
                        r.val_loss.map(f64::to_bits),
                    )
                })
                .collect()
        };
    for stop in [5, 7, 12, 15] {
        let split = dir.path().join(format!("split-{stop}"));
        let mut first = RunOptions::new("tiny.toml", &split);
        first.stop_after = Some(stop);
        assert!(train(config.clone(), &first).unwrap().interrupted);
        let mut second = RunOptions::new("tiny.toml", &split);
        second.resume = Some(split.clone());
        train(config.clone(), &second).unwrap();
        let resumed = read_records(&split.join("metrics.jsonl")).unwrap();
        assert_eq!(bits(&reference), bits(&resumed), "stopped at step {stop}");
        let (a, b) = (
            checkpoint::load(&whole).unwrap(),
            checkpoint::load(&split).unwrap(),
        );
        assert_eq!(a.meta.config.model, b.meta.config.model);
        assert_eq!(
            a.meta.train_flops, b.meta.train_flops,
            "stopped at step {stop}"
        );
        for ((na, ta), (nb, tb)) in a.loaded.model.iter().zip(&b.loaded.model) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{na} differs after resuming at step {stop}");
        }
    }
}
