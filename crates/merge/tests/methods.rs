//! Merge methods on small hand-made tensors against closed forms and hand-computed values.

use strata_merge::{MethodKind, MethodParams, State, merge_states, merge_tensor};
use strata_tensor::TensorExt;
use tch::Tensor;

fn params(method: MethodKind, weights: &[f64]) -> MethodParams {
    MethodParams {
        method,
        weights: weights.to_vec(),
        normalize: true,
        density: 1.0,
        drop: 0.0,
        t: 0.5,
        seed: 0,
    }
}

fn t(values: &[f64]) -> Tensor {
    Tensor::from_slice(values)
}

fn values(x: &Tensor) -> Vec<f64> {
    x.to_f64_vec().unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

const ALL: [MethodKind; 5] = [
    MethodKind::Linear,
    MethodKind::TaskArithmetic,
    MethodKind::Ties,
    MethodKind::Dare,
    MethodKind::Slerp,
];

#[test]
fn merging_identical_models_returns_that_model() {
    let base = t(&[0.5, -1.0, 2.0, 0.0]);
    let model = t(&[1.5, -2.0, 2.5, 0.25]);
    for method in ALL {
        let mut p = params(method, &[0.6, 0.4]);
        p.density = 0.5;
        p.drop = 0.0;
        let got = merge_tensor("w", Some(&base), &[&model, &model], &p).unwrap();
        assert!(
            close(&values(&got), &values(&model), 1e-12) || method == MethodKind::Ties,
            "{method:?}: {:?}",
            values(&got)
        );
    }
    // TIES keeps the whole delta at density 1 (and both copies agree everywhere).
    let mut p = params(MethodKind::Ties, &[1.0, 1.0]);
    p.density = 1.0;
    let got = merge_tensor("w", Some(&base), &[&model, &model], &p).unwrap();
    assert!(close(&values(&got), &values(&model), 1e-12));
}

#[test]
fn task_arithmetic_with_zero_lambdas_is_the_base_and_with_one_is_the_model() {
    let base = t(&[1.0, 2.0, 3.0]);
    let (a, b) = (t(&[2.0, 2.0, 5.0]), t(&[0.0, 4.0, 3.0]));
    let p = params(MethodKind::TaskArithmetic, &[0.0, 0.0]);
    assert!(
        merge_tensor("w", Some(&base), &[&a, &b], &p)
            .unwrap()
            .equal(&base)
    );
    let p = params(MethodKind::TaskArithmetic, &[1.0, 0.0]);
    assert!(
        merge_tensor("w", Some(&base), &[&a, &b], &p)
            .unwrap()
            .equal(&a)
    );
    // base + 0.5 (a - base) + 2 (b - base), by hand.
    let p = params(MethodKind::TaskArithmetic, &[0.5, 2.0]);
    let got = merge_tensor("w", Some(&base), &[&a, &b], &p).unwrap();
    assert!(close(&values(&got), &[-0.5, 6.0, 4.0], 1e-12));
}

#[test]
fn linear_soup_is_the_weighted_mean() {
    let (a, b) = (t(&[1.0, 4.0]), t(&[3.0, 0.0]));
    let got = merge_tensor(
        "w",
        None,
        &[&a, &b],
        &params(MethodKind::Linear, &[1.0, 3.0]),
    )
    .unwrap();
    assert!(close(&values(&got), &[2.5, 1.0], 1e-12));
    let mut raw = params(MethodKind::Linear, &[1.0, 3.0]);
    raw.normalize = false;
    let got = merge_tensor("w", None, &[&a, &b], &raw).unwrap();
    assert!(close(&values(&got), &[10.0, 4.0], 1e-12));
    // Weights that cancel up to rounding (0.1 + 0.2 - 0.3 = 5.6e-17) cannot be normalised.
    let c = t(&[2.0, 2.0]);
    let cancel = params(MethodKind::Linear, &[0.1, 0.2, -0.3]);
    let err = merge_tensor("w", None, &[&a, &b, &c], &cancel).unwrap_err();
    assert!(err.to_string().contains("sum to (nearly) 0"), "{err}");
}

#[test]
fn ties_trims_elects_signs_and_averages_the_agreeing_entries() {
    let base = t(&[0.0; 5]);
    // Deltas (base is zero): entry 0 conflicts (+3 vs -1, elected +), entry 1 agrees,
    // entry 2 is trimmed from model a (smallest of a's magnitudes), entry 3 only in b,
    // entry 4 conflicts with equal mass after trimming b's small entry.
    let a = t(&[3.0, 2.0, 0.1, 0.0, -1.0]);
    let b = t(&[-1.0, 4.0, 0.5, 2.0, 0.2]);
    let mut p = params(MethodKind::Ties, &[1.0, 1.0]);
    p.density = 0.6; // keep ceil(3) of 5 entries per delta
    // a keeps {3, 2, -1} (entries 0, 1, 4); b keeps {4, 2, -1} (entries 1, 3, 0).
    // Sums: [2, 6, 0, 2, -1] -> signs [+, +, 0, +, -].
    // Entry 0: agreeing with + -> only a's 3 -> 3. Entry 1: (2 + 4) / 2 = 3. Entry 2: 0.
    // Entry 3: 2. Entry 4: a's -1.
    let got = merge_tensor("w", Some(&base), &[&a, &b], &p).unwrap();
    assert!(
        close(&values(&got), &[3.0, 3.0, 0.0, 2.0, -1.0], 1e-12),
        "{:?}",
        values(&got)
    );
    // λ scales each delta before trimming and electing.
    let p2 = MethodParams {
        weights: vec![0.5, 1.0],
        ..p
    };
    let got = merge_tensor("w", Some(&base), &[&a, &b], &p2).unwrap();
    // a*0.5 keeps {1.5, 1, -0.5}; sums [0.5, 5, 0, 2, -0.5]; entry 0: + -> 1.5; entry 1: 2.5;
    // entry 4: - -> -0.5.
    assert!(
        close(&values(&got), &[1.5, 2.5, 0.0, 2.0, -0.5], 1e-12),
        "{:?}",
        values(&got)
    );
}

#[test]
fn dare_is_seeded_unbiased_and_equals_task_arithmetic_without_drops() {
    let base = Tensor::randn([64], (tch::Kind::Double, tch::Device::Cpu));
    let a = &base + Tensor::randn([64], (tch::Kind::Double, tch::Device::Cpu));
    let b = &base + Tensor::randn([64], (tch::Kind::Double, tch::Device::Cpu));
    let ta = merge_tensor(
        "w",
        Some(&base),
        &[&a, &b],
        &params(MethodKind::TaskArithmetic, &[1.0, 0.5]),
    )
    .unwrap();
    let mut p = params(MethodKind::Dare, &[1.0, 0.5]);
    assert!(
        merge_tensor("w", Some(&base), &[&a, &b], &p)
            .unwrap()
            .equal(&ta)
    );
    p.drop = 0.5;
    let once = merge_tensor("w", Some(&base), &[&a, &b], &p).unwrap();
    assert!(once.equal(&merge_tensor("w", Some(&base), &[&a, &b], &p).unwrap()));
    let other_seed = MethodParams {
        seed: 1,
        ..p.clone()
    };
    assert!(!once.equal(&merge_tensor("w", Some(&base), &[&a, &b], &other_seed).unwrap()));
    let other_name = merge_tensor("v", Some(&base), &[&a, &b], &p).unwrap();
    assert!(!once.equal(&other_name), "masks differ between tensors");
    // Each entry is base + Σ λ δ m / (1 - p) with m ~ Bernoulli(1 - p): unbiased, with a
    // per-entry standard deviation of at most |λ δ| for p = 0.5. The mean of 400 seeds is
    // within 4 standard errors (4 / sqrt(400) = 0.2 of the largest |λ δ| sum) of the expectation.
    let seeds = 400;
    let mut sum = ta.zeros_like();
    for seed in 0..seeds {
        let ps = MethodParams { seed, ..p.clone() };
        sum += merge_tensor("w", Some(&base), &[&a, &b], &ps).unwrap();
    }
    let mean = sum / seeds as f64;
    let scale = (a.abs() + b.abs() * 0.5 + base.abs() * 1.5)
        .max()
        .double_value(&[]);
    let err = mean.max_abs_diff(&ta).unwrap();
    assert!(
        err < 0.2 * scale,
        "mean over seeds is {err} from task arithmetic"
    );
}

#[test]
fn slerp_hits_the_endpoints_and_interpolates_the_angle() {
    let (a, b) = (t(&[1.0, 0.0]), t(&[0.0, 1.0]));
    let at = |x: f64| {
        let mut p = params(MethodKind::Slerp, &[]);
        p.t = x;
        values(&merge_tensor("w", None, &[&a, &b], &p).unwrap())
    };
    assert!(close(&at(0.0), &[1.0, 0.0], 1e-12));
    assert!(close(&at(1.0), &[0.0, 1.0], 1e-12));
    let h = std::f64::consts::FRAC_1_SQRT_2;
    assert!(close(&at(0.5), &[h, h], 1e-12));
    // A general pair: the result's angle to a is t·Ω.
    let (c, d) = (t(&[2.0, 1.0, -1.0]), t(&[-0.5, 3.0, 1.0]));
    let angle = |x: &[f64], y: &[f64]| {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let n = |v: &[f64]| v.iter().map(|p| p * p).sum::<f64>().sqrt();
        (dot / (n(x) * n(y))).acos()
    };
    let (cv, dv) = (values(&c), values(&d));
    let omega = angle(&cv, &dv);
    for x in [0.25, 0.7] {
        let mut p = params(MethodKind::Slerp, &[]);
        p.t = x;
        let got = values(&merge_tensor("w", None, &[&c, &d], &p).unwrap());
        assert!((angle(&cv, &got) - x * omega).abs() < 1e-9, "t = {x}");
        assert!(
            (angle(&got, &dv) - (1.0 - x) * omega).abs() < 1e-9,
            "t = {x}"
        );
    }
    // Colinear vectors fall back to linear interpolation.
    let (e, f) = (t(&[1.0, 2.0]), t(&[2.0, 4.0]));
    let mut p = params(MethodKind::Slerp, &[]);
    p.t = 0.5;
    assert!(close(
        &values(&merge_tensor("w", None, &[&e, &f], &p).unwrap()),
        &[1.5, 3.0],
        1e-12
    ));
}

#[test]
fn bad_merges_name_the_tensor() {
    let (a, b) = (t(&[1.0, 2.0]), t(&[1.0, 2.0, 3.0]));
    let err = |r: strata_tensor::Result<Tensor>| r.unwrap_err().to_string();
    let e = err(merge_tensor(
        "h.0.w",
        None,
        &[&a, &b],
        &params(MethodKind::Linear, &[1.0, 1.0]),
    ));
    assert!(
        e.contains("h.0.w") && e.contains("[2]") && e.contains("[3]"),
        "{e}"
    );
    let e = err(merge_tensor(
        "h.1.w",
        None,
        &[&a, &a],
        &params(MethodKind::Linear, &[1.0]),
    ));
    assert!(
        e.contains("h.1.w") && e.contains("expected 2 weights"),
        "{e}"
    );
    let e = err(merge_tensor(
        "x",
        None,
        &[&a],
        &params(MethodKind::Ties, &[1.0]),
    ));
    assert!(e.contains("`x`") && e.contains("needs the base"), "{e}");
    let e = err(merge_tensor(
        "y",
        None,
        &[&a],
        &params(MethodKind::Slerp, &[]),
    ));
    assert!(e.contains("`y`") && e.contains("exactly 2 models"), "{e}");
    let mut p = params(MethodKind::Dare, &[1.0]);
    p.drop = 1.0;
    let e = err(merge_tensor("z", Some(&a), &[&a], &p));
    assert!(e.contains("`z`") && e.contains("[0, 1)"), "{e}");
    let e = err(merge_tensor(
        "f",
        None,
        &[&a, &a.to_kind(tch::Kind::Float)],
        &params(MethodKind::Linear, &[1.0, 1.0]),
    ));
    assert!(e.contains("`f`") && e.contains("Float"), "{e}");

    let state =
        |names: &[&str]| -> State { names.iter().map(|n| (n.to_string(), t(&[1.0]))).collect() };
    let e = merge_states(None, &[state(&["a", "b"]), state(&["a"])], |_| {
        params(MethodKind::Linear, &[1.0, 1.0])
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("`b`") && e.contains("model 1"), "{e}");
    let e = merge_states(Some(&state(&["a"])), &[state(&["a", "c"])], |_| {
        params(MethodKind::TaskArithmetic, &[1.0])
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("`c`") && e.contains("base"), "{e}");
}
