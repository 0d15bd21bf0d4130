//! The recording layer stack (fused buffer with its own autograd) against the reference
//! stack of live tensors: same values and same gradients for every dilation and period.

use strata_kernels::{Implementation, LayerStack, Selection};
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor};

/// Leaf parameters of a toy "model": one per layer, plus DWA weights and a readout.
struct Toy {
    layers: Vec<Tensor>,
    alphas: Vec<Tensor>,
    readout: Tensor,
    dilation: usize,
    period: usize,
    /// Store only the slots some DWA reads ([`LayerStack::reading`]).
    skip_unread: bool,
}

impl Toy {
    fn new(kind: Kind, depth: usize, dilation: usize, period: usize) -> Self {
        let leaf = |shape: &[i64]| {
            Tensor::randn(shape, (Kind::Float, Device::Cpu))
                .to_kind(kind)
                .set_requires_grad(true)
        };
        let layers = (0..=depth).map(|_| leaf(&[2, 3, 5])).collect();
        let alphas = (1..=depth)
            .map(|i| {
                let count = Selection::dilated(i, dilation).unwrap().count as i64;
                leaf(&[count])
            })
            .collect();
        Self {
            layers,
            alphas,
            readout: leaf(&[2, 3, 5]),
            dilation,
            period,
            skip_unread: false,
        }
    }

    /// A DenseFormer-shaped forward pass: layer outputs pushed on a stack, a DWA after every
    /// `period`-th layer; returns a scalar loss.
    fn loss(&self, path: Implementation) -> Tensor {
        let mut x = &self.layers[0] * 1.5;
        let mut stack = if self.skip_unread {
            LayerStack::reading(&x, &self.reads(), true, path).unwrap()
        } else {
            LayerStack::new(&x, self.layers.len(), true, path).unwrap()
        };
        for i in 1..self.layers.len() {
            let out = x.tanh() * &self.layers[i] + &x;
            stack.push(&out).unwrap();
            x = if i % self.period == 0 {
                let sel = Selection::dilated(i, self.dilation).unwrap();
                stack.weighted_sum(&self.alphas[i - 1], &sel).unwrap()
            } else {
                out
            };
        }
        (x.sin() * &self.readout).sum(Kind::Double)
    }

    /// Which slots the DWAs read.
    fn reads(&self) -> Vec<bool> {
        let mut reads = vec![false; self.layers.len()];
        for i in (1..self.layers.len()).filter(|i| i % self.period == 0) {
            for j in Selection::dilated(i, self.dilation).unwrap().indices() {
                reads[j] = true;
            }
        }
        reads
    }

    fn params(&self) -> Vec<&Tensor> {
        self.layers
            .iter()
            .chain(&self.alphas)
            .chain([&self.readout])
            .collect()
    }

    fn zero_grads(&self) {
        for p in self.params() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Loss and every parameter's gradient, the stack made with `path`.
    fn loss_and_grads(&self, path: Implementation) -> (f64, Vec<Tensor>) {
        self.zero_grads();
        let loss = self.loss(path);
        loss.backward();
        // DWA weights that the period skips get no gradient: count them as zero.
        let grads = self
            .params()
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g.copy()
                } else {
                    p.zeros_like()
                }
            })
            .collect();
        (loss.double_value(&[]), grads)
    }
}

#[test]
fn recording_stack_matches_the_reference_stack_in_value_and_gradient() {
    for (kind, tol) in [(Kind::Double, 1e-12), (Kind::Float, 1e-5)] {
        for dilation in 1..4 {
            for period in 1..4 {
                tch::manual_seed((dilation * 10 + period) as i64);
                let toy = Toy::new(kind, 7, dilation, period);
                let (loss_ref, grads_ref) = toy.loss_and_grads(Implementation::Reference);
                let (loss_fused, grads_fused) = toy.loss_and_grads(Implementation::Auto);
                assert!(
                    (loss_fused - loss_ref).abs() <= tol * loss_ref.abs().max(1.0),
                    "{kind:?} k={dilation} p={period}: loss {loss_fused} vs {loss_ref}"
                );
                for (i, (a, b)) in grads_fused.iter().zip(&grads_ref).enumerate() {
                    let err = a.max_rel_diff(b).unwrap();
                    assert!(
                        err <= tol,
                        "{kind:?} k={dilation} p={period}: parameter {i} gradient differs by {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_second_backward_through_a_kept_graph_gives_the_same_gradients() {
    tch::manual_seed(3);
    let toy = Toy::new(Kind::Double, 5, 2, 1);
    let (_, once) = toy.loss_and_grads(Implementation::Auto);
    let loss = toy.loss(Implementation::Auto);
    for pass in 0..2 {
        let grads = Tensor::run_backward(&[&loss], &toy.params(), true, false);
        for (i, (g, want)) in grads.iter().zip(&once).enumerate() {
            let err = g.max_rel_diff(want).unwrap();
            assert!(err < 1e-12, "pass {pass}, parameter {i}: {err}");
        }
    }
}

#[test]
fn a_stack_outside_autograd_needs_no_gradient_buffer() {
    tch::manual_seed(4);
    let toy = Toy::new(Kind::Float, 4, 1, 1);
    let recorded = toy.loss(Implementation::Auto).double_value(&[]);
    let evaluated = tch::no_grad(|| toy.loss(Implementation::Auto)).double_value(&[]);
    assert!((recorded - evaluated).abs() < 1e-5 * recorded.abs().max(1.0));
}

#[test]
fn skipping_unread_slots_changes_neither_values_nor_gradients() {
    for (dilation, period) in [(2, 3), (3, 2), (4, 5)] {
        tch::manual_seed(9);
        let mut toy = Toy::new(Kind::Double, 11, dilation, period);
        assert!(
            toy.reads().contains(&false),
            "k={dilation} p={period} leaves slots unread"
        );
        let (loss_all, grads_all) = toy.loss_and_grads(Implementation::Auto);
        toy.skip_unread = true;
        for path in [Implementation::Auto, Implementation::Reference] {
            let (loss, grads) = toy.loss_and_grads(path);
            assert!(
                (loss - loss_all).abs() < 1e-12,
                "{path:?} k={dilation} p={period}"
            );
            for (a, b) in grads.iter().zip(&grads_all) {
                assert!(
                    a.max_rel_diff(b).unwrap() < 1e-12,
                    "{path:?} k={dilation} p={period}"
                );
            }
        }
        let eval = tch::no_grad(|| toy.loss(Implementation::Auto)).double_value(&[]);
        assert!((eval - loss_all).abs() < 1e-12);
    }
    let x = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let mut stack =
        LayerStack::reading(&x, &[false, true, false], false, Implementation::Auto).unwrap();
    stack.push(&x).unwrap();
    stack.push(&x).unwrap();
    let w = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let err = stack.weighted_sum(&w, &Selection::all(3)).unwrap_err();
    assert!(
        err.to_string().contains("slot 0 was declared unread"),
        "{err}"
    );
}

/// Gradients of layer outputs and weights for sums over arbitrary selections of 3 stored
/// outputs: more sums than slots, slots read by unevenly spaced sums, and a weight of exactly
/// zero, against the reference stack.
fn irregular_sums_grads(path: Implementation) -> Vec<Tensor> {
    let leaf = |shape: &[i64], seed: i64| {
        tch::manual_seed(seed);
        Tensor::randn(shape, (Kind::Double, Device::Cpu)).set_requires_grad(true)
    };
    let xs: Vec<Tensor> = (0..3).map(|j| leaf(&[4, 3], j)).collect();
    let selections = [
        Selection::all(3),
        Selection {
            start: 1,
            step: 1,
            count: 2,
        },
        Selection::all(3),
        Selection {
            start: 0,
            step: 1,
            count: 1,
        },
        Selection {
            start: 0,
            step: 2,
            count: 2,
        },
        Selection {
            start: 2,
            step: 1,
            count: 1,
        },
        Selection::all(2),
    ];
    let weights: Vec<Tensor> = selections
        .iter()
        .enumerate()
        .map(|(i, s)| leaf(&[s.count as i64], 10 + i as i64))
        .collect();
    let _ = tch::no_grad(|| weights[2].get(0).fill_(0.0));
    let loss = {
        let mut stack = LayerStack::new(&(&xs[0] * 1.0), 3, true, path).unwrap();
        for x in &xs[1..] {
            stack.push(&(x * 1.0)).unwrap();
        }
        selections
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (s, w))| stack.weighted_sum(w, s).unwrap().sin() * (i + 1) as f64)
            .fold(
                Tensor::zeros([4, 3], (Kind::Double, Device::Cpu)),
                |a, b| a + b,
            )
            .sum(Kind::Double)
    };
    let params: Vec<&Tensor> = xs.iter().chain(&weights).collect();
    Tensor::run_backward(&[&loss], &params, false, false)
}

#[test]
fn irregular_sums_give_the_reference_gradients() {
    let want = irregular_sums_grads(Implementation::Reference);
    let got = irregular_sums_grads(Implementation::Auto);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = g.max_rel_diff(w).unwrap();
        assert!(err < 1e-12, "parameter {i}: {err}");
    }
}

#[test]
fn per_token_sums_match_a_float64_loop_in_value_and_gradient() {
    // Three outputs [2, 3, 4] and weights [2, 3, C = 2, J = 3] per position: each sum, and
    // every gradient, against an explicit loop in float64; with and without autograd.
    let outputs: Vec<Tensor> = (0..3)
        .map(|i| Tensor::randn([2, 3, 4], (Kind::Double, Device::Cpu)) + f64::from(i))
        .map(|t| t.to_kind(Kind::Float))
        .collect();
    let weights = Tensor::randn([2, 3, 2, 3], (Kind::Float, Device::Cpu));
    let leaves = |ts: &[Tensor]| -> Vec<Tensor> {
        ts.iter()
            .map(|t| t.to_kind(Kind::Double).detach().set_requires_grad(true))
            .collect()
    };
    let (xs, w) = (
        leaves(&outputs),
        leaves(std::slice::from_ref(&weights)).remove(0),
    );
    let want: Vec<Tensor> = (0..2)
        .map(|c| {
            (0..3)
                .map(|j| &xs[j] * w.select(-2, c).select(-1, j as i64).unsqueeze(-1))
                .reduce(|a, b| a + b)
                .unwrap()
        })
        .collect();
    let want = Tensor::stack(&want, -2);
    let probe = Tensor::randn([2, 3, 2, 4], (Kind::Double, Device::Cpu));
    (&want * &probe).sum(Kind::Double).backward();

    let no_grad = tch::no_grad(|| {
        let mut stack = LayerStack::per_token(&outputs[0], 3, false).unwrap();
        stack.push(&outputs[1]).unwrap();
        stack.push(&outputs[2]).unwrap();
        stack.token_weighted_sum(&weights).unwrap()
    });
    assert!(
        no_grad
            .to_kind(Kind::Double)
            .max_abs_diff(&want.detach())
            .unwrap()
            < 1e-5
    );

    let xs32: Vec<Tensor> = outputs
        .iter()
        .map(|t| t.detach().set_requires_grad(true))
        .collect();
    let w32 = weights.detach().set_requires_grad(true);
    let mut stack = LayerStack::per_token(&xs32[0], 3, true).unwrap();
    stack.push(&xs32[1]).unwrap();
    stack.push(&xs32[2]).unwrap();
    let got = stack.token_weighted_sum(&w32).unwrap();
    assert!(
        got.to_kind(Kind::Double)
            .max_abs_diff(&want.detach())
            .unwrap()
            < 1e-5
    );
    (&got * probe.to_kind(Kind::Float))
        .sum(Kind::Float)
        .backward();
    for (mine, oracle) in xs32.iter().zip(&xs) {
        let err = mine
            .grad()
            .to_kind(Kind::Double)
            .max_abs_diff(&oracle.grad())
            .unwrap();
        assert!(err < 1e-5, "output gradient {err}");
    }
    let err = w32
        .grad()
        .to_kind(Kind::Double)
        .max_abs_diff(&w.grad())
        .unwrap();
    assert!(err < 1e-4, "weight gradient {err}");

    // Weights of the wrong shape, and a fused recording stack, are refused.
    let err = stack
        .token_weighted_sum(&Tensor::zeros([2, 3, 2, 2], (Kind::Float, Device::Cpu)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3, C, 3]"), "{err}");
    // (Without the `cpp` feature a recording stack keeps live tensors, and the sum works.)
    let fused = LayerStack::new(&xs32[0], 3, true, Implementation::Auto).unwrap();
    let sum = fused.token_weighted_sum(&Tensor::zeros([2, 3, 2, 1], (Kind::Float, Device::Cpu)));
    if strata_kernels::CPP {
        let err = sum.unwrap_err().to_string();
        assert!(err.contains("per_token"), "{err}");
    } else {
        assert_eq!(sum.unwrap().size(), [2, 3, 2, 4]);
    }
    // Made with the reference path, a recording stack keeps live tensors in any build.
    let live = LayerStack::new(&xs32[0], 3, true, Implementation::Reference).unwrap();
    let sum = live.token_weighted_sum(&Tensor::zeros([2, 3, 2, 1], (Kind::Float, Device::Cpu)));
    assert_eq!(sum.unwrap().size(), [2, 3, 2, 4]);
}
