//! Paired statistics over seeds: the mean of per-seed differences with a Student-t interval,
//! a seeded percentile bootstrap interval, a one-sided p-value, and the power of a paired
//! design (the smallest effect it resolves, the seeds a given effect needs).
//!
//! Everything works on per-seed paired values such as log multipliers or loss
//! differences; nothing here needs libtorch.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// Power the sample-size statements are made at.
pub const POWER: f64 = 0.8;

/// A paired estimate: the mean over seeds of paired values with its intervals.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Seed pairs.
    pub n: usize,
    /// Mean of the paired values.
    pub mean: f64,
    /// Sample standard deviation of the paired values (n - 1 in the denominator).
    pub sd: f64,
    /// 95% Student-t interval of the mean: `mean ± t(0.975, n-1) · sd / √n`.
    pub t_interval: (f64, f64),
    /// 95% percentile bootstrap interval of the mean (seed pairs resampled with
    /// replacement).
    pub bootstrap_interval: (f64, f64),
    /// One-sided p-value of the paired t-test for "the true mean is > 0".
    pub p_greater: f64,
}

impl Paired {
    /// True when both intervals lie entirely above 0 or entirely below 0.
    pub fn excludes_zero(&self) -> bool {
        let above = self.t_interval.0 > 0.0 && self.bootstrap_interval.0 > 0.0;
        let below = self.t_interval.1 < 0.0 && self.bootstrap_interval.1 < 0.0;
        above || below
    }

    /// Half the width of the t interval.
    pub fn half_width(&self) -> f64 {
        (self.t_interval.1 - self.t_interval.0) / 2.0
    }
}

/// The `p` quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |t| t.inverse_cdf(p))
}

/// Mean and sample standard deviation.
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// The paired estimate of `values` (one per seed pair; at least two), with `resamples`
/// bootstrap resamples drawn from `seed`. `None` with fewer than two values.
pub fn paired(values: &[f64], resamples: usize, seed: u64) -> Option<Paired> {
    let n = values.len();
    if n < 2 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (mean, sd) = mean_sd(values);
    let df = (n - 1) as f64;
    let se = sd / (n as f64).sqrt();
    let half = t_quantile(0.5 + CONFIDENCE / 2.0, df) * se;
    let p_greater = if se > 0.0 {
        let t = mean / se;
        StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| 1.0 - d.cdf(t))
    } else if mean > 0.0 {
        0.0
    } else if mean < 0.0 {
        1.0
    } else {
        0.5
    };
    Some(Paired {
        n,
        mean,
        sd,
        t_interval: (mean - half, mean + half),
        bootstrap_interval: bootstrap(values, resamples, seed),
        p_greater,
    })
}

/// The 95% percentile interval of the mean over `resamples` resamples of `values` with
/// replacement.
fn bootstrap(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let pick = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    let tail = (1.0 - CONFIDENCE) / 2.0;
    (pick(tail), pick(1.0 - tail))
}

/// The factor `t(0.975, n-1) + t(0.8, n-1)` of a paired t-test with `n` pairs: an effect
/// of this many standard errors is found (interval excluding 0) with 80% power.
fn power_factor(n: usize) -> f64 {
    let df = (n.max(2) - 1) as f64;
    t_quantile(0.5 + CONFIDENCE / 2.0, df) + t_quantile(POWER, df)
}

/// The smallest true mean a paired design with `n` pairs of spread `sd` resolves with 80%
/// power at the 95% level: `(t(0.975, n-1) + t(0.8, n-1)) · sd / √n`.
pub fn resolvable(sd: f64, n: usize) -> f64 {
    power_factor(n) * sd / (n as f64).sqrt()
}

/// The fewest pairs (from 2 up to `limit`) for which [`resolvable`] is at most `effect`;
/// `None` when even `limit` pairs are not enough.
pub fn pairs_needed(sd: f64, effect: f64, limit: usize) -> Option<usize> {
    (2..=limit).find(|&n| resolvable(sd, n) <= effect.abs())
}
