//! Every weighted-sum path against a float64 naive loop, for many shapes, strides, selections
//! and dtypes; gradients of the fused path against the reference's autograd gradients.

use strata_kernels::{
    Implementation, LayerStack, Selection, weighted_sum, weighted_sum_into, weighted_sum_list,
};
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor};

/// Naive float64 loop over plain vectors: the oracle.
fn oracle(stack: &Tensor, weights: &[f64], selection: &Selection) -> Vec<f64> {
    let layers: Vec<Vec<f64>> = selection
        .indices()
        .map(|j| stack.get(j as i64).to_f64_vec().unwrap())
        .collect();
    let mut out = vec![0.0; layers[0].len()];
    for (layer, w) in layers.iter().zip(weights) {
        for (o, x) in out.iter_mut().zip(layer) {
            *o += w * x;
        }
    }
    out
}

/// Largest difference to the oracle relative to the oracle's largest magnitude (at least 1).
fn rel_err(got: &Tensor, want: &[f64]) -> f64 {
    let got = got.to_f64_vec().unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Tolerance relative to the output's magnitude: f32 and f64 round once per term; bf16
/// rounds the output (2^-9) and, on the fused path, the weights.
fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Double => 1e-12,
        Kind::Float => 1e-5,
        _ => 1.5e-2,
    }
}

/// Random stacks `[layers, b, t, d]` in several memory layouts, all non-zero almost surely:
/// contiguous, every other feature of a wider tensor, batch and time swapped, and every other
/// layer of a deeper stack.
fn layouts(layers: i64, b: i64, t: i64, d: i64, kind: Kind) -> Vec<(&'static str, Tensor)> {
    let randn = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_kind(kind);
    vec![
        ("contiguous", randn(&[layers, b, t, d])),
        (
            "feature-strided",
            randn(&[layers, b, t, 2 * d]).slice(3, 0, 2 * d, 2),
        ),
        ("transposed", randn(&[layers, t, b, d]).transpose(1, 2)),
        (
            "layer-strided",
            randn(&[2 * layers, b, t, d]).slice(0, 0, 2 * layers, 2),
        ),
    ]
}

const SHAPES: &[(i64, i64, i64, i64)] = &[
    (1, 1, 1, 1),
    (3, 2, 5, 7),
    (7, 3, 11, 33),
    (13, 1, 64, 130),
    (4, 1, 5, 4099), // 20495 elements: crosses the CPU kernel's 16384-element chunks, odd length
];

const PATHS: &[Implementation] = &[
    Implementation::Reference,
    Implementation::Fused,
    Implementation::CpuNoGrad,
    Implementation::Auto,
];

#[test]
fn every_path_matches_the_float64_oracle() {
    tch::manual_seed(11);
    for kind in [Kind::Float, Kind::BFloat16, Kind::Double] {
        for &(layers, b, t, d) in SHAPES {
            for (layout, stack) in layouts(layers, b, t, d, kind) {
                for dilation in 1..4 {
                    for current in [layers as usize - 1, (layers as usize) / 2] {
                        let sel = Selection::dilated(current, dilation).unwrap();
                        let w = Tensor::randn([sel.count as i64], (Kind::Float, Device::Cpu));
                        let want = oracle(&stack, &w.to_f64_vec().unwrap(), &sel);
                        for &path in PATHS {
                            let got = weighted_sum(&stack, &w, &sel, path).unwrap();
                            assert_eq!(got.kind(), kind);
                            assert_eq!(got.size(), vec![b, t, d]);
                            let err = rel_err(&got, &want);
                            assert!(
                                err <= tolerance(kind),
                                "{path:?} {kind:?} {layout} {layers}x{b}x{t}x{d} \
                                 k={dilation} current={current}: {err}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn outputs_poisoned_before_the_call_are_fully_written() {
    tch::manual_seed(12);
    for kind in [Kind::Float, Kind::BFloat16, Kind::Double] {
        for &(layers, b, t, d) in SHAPES {
            for (layout, stack) in layouts(layers, b, t, d, kind) {
                let sel = Selection::all(layers as usize);
                let w = Tensor::randn([layers], (Kind::Float, Device::Cpu));
                let want = oracle(&stack, &w.to_f64_vec().unwrap(), &sel);
                for &path in PATHS {
                    let mut out = Tensor::full([b, t, d], f64::NAN, (kind, Device::Cpu));
                    weighted_sum_into(&mut out, &stack, &w, &sel, path).unwrap();
                    assert!(out.all_finite(), "{path:?} {kind:?} {layout}: NaN left");
                    let err = rel_err(&out, &want);
                    assert!(err <= tolerance(kind), "{path:?} {kind:?} {layout}: {err}");
                }
            }
        }
    }
}

/// The shape of the leaf behind each of four layouts of a `[6, 2, 5, 9]` stack.
fn leaf_shape(layout: usize) -> [i64; 4] {
    match layout {
        0 => [6, 2, 5, 9],
        1 => [6, 2, 5, 18],
        2 => [6, 5, 2, 9],
        _ => [12, 2, 5, 9],
    }
}

/// The `[6, 2, 5, 9]` stack as a view of its leaf: contiguous, every other feature, batch and
/// time swapped, every other layer.
fn view_of(layout: usize, leaf: &Tensor) -> Tensor {
    match layout {
        0 => leaf.shallow_clone(),
        1 => leaf.slice(3, 0, 18, 2),
        2 => leaf.transpose(1, 2),
        _ => leaf.slice(0, 0, 12, 2),
    }
}

#[test]
fn fused_gradients_equal_the_reference_gradients() {
    for kind in [Kind::Double, Kind::Float] {
        for layout in 0..4 {
            for dilation in 1..4 {
                let sel = Selection::dilated(5, dilation).unwrap();
                // Drawn once, so that both paths see the same numbers whatever other tests
                // draw from libtorch's global generator meanwhile.
                let data = Tensor::randn(leaf_shape(layout), (kind, Device::Cpu));
                let w_data = Tensor::randn([sel.count as i64], (kind, Device::Cpu));
                let g = Tensor::randn([2, 5, 9], (kind, Device::Cpu));
                let grads = |path| {
                    let leaf = data.copy().set_requires_grad(true);
                    let w = w_data.copy().set_requires_grad(true);
                    let out = weighted_sum(&view_of(layout, &leaf), &w, &sel, path).unwrap();
                    (&out * &g).sum(Kind::Double).backward();
                    (leaf.grad(), w.grad())
                };
                let (gs_ref, gw_ref) = grads(Implementation::Reference);
                let (gs_fused, gw_fused) = grads(Implementation::Fused);
                let tol = tolerance(kind);
                assert!(
                    gs_fused.max_rel_diff(&gs_ref).unwrap() <= tol,
                    "{kind:?} layout {layout} k={dilation}: stack gradients differ"
                );
                assert!(
                    gw_fused.max_rel_diff(&gw_ref).unwrap() <= tol,
                    "{kind:?} layout {layout} k={dilation}: weight gradients differ"
                );
            }
        }
    }
}

#[test]
fn gradients_match_the_closed_form() {
    let stack = Tensor::randn([4, 2, 3, 5], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let w = Tensor::randn([2], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let sel = Selection::dilated(3, 2).unwrap(); // layers 1 and 3
    let g = Tensor::randn([2, 3, 5], (Kind::Double, Device::Cpu));
    let out = weighted_sum(&stack, &w, &sel, Implementation::Fused).unwrap();
    (&out * &g).sum(Kind::Double).backward();
    // d/dw_j = <x_j, g>; d/dx_j = w_j g for selected j, 0 otherwise.
    let gw = w.grad().to_f64_vec().unwrap();
    for (slot, j) in sel.indices().enumerate() {
        let want = (stack.get(j as i64) * &g)
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((gw[slot] - want).abs() < 1e-12);
    }
    let gx = stack.grad();
    let wv = w.to_f64_vec().unwrap();
    for j in 0..4 {
        let want = match j {
            1 => &g * wv[0],
            3 => &g * wv[1],
            _ => g.zeros_like(),
        };
        assert!(gx.get(j).max_abs_diff(&want).unwrap() < 1e-12);
    }
}

#[test]
fn no_grad_paths_refuse_inputs_that_autograd_records() {
    let stack = Tensor::randn([3, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let w = Tensor::randn([3], (Kind::Float, Device::Cpu));
    let sel = Selection::all(3);
    let err = weighted_sum(&stack, &w, &sel, Implementation::CpuNoGrad).unwrap_err();
    assert!(
        err.to_string().contains("does not record gradients"),
        "{err}"
    );
    // Inside no_grad the same call is fine, and Auto records through the fused path.
    let plain = tch::no_grad(|| weighted_sum(&stack, &w, &sel, Implementation::CpuNoGrad));
    let auto = weighted_sum(&stack, &w, &sel, Implementation::Auto).unwrap();
    assert!(auto.requires_grad());
    assert!(plain.unwrap().max_rel_diff(&auto).unwrap() < 1e-6);
    let cuda_on_cpu = tch::no_grad(|| weighted_sum(&stack, &w, &sel, Implementation::CudaNoGrad));
    assert!(cuda_on_cpu.is_err());
}

#[test]
fn bad_requests_are_refused_with_errors() {
    let stack = Tensor::ones([3, 2, 2], (Kind::Float, Device::Cpu));
    let w2 = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let err = weighted_sum(&stack, &w2, &Selection::all(3), Implementation::Auto).unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
    let far = Selection {
        start: 2,
        step: 2,
        count: 2,
    };
    assert!(weighted_sum(&stack, &w2, &far, Implementation::Auto).is_err());
    let int_weights = Tensor::ones([3], (Kind::Int64, Device::Cpu));
    let err = weighted_sum(
        &stack,
        &int_weights,
        &Selection::all(3),
        Implementation::Fused,
    )
    .unwrap_err();
    assert!(err.to_string().contains("floating-point"), "{err}");
    let mixed = [
        Tensor::ones([2], (Kind::Float, Device::Cpu)),
        Tensor::ones([3], (Kind::Float, Device::Cpu)),
    ];
    assert!(weighted_sum_list(&mixed, &w2).is_err());
    let w3 = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let mut wrong_shape = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let sel = Selection::all(3);
    for path in [Implementation::CpuNoGrad, Implementation::Fused] {
        assert!(weighted_sum_into(&mut wrong_shape, &stack, &w3, &sel, path).is_err());
    }
    let mut aliased = stack.get(2);
    let err =
        weighted_sum_into(&mut aliased, &stack, &w3, &sel, Implementation::CpuNoGrad).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
}

#[test]
fn buffer_and_live_stacks_compute_the_same_sums() {
    let outputs: Vec<Tensor> = (0..6)
        .map(|_| Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu)))
        .collect();
    let mut buffer = LayerStack::new(&outputs[0], 6, false, Implementation::Auto).unwrap();
    let mut live = LayerStack::new(&outputs[0], 6, true, Implementation::Reference).unwrap();
    for x in &outputs[1..] {
        buffer.push(x).unwrap();
        live.push(x).unwrap();
    }
    assert_eq!(buffer.len(), 6);
    let sel = Selection::dilated(5, 2).unwrap();
    let w = Tensor::randn([sel.count as i64], (Kind::Float, Device::Cpu));
    let a = buffer.weighted_sum(&w, &sel).unwrap();
    let b = live.weighted_sum(&w, &sel).unwrap();
    let chosen: Vec<Tensor> = sel.indices().map(|j| outputs[j].shallow_clone()).collect();
    let c = weighted_sum_list(&chosen, &w).unwrap();
    assert!(a.max_abs_diff(&b).unwrap() < 1e-6);
    assert!(b.max_abs_diff(&c).unwrap() == 0.0);
    assert!(
        buffer.push(&outputs[0]).is_err(),
        "a full stack refuses more outputs"
    );
}
