//! Cooldown branches: a branch resumed from a stable-phase checkpoint of a longer WSD run
//! equals a dedicated run of its length bit for bit (CPU), and bad branches are refused.
//! The bitwise test is the only one here that trains: concurrent libtorch work in the same
//! process may change BLAS thread scheduling and thus the bits.

mod common;

use common::{corpus, tiny_config};
use strata_train::branch::cooldown;
use strata_train::checkpoint;
use strata_train::evaluation::EvalTokens;
use strata_train::metrics::{MetricRecord, read_records};
use strata_train::schedule::{DecayShape, ScheduleKind};
use strata_train::{RunConfig, RunOptions, RunSummary, train};

/// A tiny WSD DenseFormer with dropout, evaluated on a fixed validation slice and on
/// not-yet-seen training tokens.
fn wsd_config(dir: &std::path::Path, max_iters: u64) -> RunConfig {
    let mut config = tiny_config(&corpus(dir), max_iters, true, 0.1);
    config.train.schedule = ScheduleKind::Wsd;
    config.train.decay_fraction = 0.2;
    config.train.decay_shape = DecayShape::OneMinusSqrt;
    config.train.eval_tokens = Some(EvalTokens::Count(512));
    config.train.eval_unseen = true;
    config.train.eval_interval = 4;
    config
}

/// Every number of every record, as bits, without timings.
type RecordBits = (u64, String, [Option<u64>; 5], Option<u64>);

/// The (step, kind, losses, lr and unseen count) of every record, for exact comparisons.
fn numbers(records: &[MetricRecord]) -> Vec<RecordBits> {
    records
        .iter()
        .map(|r| {
            let bits = [r.loss, r.val_loss, r.val_loss_se, r.unseen_loss, r.lr];
            (
                r.step,
                r.kind.clone(),
                bits.map(|v| v.map(f64::to_bits)),
                r.unseen_tokens,
            )
        })
        .collect()
}

#[test]
fn a_cooldown_branch_equals_a_dedicated_run_of_its_length_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // Budget 20 decays from step 16; the 30-step source decays from step 24.
    let budget = 20;
    let mut source_config = wsd_config(dir.path(), 30);
    source_config.train.branch_budgets = vec![budget];
    let source = dir.path().join("source");
    train(source_config, &RunOptions::new("tiny.toml", &source)).unwrap();
    assert!(source.join("checkpoints/step-000016").exists());

    let dedicated = dir.path().join("dedicated");
    let a = train(
        wsd_config(dir.path(), budget),
        &RunOptions::new("tiny.toml", &dedicated),
    )
    .unwrap();
    let branch = dir.path().join("branch");
    let b = cooldown(&source, budget, &branch, &RunOptions::new("x", "y")).unwrap();

    let wa = checkpoint::load(&dedicated).unwrap();
    let wb = checkpoint::load(&branch).unwrap();
    assert_eq!((wa.meta.step, wb.meta.step), (budget, budget));
    assert_eq!(wa.loaded.model.len(), wb.loaded.model.len());
    for ((na, ta), (nb, tb)) in wa.loaded.model.iter().zip(&wb.loaded.model) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs between the branch and the dedicated run"
        );
    }
    let bits = |s: &RunSummary| {
        [
            s.final_train_loss,
            s.final_val_loss,
            s.best_val_loss,
            s.final_val_loss_se,
            s.final_unseen_loss,
        ]
        .map(|v| v.map(f64::to_bits))
    };
    assert_eq!(bits(&a), bits(&b));
    assert!(a.final_val_loss_se.is_some() && a.final_unseen_loss.is_some());
    assert_eq!((a.steps, a.tokens, a.epochs), (b.steps, b.tokens, b.epochs));
    assert_eq!(a.train_flops, b.train_flops);
    // The branch's log holds the source's records up to step 16, then its own: together the
    // dedicated run's log.
    let ra = read_records(&dedicated.join("metrics.jsonl")).unwrap();
    let rb = read_records(&branch.join("metrics.jsonl")).unwrap();
    assert_eq!(numbers(&ra), numbers(&rb));
    let written = RunConfig::load(&branch.join("config.toml"), &[]).unwrap();
    assert_eq!(written.train.max_iters, budget);
    assert!(written.train.branch_budgets.is_empty());

    // A second call returns the finished branch without training.
    let again = cooldown(&source, budget, &branch, &RunOptions::new("x", "y")).unwrap();
    assert_eq!(bits(&again), bits(&b));

    // A source whose config no longer matches its checkpoint's training settings is refused,
    // naming the field.
    let file = source.join("config.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("grad_clip = 1.0", "grad_clip = 0.5")).unwrap();
    let err = cooldown(
        &source,
        budget,
        &dir.path().join("b2"),
        &RunOptions::new("x", "y"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train.grad_clip") && err.contains("step-000016"),
        "{err}"
    );
}

/// Writes `config` as the config.toml of a run folder `dir` (no checkpoints).
fn source_folder(dir: &std::path::Path, config: &RunConfig) -> std::path::PathBuf {
    let run = dir.join("source");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.toml"), config.to_toml()).unwrap();
    run
}

#[test]
fn branches_that_cannot_equal_a_dedicated_run_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions::new("x", "y");
    let out = dir.path().join("out");

    let cosine = tiny_config(&corpus(dir.path()), 30, false, 0.0);
    let run = source_folder(dir.path(), &cosine);
    let err = cooldown(&run, 20, &out, &options).unwrap_err().to_string();
    assert!(
        err.contains("train.schedule") && err.contains("wsd"),
        "{err}"
    );

    let run = source_folder(dir.path(), &wsd_config(dir.path(), 30));
    // 40 steps would decay from step 32, after the source's decay start (24).
    let err = cooldown(&run, 40, &out, &options).unwrap_err().to_string();
    assert!(
        err.contains("step 32") && err.contains("stable phase"),
        "{err}"
    );
    // 5 steps would decay from step 4, inside the warmup.
    let err = cooldown(&run, 5, &out, &options).unwrap_err().to_string();
    assert!(err.contains("step 4"), "{err}");
    // 20 steps fit, but the source kept no checkpoint at step 16.
    let err = cooldown(&run, 20, &out, &options).unwrap_err().to_string();
    assert!(
        err.contains("step-000016") && err.contains("branch_budgets"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written for a refused branch");
}
