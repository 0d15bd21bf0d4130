//! Paired statistics checked against references computed another way: hand-computed means
//! and intervals, a numerically integrated t tail, and simulated coverage and power.

use strata_stats::Normal;
use strata_stats::paired::{paired, pairs_needed, resolvable, t_quantile};

/// Student's t density with `df` degrees of freedom (through the log-gamma of Lanczos).
fn t_density(x: f64, df: f64) -> f64 {
    let ln_gamma = |z: f64| -> f64 {
        let g = 7.0;
        let c = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let z = z - 1.0;
        let t = z + g + 0.5;
        let sum: f64 = c[0] + (1..9).map(|i| c[i] / (z + i as f64)).sum::<f64>();
        0.5 * (2.0 * std::f64::consts::PI).ln() + (z + 0.5) * t.ln() - t + sum.ln()
    };
    let log = ln_gamma((df + 1.0) / 2.0)
        - ln_gamma(df / 2.0)
        - 0.5 * (df * std::f64::consts::PI).ln()
        - (df + 1.0) / 2.0 * (1.0 + x * x / df).ln();
    log.exp()
}

/// `P(T > t)` by Simpson's rule over [t, 400].
fn t_tail(t: f64, df: f64) -> f64 {
    let (a, b, n) = (t, 400.0, 400_000);
    let h = (b - a) / n as f64;
    let mut sum = t_density(a, df) + t_density(b, df);
    for i in 1..n {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        sum += w * t_density(a + i as f64 * h, df);
    }
    sum * h / 3.0
}

#[test]
fn t_quantiles_match_tables_and_the_integrated_tail() {
    // Tabulated two-sided 95% critical values.
    for (df, table) in [(1.0, 12.706), (4.0, 2.776), (9.0, 2.262), (30.0, 2.042)] {
        assert!((t_quantile(0.975, df) - table).abs() < 1e-3, "df {df}");
        // (The integral stops at 400, which cuts off too much of the Cauchy's tail at df 1.)
        if df > 1.0 {
            assert!(
                (t_tail(t_quantile(0.975, df), df) - 0.025).abs() < 1e-4,
                "df {df}"
            );
        }
    }
}

#[test]
fn a_paired_estimate_matches_the_hand_computed_one() {
    let values = [1.0, 2.0, 3.0, 4.0, 5.0];
    let p = paired(&values, 2000, 7).unwrap();
    let sd = 2.5f64.sqrt();
    assert_eq!(p.n, 5);
    assert!((p.mean - 3.0).abs() < 1e-12);
    assert!((p.sd - sd).abs() < 1e-12);
    let half = t_quantile(0.975, 4.0) * sd / 5f64.sqrt();
    assert!((p.t_interval.0 - (3.0 - half)).abs() < 1e-12);
    assert!((p.t_interval.1 - (3.0 + half)).abs() < 1e-12);
    let t = 3.0 / (sd / 5f64.sqrt());
    assert!(
        (p.p_greater - t_tail(t, 4.0)).abs() < 1e-6,
        "{}",
        p.p_greater
    );
    // The bootstrap interval lies inside the data's range and around the mean.
    assert!(p.bootstrap_interval.0 >= 1.0 && p.bootstrap_interval.1 <= 5.0);
    assert!(p.bootstrap_interval.0 < 3.0 && p.bootstrap_interval.1 > 3.0);
    // Seeded: the same seed gives the same interval.
    assert_eq!(paired(&values, 2000, 7).unwrap(), p);
    assert!(p.excludes_zero());
}

#[test]
fn degenerate_inputs() {
    assert!(paired(&[1.0], 100, 0).is_none());
    assert!(paired(&[1.0, f64::NAN], 100, 0).is_none());
    let zero = paired(&[0.0, 0.0, 0.0], 100, 0).unwrap();
    assert_eq!((zero.t_interval, zero.p_greater), ((0.0, 0.0), 0.5));
    assert!(!zero.excludes_zero());
    assert_eq!(paired(&[0.1, 0.1], 100, 0).unwrap().p_greater, 0.0);
}

#[test]
fn the_t_interval_covers_the_true_mean_95_percent_of_the_time() {
    let mut normal = Normal::new(11);
    let (trials, n, truth, sd) = (4000, 5, 0.05, 0.02);
    let mut covered = 0;
    let mut null_rejections = 0;
    for k in 0..trials {
        let values: Vec<f64> = (0..n).map(|_| truth + sd * normal.sample()).collect();
        let p = paired(&values, 200, k).unwrap();
        covered += usize::from(p.t_interval.0 <= truth && truth <= p.t_interval.1);
        let null: Vec<f64> = (0..n).map(|_| sd * normal.sample()).collect();
        null_rejections += usize::from(paired(&null, 200, k).unwrap().p_greater < 0.05);
    }
    let coverage = covered as f64 / trials as f64;
    assert!((coverage - 0.95).abs() < 0.015, "coverage {coverage}");
    let size = null_rejections as f64 / trials as f64;
    assert!((size - 0.05).abs() < 0.015, "one-sided test size {size}");
}

#[test]
fn the_power_formula_holds_in_simulation() {
    let sd = 0.03;
    for n in [5, 10] {
        let effect = resolvable(sd, n);
        let mut normal = Normal::new(n as u64);
        let trials = 3000;
        let found = (0..trials)
            .filter(|&k| {
                let values: Vec<f64> = (0..n).map(|_| effect + sd * normal.sample()).collect();
                let p = paired(&values, 100, k).unwrap();
                p.t_interval.0 > 0.0
            })
            .count();
        let power = found as f64 / trials as f64;
        // The normal-approximation formula is slightly optimistic for few pairs.
        assert!((0.72..0.86).contains(&power), "n {n}: power {power}");
    }
    assert!(resolvable(sd, 10) < resolvable(sd, 5));
    let needed = pairs_needed(sd, 0.05f64.ln_1p(), 10_000).unwrap();
    assert!(resolvable(sd, needed) <= 0.05f64.ln_1p());
    assert!(resolvable(sd, needed - 1) > 0.05f64.ln_1p());
    assert_eq!(pairs_needed(1.0, 1e-6, 100), None);
}
