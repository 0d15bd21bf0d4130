//! Kill and resume: an interrupted run continued from its checkpoint equals the
//! uninterrupted run bit for bit (CPU). Alone in its test binary, because concurrent
//! libtorch work in the same process may change BLAS thread scheduling and thus the bits.

mod common;

use common::{corpus, tiny_config};
use std::path::Path;
use strata_core::{MlpKind, NormKind, PositionKind};
use strata_train::RunConfig;
use strata_train::checkpoint;
use strata_train::metrics::{MetricRecord, read_records};
use strata_train::optimizer::{OptimizerConfig, OptimizerKind};
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
    check_resume(config, &dir.path().join("adamw"));
    // The modern block on Muon (its momentum) and AdamW groups with their own rates.
    let mut config = tiny_config(&corpus(dir.path()), 30, false, 0.1);
    let m = &mut config.model;
    (m.positions, m.norm, m.mlp) = (PositionKind::Rotary, NormKind::Rmsnorm, MlpKind::Relu2);
    (m.qk_norm, m.zero_init_projections, m.logit_softcap) = (true, true, Some(30.0));
    (m.tied_embeddings, m.zero_init_head) = (false, true);
    config.train.optimizer = OptimizerConfig {
        kind: OptimizerKind::Muon,
        muon_lr: Some(0.02),
        head_lr: Some(0.004),
        embedding_lr: Some(0.05),
        ..OptimizerConfig::default()
    };
    check_resume(config, &dir.path().join("muon"));
}

/// Trains `config` in one go and stopped at step 13 and resumed, under `dir`; both must
/// log the same losses and end with the same weights.
fn check_resume(config: RunConfig, dir: &Path) {
    let whole = dir.join("whole");
    train(config.clone(), &RunOptions::new("tiny.toml", &whole)).unwrap();

    let split = dir.join("split");
    let mut first = RunOptions::new("tiny.toml", &split);
    first.stop_after = Some(13);
    let stopped = train(config.clone(), &first).unwrap();
    assert!(stopped.interrupted);
    assert_eq!(stopped.steps, 13);
    let mut second = RunOptions::new("tiny.toml", &split);
    second.resume = Some(split.clone());
    // Resuming with the other optimizer kind is refused before the folder is touched: the
    // saved state belongs to the optimizer that wrote it.
    let mut other = config.clone();
    other.train.optimizer = match config.train.optimizer.kind {
        OptimizerKind::Muon => OptimizerConfig::default(),
        OptimizerKind::Adamw => OptimizerConfig {
            kind: OptimizerKind::Muon,
            muon_lr: Some(0.02),
            ..OptimizerConfig::default()
        },
    };
    let err = train(other, &second).unwrap_err().to_string();
    assert!(
        err.contains("train.optimizer.kind") && err.contains("cannot continue"),
        "{err}"
    );
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
