//! The weighted sum against a float64 naive loop, for many shapes, strides and dtypes.

use strata_kernels::{Implementation, LayerStack, Selection, weighted_sum, weighted_sum_list};
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

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn matches_the_float64_oracle_for_shapes_selections_and_dtypes() {
    // (kind, tolerance relative to the output's largest magnitude)
    for (kind, tol) in [
        (Kind::Float, 1e-6),
        (Kind::BFloat16, 1e-2),
        (Kind::Double, 1e-12),
    ] {
        for &(layers, b, t, d) in &[(1, 1, 1, 1), (3, 2, 5, 7), (7, 3, 11, 33), (13, 1, 64, 130)] {
            let stack = Tensor::randn([layers, b, t, d], (Kind::Float, Device::Cpu)).to_kind(kind);
            for dilation in 1..4 {
                let current = layers as usize - 1;
                let sel = Selection::dilated(current, dilation).unwrap();
                let w = Tensor::randn([sel.count as i64], (Kind::Float, Device::Cpu));
                let got = weighted_sum(&stack, &w, &sel, Implementation::Reference).unwrap();
                assert_eq!(got.kind(), kind);
                assert_eq!(got.size(), vec![b, t, d]);
                let want = oracle(&stack, &w.to_f64_vec().unwrap(), &sel);
                let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                let err = max_abs(&got.to_f64_vec().unwrap(), &want) / scale;
                assert!(
                    err <= tol,
                    "{kind:?} {layers}x{b}x{t}x{d} k={dilation}: {err}"
                );
            }
        }
    }
}

#[test]
fn strided_and_contiguous_stacks_agree() {
    let wide = Tensor::randn([5, 2, 9, 2 * 17], (Kind::Float, Device::Cpu));
    let strided = wide.slice(3, 0, 2 * 17, 2); // every other feature: not contiguous
    assert!(!strided.is_contiguous());
    let contiguous = strided.contiguous();
    let sel = Selection::all(5);
    let w = Tensor::randn([5], (Kind::Float, Device::Cpu));
    let a = weighted_sum(&strided, &w, &sel, Implementation::Auto).unwrap();
    let b = weighted_sum(&contiguous, &w, &sel, Implementation::Auto).unwrap();
    assert_eq!(a.max_abs_diff(&b).unwrap(), 0.0);
}

#[test]
fn gradients_match_the_closed_form() {
    let stack = Tensor::randn([4, 2, 3, 5], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let w = Tensor::randn([2], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let sel = Selection::dilated(3, 2).unwrap(); // layers 1 and 3
    let g = Tensor::randn([2, 3, 5], (Kind::Double, Device::Cpu));
    let out = weighted_sum(&stack, &w, &sel, Implementation::Reference).unwrap();
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
fn buffer_and_live_stacks_compute_the_same_sums() {
    let outputs: Vec<Tensor> = (0..6)
        .map(|_| Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu)))
        .collect();
    let mut buffer = LayerStack::new(&outputs[0], 6, false).unwrap();
    let mut live = LayerStack::new(&outputs[0], 6, true).unwrap();
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
    let mixed = [
        Tensor::ones([2], (Kind::Float, Device::Cpu)),
        Tensor::ones([3], (Kind::Float, Device::Cpu)),
    ];
    assert!(weighted_sum_list(&mixed, &w2).is_err());
}
