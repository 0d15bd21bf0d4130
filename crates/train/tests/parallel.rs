//! Data-parallel CPU steps against the plain full-batch step: same loss and gradients (to
//! f32 summation-order tolerance), replicas that follow the master's weights, reproducible
//! dropout, and evaluation equal to the sequential mean.

use strata_core::{DwaConfig, Gpt, ModelConfig};
use strata_tensor::{TensorExt, seeded};
use strata_train::parallel::{DataParallel, worker_count};
use tch::{Device, Kind, Tensor, nn};

/// A small model config (optionally a DenseFormer with DWA after every block).
fn config(dwa: bool, dropout: f64) -> ModelConfig {
    let mut c: ModelConfig =
        toml::from_str("vocab_size = 29\nn_layer = 3\nn_head = 2\nd_model = 16\nblock_size = 12\n")
            .unwrap();
    c.dropout = dropout;
    if dwa {
        c.dwa = Some(DwaConfig {
            dilation: 1,
            period: 1,
        });
    }
    c
}

/// A model with random weights and its own random generator, as the trainer builds it; DWA
/// weights are perturbed away from the identity so every source layer carries gradient.
fn model(config: &ModelConfig) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(Device::Cpu);
    let gpt = seeded(3, || Gpt::new(&vs.root(), config))
        .unwrap()
        .with_generator(strata_kernels::Generator::new(0).unwrap());
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name.starts_with("dwa") || name.contains("ln") {
                let noise = seeded(4, || v.randn_like()) * 0.3;
                let _ = v.g_add_(&noise);
            }
        }
    });
    (vs, gpt)
}

/// Token ids `[b, t]`.
fn tokens(b: i64, t: i64, seed: u64) -> Tensor {
    seeded(seed, || {
        Tensor::randint(29, [b, t], (Kind::Int64, Device::Cpu))
    })
}

/// Every gradient of `vs`, by name.
fn grads(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut out: Vec<_> = vs
        .variables()
        .into_iter()
        .map(|(n, v)| (n, v.grad().copy()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Zeroes every gradient of `vs`.
fn zero(vs: &nn::VarStore) {
    for (_, mut v) in vs.variables() {
        v.zero_grad();
    }
}

/// Loss and gradients of one step with `workers` workers.
fn step(
    cfg: &ModelConfig,
    workers: usize,
    rows: i64,
    dropout_seed: Option<u64>,
) -> (f64, Vec<(String, Tensor)>) {
    let (vs, gpt) = model(cfg);
    let mut dp = DataParallel::new(&vs, &gpt, workers, 1).unwrap();
    assert_eq!(dp.workers(), workers);
    let x = tokens(rows, 12, 10);
    let y = tokens(rows, 12, 11);
    let loss = dp.forward_backward(&gpt, &x, &y, dropout_seed).unwrap();
    (loss.double_value(&[]), grads(&vs))
}

/// The full-batch reference: one forward and backward of the whole batch, no replicas.
fn plain_step(cfg: &ModelConfig, rows: i64) -> (f64, Vec<(String, Tensor)>) {
    let (vs, gpt) = model(cfg);
    let x = tokens(rows, 12, 10);
    let y = tokens(rows, 12, 11);
    let loss = gpt.loss(&x, &y, true).unwrap();
    loss.backward();
    (loss.double_value(&[]), grads(&vs))
}

fn assert_close(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ga), (nb, gb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ga.defined() && gb.defined(), "{na}: missing gradient");
        let scale = gb.abs().max().double_value(&[]).max(1e-6);
        let diff = ga.max_abs_diff(gb).unwrap();
        assert!(
            diff <= 2e-5 * scale,
            "{na}: max diff {diff} vs scale {scale}"
        );
        assert!(
            gb.abs().sum(Kind::Double).double_value(&[]) > 0.0,
            "{na}: zero gradient"
        );
    }
}

#[test]
fn split_steps_match_the_full_batch_step_for_baseline_and_denseformer() {
    for dwa in [false, true] {
        let cfg = config(dwa, 0.0);
        for (workers, rows) in [(1, 6), (2, 6), (3, 7), (4, 5)] {
            let (loss, g) = step(&cfg, workers, rows, None);
            let (ref_loss, ref_g) = plain_step(&cfg, rows);
            assert!(
                (loss - ref_loss).abs() <= 1e-5 * ref_loss,
                "dwa {dwa} workers {workers}: loss {loss} vs {ref_loss}"
            );
            assert_close(&g, &ref_g);
        }
    }
}

#[test]
fn one_worker_is_bitwise_the_plain_step() {
    let cfg = config(true, 0.0);
    let (loss, g) = step(&cfg, 1, 6, None);
    let (ref_loss, ref_g) = plain_step(&cfg, 6);
    assert_eq!(loss.to_bits(), ref_loss.to_bits());
    for ((_, a), (_, b)) in g.iter().zip(&ref_g) {
        assert_eq!(a.max_abs_diff(b).unwrap(), 0.0);
    }
}

#[test]
fn replicas_follow_in_place_updates_of_the_master_and_stay_reproducible() {
    let cfg = config(false, 0.0);
    let (vs, gpt) = model(&cfg);
    let mut dp = DataParallel::new(&vs, &gpt, 2, 1).unwrap();
    let (x, y) = (tokens(4, 12, 1), tokens(4, 12, 2));
    let first = dp
        .forward_backward(&gpt, &x, &y, None)
        .unwrap()
        .double_value(&[]);
    zero(&vs);
    // An optimizer-like in-place update of the master must be seen by the replica: a
    // replica left on the old weights would give a different loss from the plain step.
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let _ = v.g_mul_scalar_(0.5);
        }
    });
    let second = dp
        .forward_backward(&gpt, &x, &y, None)
        .unwrap()
        .double_value(&[]);
    zero(&vs);
    let plain = gpt.loss(&x, &y, true).unwrap().double_value(&[]);
    assert!(
        (second - plain).abs() <= 1e-5 * plain,
        "{second} vs {plain}"
    );
    assert!((first - second).abs() > 1e-4, "the update changed nothing");
    // Gradients from a second call do not include the first call's (replicas are zeroed).
    let again = dp
        .forward_backward(&gpt, &x, &y, None)
        .unwrap()
        .double_value(&[]);
    let g_again = grads(&vs);
    zero(&vs);
    let _ = dp.forward_backward(&gpt, &x, &y, None).unwrap();
    assert_eq!(again, second);
    assert_close(&grads(&vs), &g_again);
}

#[test]
fn dropout_is_reproducible_and_seed_dependent() {
    let cfg = config(true, 0.2);
    let (a, ga) = step(&cfg, 2, 6, Some(7));
    let (b, gb) = step(&cfg, 2, 6, Some(7));
    let (c, _) = step(&cfg, 2, 6, Some(8));
    assert_eq!(a.to_bits(), b.to_bits());
    for ((_, x), (_, y)) in ga.iter().zip(&gb) {
        assert_eq!(x.max_abs_diff(y).unwrap(), 0.0);
    }
    assert_ne!(a, c, "another dropout seed gave the same loss");
}

#[test]
fn dropout_steps_do_not_wait_for_the_default_generators_lock() {
    // The master and every replica draw from their own generators: a step with dropout must
    // finish while another thread holds libtorch's default generator (a seeded section).
    let cfg = config(true, 0.2);
    let (vs, gpt) = model(&cfg);
    let (reference_vs, reference_gpt) = model(&cfg);
    let mut dp = DataParallel::new(&vs, &gpt, 2, 1).unwrap();
    let mut reference_dp = DataParallel::new(&reference_vs, &reference_gpt, 2, 1).unwrap();
    let (x, y) = (tokens(6, 12, 10), tokens(6, 12, 11));
    let expected = reference_dp
        .forward_backward(&reference_gpt, &x, &y, Some(7))
        .unwrap()
        .double_value(&[]);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    seeded(99, || {
        let worker = std::thread::spawn(move || {
            let loss = dp.forward_backward(&gpt, &x, &y, Some(7)).unwrap();
            done_tx.send(loss.double_value(&[])).unwrap();
        });
        let got = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the step waited for the default generator's lock");
        assert_eq!(got.to_bits(), expected.to_bits());
        worker.join().unwrap();
    });
}

#[test]
fn parallel_evaluation_equals_the_sequential_mean() {
    let cfg = config(true, 0.0);
    let (vs, gpt) = model(&cfg);
    let mut dp = DataParallel::new(&vs, &gpt, 3, 1).unwrap();
    let batches: Vec<_> = (0..5)
        .map(|i| (tokens(3, 12, 20 + i), tokens(3, 12, 40 + i)))
        .collect();
    let got = dp.evaluate(&gpt, &batches).unwrap();
    let _guard = tch::no_grad_guard();
    let want = batches
        .iter()
        .map(|(x, y)| gpt.loss(x, y, false).unwrap().double_value(&[]))
        .sum::<f64>()
        / 5.0;
    assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
}

#[test]
fn worker_count_is_one_off_the_cpu_and_never_exceeds_the_rows() {
    assert_eq!(worker_count(Device::Cpu, 2, 12), 2);
    assert_eq!(worker_count(Device::Cpu, 8, 3), 3);
    assert_eq!(worker_count(Device::Cpu, 0, 12), 1);
    assert_eq!(worker_count(Device::Cuda(0), 8, 12), 1);
}
