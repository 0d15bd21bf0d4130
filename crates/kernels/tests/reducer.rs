//! The overlapped gradient all-reduce (`GradientReducer`, libtorch's c10d::Reducer with a
//! summing hook): two ranks, each a thread with its own Gloo group member over loopback,
//! backpropagate different losses; after backward every gradient is the closed-form sum over
//! the ranks, each bucket was all-reduced by the hooks, and a parameter left without a
//! gradient is reported at the next step instead of hanging.

use std::time::Duration;
use strata_kernels::process_group::{GradientReducer, ProcessGroup};
use tch::{Device, Kind, Tensor};

/// Elements of each parameter: 1.2 MB in f32, so the three parameters fill three buckets.
const ELEMENTS: i64 = 300_000;

/// A free TCP port on loopback for the rendezvous.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `body(group)` on two ranks, one thread each, and returns what each returned.
fn on_two_ranks<T: Send + 'static>(
    body: impl Fn(ProcessGroup) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let body = body.clone();
            std::thread::spawn(move || {
                let group = ProcessGroup::join("127.0.0.1", port, rank, 2, Duration::from_secs(60))
                    .unwrap();
                body(group)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Three trainable parameters of `ELEMENTS` zeros, named `w0`, `w1`, `w2`, and `group`'s
/// reducer over them (buckets of 1 MiB).
fn reduced_params(group: &ProcessGroup) -> (GradientReducer, Vec<Tensor>) {
    let named: Vec<(String, Tensor)> = (0..3)
        .map(|i| {
            let t = Tensor::zeros([ELEMENTS], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            (format!("w{i}"), t)
        })
        .collect();
    let reducer = group.gradient_reducer(&named, 1 << 20).unwrap();
    (reducer, named.into_iter().map(|(_, t)| t).collect())
}

/// The input rank `rank` multiplies parameter `i` by: `(rank + 1) · (i + 1) · ramp`.
fn input(rank: usize, i: usize) -> Tensor {
    Tensor::arange(ELEMENTS, (Kind::Float, Device::Cpu)).g_mul_scalar(((rank + 1) * (i + 1)) as f64)
        / ELEMENTS as f64
}

#[test]
fn gradients_are_summed_over_the_ranks_by_the_backward_hooks() {
    if !strata_kernels::CPP {
        eprintln!("skipped: this build lacks the `cpp` feature");
        return;
    }
    let results = on_two_ranks(|group| {
        let rank = group.rank();
        let (reducer, params) = reduced_params(&group);
        let mut readings = Vec::new();
        for _step in 0..2 {
            for p in &params {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.zero_();
                }
            }
            reducer.prepare().unwrap();
            let loss = params
                .iter()
                .enumerate()
                .map(|(i, p)| (p * input(rank, i)).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
            loss.backward();
            reducer.check_finished().unwrap();
            readings.push(params.iter().map(Tensor::grad).collect::<Vec<_>>());
        }
        (reducer.buckets(), reducer.launched(), readings)
    });
    for (buckets, launched, readings) in results {
        assert!(
            buckets >= 3,
            "one bucket per 1.2 MB parameter, got {buckets}"
        );
        assert_eq!(launched, 2 * buckets as u64, "every bucket, every step");
        for grads in readings {
            for (i, grad) in grads.iter().enumerate() {
                // Rank 0 contributes 1x, rank 1 2x: the sum is 3x rank 0's input.
                let want = input(0, i) * 3.0;
                let diff = (grad - &want).abs().max().double_value(&[]);
                assert!(diff <= 1e-6, "parameter {i}: off by {diff}");
            }
        }
    }
}

#[test]
fn a_parameter_without_a_gradient_is_reported_at_the_next_step() {
    if !strata_kernels::CPP {
        eprintln!("skipped: this build lacks the `cpp` feature");
        return;
    }
    let results = on_two_ranks(|group| {
        let (reducer, params) = reduced_params(&group);
        reducer.prepare().unwrap();
        // The last parameter takes no part in the loss.
        let loss = (&params[0] * input(0, 0)).sum(Kind::Float)
            + (&params[1] * input(0, 1)).sum(Kind::Float);
        loss.backward();
        let checked = reducer.check_finished().map_err(|e| e.to_string());
        let prepared = reducer.prepare().map_err(|e| e.to_string());
        (checked, prepared)
    });
    for (checked, prepared) in results {
        for err in [checked.unwrap_err(), prepared.unwrap_err()] {
            assert!(err.ends_with("but these got none: `w2`"), "{err}");
        }
    }
}
