//! Compute multipliers: how much more compute the baseline needs to reach a variant's loss,
//! with a bootstrap confidence interval over runs.
//!
//! Each variant's runs get their own law. The reference compute `C` is the geometric middle
//! of the variant's run FLOPs, so the estimate stays inside the sweep. The variant's
//! frontier gives its loss at `C`. The baseline's frontier is inverted to find the compute
//! `C_b` that reaches the same loss, and the multiplier is `C_b / C`. FLOPs are related to
//! `N·D` by `κ`, the geometric mean over a variant's runs of `FLOPs / (N·D)` (about 6 plus
//! attention). The bootstrap resamples the runs of both sides with replacement and refits.
//! A multiplier is refused when either fit is poor, when the baseline's frontier does not
//! reach the loss within 10⁴× of `C` either way, or when too few bootstrap refits succeed.

use crate::law::{Fit, Observation, fit, starts_near};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use strata_tensor::Result;

/// The runs of one variant with their fitted law.
#[derive(Clone, Debug)]
pub struct Group {
    /// Variant name.
    pub name: String,
    /// One observation per run.
    pub observations: Vec<Observation>,
    /// Training FLOPs per run.
    pub flops: Vec<f64>,
    /// The law fitted to all runs.
    pub fit: Fit,
}

impl Group {
    /// Fits `observations` (with their `flops`) from the default starts.
    pub fn new(name: &str, observations: Vec<Observation>, flops: Vec<f64>) -> Result<Self> {
        let fit = fit(&observations, &crate::law::default_starts())?;
        Ok(Self {
            name: name.to_owned(),
            observations,
            flops,
            fit,
        })
    }

    /// `κ = FLOPs / (N·D)`, geometric mean over the runs.
    pub fn kappa(&self) -> f64 {
        geometric_mean(
            self.observations
                .iter()
                .zip(&self.flops)
                .map(|(o, f)| f / (o.n * o.d)),
        )
    }

    /// The geometric middle of the runs' FLOPs.
    pub fn reference_compute(&self) -> f64 {
        let (lo, hi) = self
            .flops
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &f| {
                (lo.min(f), hi.max(f))
            });
        (lo * hi).sqrt()
    }
}

/// Geometric mean.
fn geometric_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v.ln(), n + 1));
    (sum / n.max(1) as f64).exp()
}

/// Thresholds and bootstrap settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiplierSettings {
    /// Bootstrap resamples.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// Largest acceptable RMSE of a fit in log loss.
    #[serde(default = "default_max_rmse")]
    pub max_rmse_log: f64,
    /// Smallest acceptable R² of a fit in log loss.
    #[serde(default = "default_min_r2")]
    pub min_r2_log: f64,
    /// Seed of the resampling.
    #[serde(default)]
    pub seed: u64,
}

/// Default bootstrap resamples.
fn default_bootstrap() -> usize {
    200
}
/// Default largest RMSE.
fn default_max_rmse() -> f64 {
    0.03
}
/// Default smallest R².
fn default_min_r2() -> f64 {
    0.8
}

impl Default for MultiplierSettings {
    fn default() -> Self {
        Self {
            bootstrap: default_bootstrap(),
            max_rmse_log: default_max_rmse(),
            min_r2_log: default_min_r2(),
            seed: 0,
        }
    }
}

/// A reported multiplier with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Multiplier {
    /// `C_b / C` from the fits to all runs.
    pub estimate: f64,
    /// 2.5th percentile of the bootstrap.
    pub low: f64,
    /// 97.5th percentile of the bootstrap.
    pub high: f64,
    /// Reference compute `C`.
    pub compute: f64,
    /// The variant's frontier loss at `C`.
    pub loss: f64,
    /// Bootstrap refits that gave a multiplier.
    pub resamples: usize,
}

/// A multiplier, or why none is reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The multiplier and its interval.
    Reported(Multiplier),
    /// Why no multiplier is reported.
    Refused(String),
}

/// Why a fit is too poor to use, if it is.
pub fn poor_fit(group: &Group, settings: &MultiplierSettings) -> Option<String> {
    let q = group.fit.quality;
    (q.rmse_log > settings.max_rmse_log || q.r2_log < settings.min_r2_log).then(|| {
        format!(
            "the fit of `{}` is poor (RMSE {:.4} in log loss, limit {}; R² {:.3}, limit {})",
            group.name, q.rmse_log, settings.max_rmse_log, q.r2_log, settings.min_r2_log
        )
    })
}

/// The multiplier of `variant` against `baseline` from the given fits.
fn point(
    baseline: &Fit,
    variant: &Fit,
    kappas: (f64, f64),
    compute: f64,
) -> std::result::Result<(f64, f64), String> {
    let loss = variant.law.frontier(compute, kappas.1);
    match baseline
        .law
        .compute_for(loss, kappas.0, compute * 1e-4, compute * 1e4)
    {
        Some(c) => Ok((c / compute, loss)),
        None => Err(format!(
            "the baseline's frontier does not reach the variant's loss {loss:.4} within 10^±4 of \
             {compute:.3e} FLOPs (its E is {:.4})",
            baseline.law.e
        )),
    }
}

/// Resamples `group` with replacement and refits near its fit.
fn resample(group: &Group, rng: &mut rand_pcg::Pcg64) -> Option<Fit> {
    let n = group.observations.len();
    let picks: Vec<Observation> = (0..n)
        .map(|_| group.observations[rng.random_range(0..n)])
        .collect();
    fit(&picks, &starts_near(&group.fit.law)).ok()
}

/// The compute multiplier of `variant` over `baseline` (module docs).
pub fn multiplier(baseline: &Group, variant: &Group, settings: &MultiplierSettings) -> Outcome {
    for group in [baseline, variant] {
        if let Some(why) = poor_fit(group, settings) {
            return Outcome::Refused(why);
        }
    }
    let kappas = (baseline.kappa(), variant.kappa());
    let compute = variant.reference_compute();
    let (estimate, loss) = match point(&baseline.fit, &variant.fit, kappas, compute) {
        Ok(p) => p,
        Err(why) => return Outcome::Refused(why),
    };
    let mut rng = rand_pcg::Pcg64::seed_from_u64(settings.seed);
    let mut samples: Vec<f64> = (0..settings.bootstrap)
        .filter_map(|_| {
            let b = resample(baseline, &mut rng)?;
            let v = resample(variant, &mut rng)?;
            point(&b, &v, kappas, compute).ok().map(|p| p.0)
        })
        .filter(|m| m.is_finite())
        .collect();
    if settings.bootstrap > 0 && samples.len() * 5 < settings.bootstrap * 4 {
        return Outcome::Refused(format!(
            "only {} of {} bootstrap refits gave a multiplier: the fits are unstable",
            samples.len(),
            settings.bootstrap
        ));
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if samples.is_empty() {
            estimate
        } else {
            samples[((samples.len() - 1) as f64 * q).round() as usize]
        }
    };
    Outcome::Reported(Multiplier {
        estimate,
        low: pick(0.025),
        high: pick(0.975),
        compute,
        loss,
        resamples: samples.len(),
    })
}
