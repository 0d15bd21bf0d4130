//! Evaluation sets against references computed another way: the fixed validation slice's
//! layout and independence of the seed, its mean and standard error against a loop over
//! single windows, and the not-yet-seen reading against plain sets of covered positions.

mod common;

use common::{corpus, tiny_config};
use std::collections::HashSet;
use std::path::Path;
use strata_core::Gpt;
use strata_tensor::seeded;
use strata_train::data::{TokenSplits, batch_offsets, random_batch};
use strata_train::evaluation::{EvalTokens, LossEstimate, UnseenTracker, validation_set};
use strata_train::parallel::DataParallel;
use strata_train::{RunConfig, TrainConfig};
use tch::{Device, Kind, Tensor, nn};

const BLOCK: usize = 4;
const VOCAB: usize = 11;

/// A tiny config with block 4 and an 11-token vocabulary (ids from [`synthetic`]).
fn config(dir: &Path) -> RunConfig {
    let mut config = tiny_config(&corpus(dir), 10, true, 0.0);
    config.model.block_size = BLOCK;
    config.model.vocab_size = VOCAB;
    config.train.batch_size = 3;
    config
}

/// `n` token ids below [`VOCAB`] from a small LCG.
fn synthetic(n: usize) -> Vec<u32> {
    let mut state = 12345u64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % VOCAB as u64) as u32
        })
        .collect()
}

/// Train/val splits of `n` synthetic tokens, half each.
fn splits(n: usize) -> TokenSplits {
    TokenSplits::new(&synthetic(n), 0.5, BLOCK, Path::new("synthetic")).unwrap()
}

/// A seeded model of `config` with its store.
fn model(config: &RunConfig) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(Device::Cpu);
    let gpt = seeded(7, || Gpt::new(&vs.root(), &config.model)).unwrap();
    (vs, gpt)
}

/// The ids of a 1-D tensor.
fn ids(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.reshape([-1])).unwrap()
}

#[test]
fn the_slice_is_consecutive_windows_from_the_start_and_ignores_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let splits = splits(200); // 100 validation tokens: 24 whole windows of 4 (+ 1 target)
    let val = ids(&splits.val);
    let mut t: TrainConfig = config(dir.path()).train;
    t.eval_tokens = Some(EvalTokens::Count(30));
    let set = validation_set(&t, &splits, BLOCK, Device::Cpu).unwrap();
    assert_eq!(set.tokens, 28, "30 tokens round down to 7 windows");
    let rows: Vec<i64> = set.batches.iter().map(|(x, _)| x.size()[0]).collect();
    assert_eq!(rows, [3, 3, 1], "batches of batch_size windows");
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (x, y) in &set.batches {
        xs.extend(ids(x));
        ys.extend(ids(y));
    }
    assert_eq!(xs, val[..28], "inputs are the first 28 tokens in order");
    assert_eq!(ys, val[1..29], "targets are the next token of each");
    t.seed += 1;
    let other = validation_set(&t, &splits, BLOCK, Device::Cpu).unwrap();
    for ((xa, ya), (xb, yb)) in set.batches.iter().zip(&other.batches) {
        assert!(
            xa.equal(xb) && ya.equal(yb),
            "another seed reads the same tokens"
        );
    }
    t.eval_tokens = Some(EvalTokens::All);
    assert_eq!(
        validation_set(&t, &splits, BLOCK, Device::Cpu)
            .unwrap()
            .tokens,
        96
    );
    t.eval_tokens = Some(EvalTokens::Count(1_000_000));
    assert_eq!(
        validation_set(&t, &splits, BLOCK, Device::Cpu)
            .unwrap()
            .tokens,
        96,
        "a count beyond the split reads all of it"
    );
    // Without eval_tokens the random batches depend on the seed, as before.
    t.eval_tokens = None;
    let a = validation_set(&t, &splits, BLOCK, Device::Cpu).unwrap();
    t.seed += 1;
    let b = validation_set(&t, &splits, BLOCK, Device::Cpu).unwrap();
    assert!(!a.batches[0].0.equal(&b.batches[0].0));
}

#[test]
fn the_slice_estimate_is_the_mean_over_windows_with_its_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let splits = splits(400);
    let mut t = config.train.clone();
    t.eval_tokens = Some(EvalTokens::All);
    let set = validation_set(&t, &splits, BLOCK, Device::Cpu).unwrap();
    let (vs, gpt) = model(&config);
    let estimate = set.evaluate(&gpt).unwrap();
    // Reference: the model's own mean loss on each window alone, then mean and SE in f64.
    let windows = (200 - 1) / BLOCK;
    let val = ids(&splits.val);
    let per_window: Vec<f64> = (0..windows)
        .map(|i| {
            let x = Tensor::from_slice(&val[i * BLOCK..i * BLOCK + BLOCK]).view([1, -1]);
            let y = Tensor::from_slice(&val[i * BLOCK + 1..i * BLOCK + BLOCK + 1]).view([1, -1]);
            tch::no_grad(|| gpt.loss(&x, &y, false).unwrap().double_value(&[]))
        })
        .collect();
    let n = windows as f64;
    let mean = per_window.iter().sum::<f64>() / n;
    let var = per_window.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert_eq!(estimate.units, windows);
    assert!(
        (estimate.mean - mean).abs() < 1e-6,
        "{} vs {mean}",
        estimate.mean
    );
    let se = estimate.se.unwrap();
    assert!(
        (se - (var / n).sqrt()).abs() < 1e-7,
        "{se} vs {}",
        (var / n).sqrt()
    );
    // The data-parallel path used in training gives the same estimate.
    let mut parallel = DataParallel::new(&vs, &gpt, 2, 1).unwrap();
    let losses = parallel.losses(&gpt, &set.batches, set.kind).unwrap();
    let again = set.estimate(&losses).unwrap();
    assert!((again.mean - estimate.mean).abs() < 1e-12);
    assert!((again.se.unwrap() - se).abs() < 1e-12);
}

#[test]
fn the_standard_error_follows_its_closed_form() {
    let e = LossEstimate::of(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(e.mean, 2.5);
    assert!((e.se.unwrap() - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
    assert_eq!(LossEstimate::of(&[3.0]).se, None, "one unit has no spread");
}

#[test]
fn the_unseen_reading_averages_exactly_the_positions_no_step_has_covered() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let t = &config.train;
    let splits = splits(400); // 200 training tokens
    let train = ids(&splits.train);
    let (vs, gpt) = model(&config);
    let mut parallel = DataParallel::new(&vs, &gpt, 1, 1).unwrap();
    let windows = 12;
    let mut tracker = UnseenTracker::new(t, &splits.train, windows, BLOCK, Device::Cpu).unwrap();
    // Reference per-position losses of the region's windows, from log-softmax.
    let region: Vec<i64> = train[..windows * BLOCK + 1].to_vec();
    let x = Tensor::from_slice(&region[..windows * BLOCK]).view([windows as i64, -1]);
    let logits = tch::no_grad(|| gpt.forward(&x, false).unwrap());
    let logp = logits.log_softmax(-1, Kind::Double);
    let position_loss = |p: usize| {
        let (w, j) = ((p - 1) / BLOCK, (p - 1) % BLOCK);
        -logp.double_value(&[w as i64, j as i64, region[p]])
    };
    let mut seen = HashSet::new();
    for step in 0..40u64 {
        let reading = tracker.reading(&mut parallel, &gpt).unwrap();
        let unseen: Vec<usize> = (1..region.len()).filter(|p| !seen.contains(p)).collect();
        match reading {
            None => assert!(unseen.is_empty(), "step {step}"),
            Some(r) => {
                assert_eq!(r.tokens as usize, unseen.len(), "step {step}");
                let mean =
                    unseen.iter().map(|&p| position_loss(p)).sum::<f64>() / unseen.len() as f64;
                assert!(
                    (r.loss - mean).abs() < 1e-6,
                    "step {step}: {} vs {mean}",
                    r.loss
                );
            }
        }
        // The step's windows, found from the batch itself, cover offset..=offset + block.
        let offsets = batch_offsets(train.len(), t.batch_size, BLOCK, t.seed, step);
        let (bx, by) = random_batch(
            &splits.train,
            t.batch_size,
            BLOCK,
            t.seed,
            step,
            Device::Cpu,
        )
        .unwrap();
        for (row, &o) in offsets.iter().enumerate() {
            let o = o as usize;
            assert_eq!(ids(&bx.get(row as i64)), train[o..o + BLOCK]);
            assert_eq!(ids(&by.get(row as i64)), train[o + 1..o + BLOCK + 1]);
            seen.extend(o..=o + BLOCK);
        }
        tracker.observe_step(step);
    }
    let final_unseen = (1..region.len()).filter(|p| !seen.contains(p)).count();
    assert!(
        final_unseen < region.len() / 2,
        "training covered part of the region"
    );
}
