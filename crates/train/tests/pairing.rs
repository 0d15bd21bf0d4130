//! Paired arms: runs with the same `train.seed` and different architectures (baseline vs
//! DenseFormer variants) train on identical batches step by step and are evaluated on
//! identical tokens; another seed changes the batches.

mod common;

use common::{corpus, tiny_config};
use strata_train::evaluation::{EvalTokens, fixed_eval_batches, validation_set};
use strata_train::metrics::read_records;
use strata_train::prepare::prepare_data;
use strata_train::trainer::training_batch;
use strata_train::{RunConfig, RunOptions, train};
use tch::Device;

/// The baseline and two DenseFormer arms of one seed, on a fixed validation slice.
fn arms(dir: &std::path::Path) -> Vec<RunConfig> {
    let text = corpus(dir);
    let mut baseline = tiny_config(&text, 12, false, 0.0);
    let mut dilated = tiny_config(&text, 12, true, 0.1);
    dilated.model.dwa.as_mut().unwrap().dilation = 2;
    let mut arms = vec![baseline.clone(), tiny_config(&text, 12, true, 0.0), dilated];
    for arm in &mut arms {
        arm.train.eval_tokens = Some(EvalTokens::Count(1024));
        arm.train.eval_unseen = true;
    }
    baseline.train.seed += 1;
    arms.push(baseline);
    arms
}

#[test]
fn arms_of_one_seed_get_identical_batches_and_evaluation_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let arms = arms(dir.path());
    let (same_seed, other_seed) = (&arms[..3], &arms[3]);
    let data: Vec<_> = arms
        .iter()
        .map(|c| prepare_data(c, None).unwrap())
        .collect();
    let (base, base_data) = (&arms[0], &data[0]);
    let block = base.model.block_size;
    let cpu = Device::Cpu;
    let base_val = validation_set(&base.train, &base_data.splits, block, cpu).unwrap();
    let base_train_eval =
        fixed_eval_batches(&base.train, &base_data.splits.train, block, cpu).unwrap();
    for (arm, d) in same_seed.iter().zip(&data).skip(1) {
        assert_ne!(arm.model, base.model);
        assert_eq!(d.tokenizer.fingerprint(), base_data.tokenizer.fingerprint());
        assert!(d.splits.train.equal(&base_data.splits.train));
        for step in 0..200 {
            let (xa, ya) = training_batch(base, &base_data.splits.train, step, cpu).unwrap();
            let (xb, yb) = training_batch(arm, &d.splits.train, step, cpu).unwrap();
            assert!(xa.equal(&xb) && ya.equal(&yb), "step {step}");
        }
        let val = validation_set(&arm.train, &d.splits, block, cpu).unwrap();
        assert_eq!(val.batches.len(), base_val.batches.len());
        for ((xa, ya), (xb, yb)) in base_val.batches.iter().zip(&val.batches) {
            assert!(xa.equal(xb) && ya.equal(yb));
        }
        let train_eval = fixed_eval_batches(&arm.train, &d.splits.train, block, cpu).unwrap();
        for ((xa, _), (xb, _)) in base_train_eval.iter().zip(&train_eval) {
            assert!(xa.equal(xb));
        }
    }
    let (x0, _) = training_batch(base, &base_data.splits.train, 0, cpu).unwrap();
    let (x1, _) = training_batch(other_seed, &data[3].splits.train, 0, cpu).unwrap();
    assert!(!x0.equal(&x1), "another seed draws other batches");

    // End to end: the trainer's evaluations cover the same unseen positions at every step in
    // every arm of the seed (they follow the batches it trained on), and read the same
    // validation tokens.
    let mut trace = Vec::new();
    for (i, arm) in same_seed.iter().enumerate() {
        let out = dir.path().join(format!("arm{i}"));
        let summary = train(arm.clone(), &RunOptions::new("tiny.toml", &out)).unwrap();
        let unseen: Vec<(u64, Option<u64>)> = read_records(&out.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .filter(|r| r.kind == "eval")
            .map(|r| (r.step, r.unseen_tokens))
            .collect();
        trace.push((summary.val_tokens, summary.epochs, unseen));
    }
    assert_eq!(trace[0].0, 1024);
    let train_tokens = base_data.splits.train.size1().unwrap() as f64;
    assert_eq!(trace[0].1, (12 * 8 * 16) as f64 / train_tokens, "epochs");
    // `strata eval` reads the slice as the run did.
    let val = common::checkpoint_val_loss(&dir.path().join("arm0"));
    let records = read_records(&dir.path().join("arm0/metrics.jsonl")).unwrap();
    let last = records.iter().rev().find(|r| r.kind == "eval").unwrap();
    assert!((val.mean - last.val_loss.unwrap()).abs() < 1e-12);
    assert!((val.se.unwrap() - last.val_loss_se.unwrap()).abs() < 1e-12);
    assert!(trace[0].2.iter().all(|(_, n)| n.is_some()));
    assert!(trace.iter().all(|t| *t == trace[0]), "{trace:?}");
}
