//! The scaling-law fitter against synthetic data drawn from known laws, the closed-form
//! frontier against a brute-force search, and the compute multiplier against its truth.

use rand::{Rng, SeedableRng};
use strata_sweep::law::{Observation, ScalingLaw, default_starts, fit};
use strata_sweep::multiplier::{Group, MultiplierSettings, Outcome, in_grid_compute, multiplier};

/// Hoffmann et al.'s fitted law.
const CHINCHILLA: ScalingLaw = ScalingLaw {
    e: 1.69,
    a: 406.4,
    alpha: 0.34,
    b: 410.7,
    beta: 0.28,
};

/// FLOPs per parameter per token in the synthetic runs.
const KAPPA: f64 = 6.0;

/// A 6 × 6 grid of runs from `law` with multiplicative log-normal noise `sigma`.
fn synthetic(law: &ScalingLaw, sigma: f64, seed: u64) -> (Vec<Observation>, Vec<f64>) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut obs = Vec::new();
    for i in 0..6 {
        for j in 0..6 {
            let n = 1e7 * 10f64.powf(i as f64 * 0.4);
            let d = 1e9 * 10f64.powf(j as f64 * 0.4);
            // Box-Muller normal draw.
            let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            obs.push(Observation {
                n,
                d,
                loss: law.loss(n, d) * (sigma * z).exp(),
            });
        }
    }
    let flops = obs.iter().map(|o| KAPPA * o.n * o.d).collect();
    (obs, flops)
}

#[test]
fn the_fit_recovers_a_known_law_from_noisy_data() {
    let (obs, _) = synthetic(&CHINCHILLA, 0.002, 1);
    let got = fit(&obs, &default_starts()).unwrap();
    let l = got.law;
    assert!((l.alpha - 0.34).abs() < 0.03, "alpha {}", l.alpha);
    assert!((l.beta - 0.28).abs() < 0.03, "beta {}", l.beta);
    assert!((l.e - 1.69).abs() / 1.69 < 0.03, "E {}", l.e);
    assert!(
        got.quality.rmse_log < 0.004 && got.quality.r2_log > 0.99,
        "{:?}",
        got.quality
    );
    // Without noise the fit is exact.
    let (clean, _) = synthetic(&CHINCHILLA, 0.0, 1);
    let exact = fit(&clean, &default_starts()).unwrap();
    assert!(exact.quality.rmse_log < 1e-5, "{:?}", exact.quality);
    assert!((exact.law.alpha - 0.34).abs() < 1e-3 && (exact.law.beta - 0.28).abs() < 1e-3);
}

#[test]
fn the_closed_form_frontier_is_the_minimum_over_model_sizes() {
    for compute in [1e18, 1e21, 1e24] {
        let (n, d) = CHINCHILLA.optimal_split(compute, KAPPA);
        assert!((KAPPA * n * d - compute).abs() / compute < 1e-12);
        let brute = (0..4000)
            .map(|i| {
                let n = 1e5 * 10f64.powf(i as f64 * 0.0025);
                CHINCHILLA.loss(n, compute / (KAPPA * n))
            })
            .fold(f64::INFINITY, f64::min);
        let closed = CHINCHILLA.frontier(compute, KAPPA);
        assert!(
            closed <= brute + 1e-9 && brute - closed < 1e-6,
            "{closed} vs {brute}"
        );
        let back = CHINCHILLA
            .compute_for(closed, KAPPA, compute / 1e3, compute * 1e3)
            .unwrap();
        assert!((back - compute).abs() / compute < 1e-9);
    }
    assert!(
        CHINCHILLA.compute_for(1.6, KAPPA, 1e10, 1e30).is_none(),
        "below E"
    );
}

#[test]
fn the_baseline_against_itself_has_multiplier_one() {
    let (obs, flops) = synthetic(&CHINCHILLA, 0.003, 2);
    let group = Group::new("baseline", obs, flops).unwrap();
    let settings = MultiplierSettings {
        bootstrap: 100,
        ..MultiplierSettings::default()
    };
    let both = multiplier(&group, &group.clone(), &settings);
    for outcome in [both.in_grid, both.frontier] {
        let Outcome::Reported(m) = outcome else {
            panic!("refused: {outcome:?}");
        };
        assert!((m.estimate - 1.0).abs() < 1e-9, "{m:?}");
        assert!(m.low <= 1.0 && 1.0 <= m.high, "{m:?}");
        assert!(m.low < m.high && m.resamples >= 80, "{m:?}");
    }
}

#[test]
fn a_variant_worth_twice_the_parameters_gets_its_true_multiplier() {
    // The variant behaves like a baseline with twice the parameters: A_v = A / 2^α.
    let variant = ScalingLaw {
        a: CHINCHILLA.a / 2f64.powf(CHINCHILLA.alpha),
        ..CHINCHILLA
    };
    let (bobs, bflops) = synthetic(&CHINCHILLA, 0.002, 3);
    let (vobs, vflops) = synthetic(&variant, 0.002, 4);
    let base = Group::new("baseline", bobs, bflops).unwrap();
    let better = Group::new("variant", vobs, vflops).unwrap();
    let settings = MultiplierSettings {
        bootstrap: 100,
        ..MultiplierSettings::default()
    };
    let both = multiplier(&base, &better, &settings);
    // The frontier reading's truth, from the true laws.
    let c = better.reference_compute();
    let target = variant.frontier(c, KAPPA);
    let frontier_truth = CHINCHILLA
        .compute_for(target, KAPPA, c / 1e4, c * 1e4)
        .unwrap()
        / c;
    // The in-grid truth: at each run's loss, the baseline's least compute within the grid's
    // sizes (2× slack) over the variant's (geometric mean).
    let n_range = (1e7 / 2.0, 1e7 * 10f64.powf(2.0) * 2.0);
    let log_mean = better
        .observations
        .iter()
        .map(|o| {
            let loss = variant.loss(o.n, o.d);
            let base = in_grid_compute(&CHINCHILLA, loss, KAPPA, n_range).unwrap();
            let own = in_grid_compute(&variant, loss, KAPPA, n_range).unwrap();
            (base / own).ln()
        })
        .sum::<f64>()
        / better.observations.len() as f64;
    let in_grid_truth = log_mean.exp();
    for (outcome, truth) in [
        (both.in_grid, in_grid_truth),
        (both.frontier, frontier_truth),
    ] {
        let Outcome::Reported(m) = outcome else {
            panic!("refused: {outcome:?}");
        };
        assert!(truth > 1.2, "the variant is genuinely better ({truth})");
        assert!(
            m.low <= truth && truth <= m.high,
            "truth {truth} outside {m:?}"
        );
        assert!(
            (m.estimate - truth).abs() / truth < 0.1,
            "estimate {m:?}, truth {truth}"
        );
    }
}

#[test]
fn poor_fits_get_no_multiplier() {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
    let (mut obs, flops) = synthetic(&CHINCHILLA, 0.0, 5);
    for o in &mut obs {
        o.loss = rng.random_range(2.0..4.0);
    }
    let noise = Group::new("noise", obs, flops).unwrap();
    let (bobs, bflops) = synthetic(&CHINCHILLA, 0.002, 6);
    let base = Group::new("baseline", bobs, bflops).unwrap();
    let both = multiplier(&base, &noise, &MultiplierSettings::default());
    for outcome in [both.in_grid, both.frontier] {
        match outcome {
            Outcome::Refused(why) => assert!(why.contains("the fit of `noise` is poor"), "{why}"),
            Outcome::Reported(m) => panic!("reported {m:?} for structureless data"),
        }
    }
    assert!(fit(&synthetic(&CHINCHILLA, 0.0, 1).0[..4], &default_starts()).is_err());
}

#[test]
fn a_frontier_outside_the_grid_is_refused_but_the_in_grid_reading_is_reported() {
    // Runs at small N only, with far more data than compute-optimal: the frontier at their
    // compute wants much larger models than the grid has.
    let mut obs = Vec::new();
    for i in 0..4 {
        for j in 0..4 {
            let n = 1e6 * 10f64.powf(i as f64 * 0.2);
            let d = 1e11 * 10f64.powf(j as f64 * 0.3);
            obs.push(Observation {
                n,
                d,
                loss: CHINCHILLA.loss(n, d),
            });
        }
    }
    let flops: Vec<f64> = obs.iter().map(|o| KAPPA * o.n * o.d).collect();
    let group = Group::new("small", obs, flops).unwrap();
    let settings = MultiplierSettings {
        bootstrap: 20,
        ..MultiplierSettings::default()
    };
    let both = multiplier(&group, &group.clone(), &settings);
    match both.frontier {
        Outcome::Refused(why) => assert!(why.contains("outside the sweep's grid"), "{why}"),
        Outcome::Reported(m) => panic!("frontier reported outside the grid: {m:?}"),
    }
    assert!(matches!(both.in_grid, Outcome::Reported(m) if (m.estimate - 1.0).abs() < 1e-9));
}
