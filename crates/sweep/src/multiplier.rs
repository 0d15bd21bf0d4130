//! Compute multipliers: how much more compute the baseline needs to reach a variant's loss,
//! with a bootstrap confidence interval over runs, in two readings.
//!
//! **In the grid**: for the fitted loss of each of the variant's runs, the least compute with
//! which the baseline's law reaches it using a model size within the grid's N range (2×
//! slack either way) and any data, over the least compute with which the variant's law does
//! the same; the multiplier is the geometric mean over the variant's runs.
//!
//! **On the frontier**: the reference compute `C` is the geometric middle of the variant's
//! run FLOPs. The variant's frontier gives its loss at `C`, the baseline's frontier is
//! inverted for the compute `C_b` that reaches it, and the multiplier is `C_b / C`.
//!
//! Each variant's runs get their own law. FLOPs relate to `N·D` by `κ`, the geometric mean
//! over a variant's runs of `FLOPs / (N·D)` (about 6, plus attention). The bootstrap
//! resamples the runs of both sides with replacement and refits. A reading is refused when
//! either fit is poor, when the baseline cannot reach the loss (at that size, or within 10⁴×
//! of `C`), or when too few bootstrap refits succeed. The frontier reading is also refused
//! when a compute-optimal model lies more than 2× outside the grid's N or D: the frontier is
//! then an extrapolation.

use crate::law::{Fit, Observation, ScalingLaw, fit, starts_near};
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
        let (lo, hi) = range(self.flops.iter().copied());
        (lo * hi).sqrt()
    }
}

/// The smallest and largest of positive `values`.
pub(crate) fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
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

/// A reported multiplier with its 95% interval (`compute` and `loss`: the reference compute
/// and the variant's frontier loss there; for the in-grid reading, the geometric mean of the
/// variant's run FLOPs and its mean fitted loss).
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
    /// Bootstrap refits that gave a multiplier (0 for a paired reading).
    pub resamples: usize,
    /// With several seeds: the paired estimate of the log multiplier over seed pairs, each
    /// seed's variant fit read against the same seed's baseline fit (`low` and `high` are then
    /// its Student-t interval).
    #[serde(default)]
    pub paired: Option<strata_stats::Paired>,
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

/// Both multipliers of a variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Multipliers {
    /// In the grid: at the fitted loss of each of the variant's runs, the baseline's least
    /// compute with a model size inside the grid (2× slack) over the variant's; geometric mean
    /// over the runs.
    pub in_grid: Outcome,
    /// On the compute-optimal frontiers at the variant's middle compute (module docs); refused
    /// when an optimal model lies outside the grid, where the frontier is an extrapolation.
    pub frontier: Outcome,
}

/// The (N, D) ranges of the observations.
#[derive(Clone, Copy, Debug)]
struct Grid {
    n: (f64, f64),
    d: (f64, f64),
}

impl Grid {
    /// The ranges spanned by both groups' runs.
    fn of(groups: [&Group; 2]) -> Self {
        let obs = || groups.iter().flat_map(|g| g.observations.iter());
        Self {
            n: range(obs().map(|o| o.n)),
            d: range(obs().map(|o| o.d)),
        }
    }

    /// Why `(n, d)` is not within a factor of 2 of the grid, if it is not.
    fn outside(&self, n: f64, d: f64, what: &str) -> Option<String> {
        let inside = |v: f64, (lo, hi): (f64, f64)| v >= lo / 2.0 && v <= hi * 2.0;
        (!inside(n, self.n) || !inside(d, self.d)).then(|| {
            format!(
                "the {what} compute-optimal model (N = {n:.3e}, D = {d:.3e}) lies outside the \
                 sweep's grid (N {:.3e} to {:.3e}, D {:.3e} to {:.3e}), so the frontier there is \
                 an extrapolation; extend the grid",
                self.n.0, self.n.1, self.d.0, self.d.1
            )
        })
    }
}

/// The frontier multiplier of `variant` against `baseline` from the given fits, and the
/// variant's frontier loss.
fn frontier_point(
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

/// The least compute with which `law` reaches `loss` using a model size within `n_range`
/// (any data), scanned on a log grid of sizes; `None` when no size there reaches it.
pub fn in_grid_compute(
    law: &ScalingLaw,
    loss: f64,
    kappa: f64,
    n_range: (f64, f64),
) -> Option<f64> {
    log_sizes(n_range)
        .filter_map(|n| {
            let rest = loss - law.e - law.a / n.powf(law.alpha);
            (rest > 0.0).then(|| kappa * n * (law.b / rest).powf(1.0 / law.beta))
        })
        .min_by(f64::total_cmp)
}

/// The lowest loss `law` predicts for `compute` with a model size within `n_range` (the
/// frontier restricted to the sizes a sweep measured), scanned on a log grid of sizes.
pub fn in_grid_frontier(law: &ScalingLaw, compute: f64, kappa: f64, n_range: (f64, f64)) -> f64 {
    log_sizes(n_range)
        .map(|n| law.loss(n, compute / (kappa * n)))
        .fold(f64::INFINITY, f64::min)
}

/// 401 model sizes spread evenly in log space over `n_range`, ends included.
fn log_sizes(n_range: (f64, f64)) -> impl Iterator<Item = f64> {
    const STEPS: usize = 400;
    let (lo, hi) = (n_range.0.ln(), n_range.1.ln());
    (0..=STEPS).map(move |i| (lo + (hi - lo) * i as f64 / STEPS as f64).exp())
}

/// The in-grid multiplier over the variant's runs `at` (geometric mean, over the losses the
/// runs reached, of the baseline's least in-grid compute over the variant's), and the mean
/// loss.
fn in_grid_point(
    baseline: &Fit,
    variant: &Fit,
    kappas: (f64, f64),
    at: &[Observation],
    n_range: (f64, f64),
) -> std::result::Result<(f64, f64), String> {
    let (mut log_sum, mut loss_sum) = (0.0, 0.0);
    for o in at {
        let loss = variant.law.loss(o.n, o.d);
        let own =
            in_grid_compute(&variant.law, loss, kappas.1, n_range).unwrap_or(kappas.1 * o.n * o.d);
        let Some(c) = in_grid_compute(&baseline.law, loss, kappas.0, n_range) else {
            return Err(format!(
                "no baseline model from N = {:.3e} to {:.3e} reaches the variant's loss {loss:.4} \
                 (its run at N = {:.3e}, D = {:.3e}), whatever its data",
                n_range.0, n_range.1, o.n, o.d
            ));
        };
        log_sum += (c / own).ln();
        loss_sum += loss;
    }
    let count = at.len().max(1) as f64;
    Ok(((log_sum / count).exp(), loss_sum / count))
}

/// Resamples `group` with replacement and refits near its fit.
fn resample(group: &Group, rng: &mut rand_pcg::Pcg64) -> Option<Fit> {
    let n = group.observations.len();
    let picks: Vec<Observation> = (0..n)
        .map(|_| group.observations[rng.random_range(0..n)])
        .collect();
    fit(&picks, &starts_near(&group.fit.law)).ok()
}

/// A multiplier from its full-data estimate and bootstrap samples.
fn summarise(
    estimate: std::result::Result<(f64, f64), String>,
    mut samples: Vec<f64>,
    settings: &MultiplierSettings,
    compute: f64,
) -> Outcome {
    let (estimate, loss) = match estimate {
        Ok(p) => p,
        Err(why) => return Outcome::Refused(why),
    };
    samples.retain(|m| m.is_finite());
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
        paired: None,
    })
}

/// A multiplier with the variant's loss there, or why it is refused.
type Reading = std::result::Result<(f64, f64), String>;

/// The full-data readings of `variant` over `baseline`: in grid and on the frontier.
type Readings = (Reading, Reading);

/// The readings with the FLOPs-per-N·D factors and the N range the bootstrap repeats them in.
type PointReadings = (Readings, (f64, f64), (f64, f64));

/// The readings from the fits to all runs of both groups (module docs), with what the
/// bootstrap needs to repeat them on resampled fits.
fn point_readings(
    baseline: &Group,
    variant: &Group,
    settings: &MultiplierSettings,
) -> std::result::Result<PointReadings, String> {
    for group in [baseline, variant] {
        if let Some(why) = poor_fit(group, settings) {
            return Err(why);
        }
    }
    let kappas = (baseline.kappa(), variant.kappa());
    let compute = variant.reference_compute();
    let grid = Grid::of([baseline, variant]);
    let mut frontier = frontier_point(&baseline.fit, &variant.fit, kappas, compute);
    if let Ok((m, _)) = frontier {
        let (n_v, d_v) = variant.fit.law.optimal_split(compute, kappas.1);
        let (n_b, d_b) = baseline.fit.law.optimal_split(compute * m, kappas.0);
        let why = grid
            .outside(n_v, d_v, "variant's")
            .or_else(|| grid.outside(n_b, d_b, "baseline's"));
        if let Some(why) = why {
            frontier = Err(why);
        }
    }
    let n_range = (grid.n.0 / 2.0, grid.n.1 * 2.0);
    let in_grid = in_grid_point(
        &baseline.fit,
        &variant.fit,
        kappas,
        &variant.observations,
        n_range,
    );
    Ok(((in_grid, frontier), kappas, n_range))
}

/// The compute multipliers of `variant` over `baseline` (module docs), with bootstrap
/// intervals over runs: the reading of a sweep with one seed.
pub fn multiplier(baseline: &Group, variant: &Group, settings: &MultiplierSettings) -> Multipliers {
    let ((in_grid, frontier), kappas, n_range) = match point_readings(baseline, variant, settings) {
        Ok(r) => r,
        Err(why) => {
            return Multipliers {
                in_grid: Outcome::Refused(why.clone()),
                frontier: Outcome::Refused(why),
            };
        }
    };
    let compute = variant.reference_compute();
    let at = &variant.observations;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(settings.seed);
    let (mut in_grid_samples, mut frontier_samples) = (Vec::new(), Vec::new());
    for _ in 0..settings.bootstrap {
        let (Some(b), Some(v)) = (resample(baseline, &mut rng), resample(variant, &mut rng)) else {
            continue;
        };
        if let Ok((m, _)) = in_grid_point(&b, &v, kappas, at, n_range) {
            in_grid_samples.push(m);
        }
        if let Ok((m, _)) = frontier_point(&b, &v, kappas, compute) {
            frontier_samples.push(m);
        }
    }
    let geometric_compute = geometric_mean(variant.flops.iter().copied());
    Multipliers {
        in_grid: summarise(in_grid, in_grid_samples, settings, geometric_compute),
        frontier: summarise(frontier, frontier_samples, settings, compute),
    }
}

/// The compute multipliers of each seed's variant fit over the same seed's baseline fit
/// (`pairs`: seed, baseline group, variant group), aggregated over the seed pairs as logs with
/// [`strata_stats::aggregate`]: the estimate is the geometric mean over seeds and the interval
/// the paired Student-t one (the bootstrap over seeds is kept in [`Multiplier::paired`]).
pub fn paired_multiplier(
    pairs: &[(u64, Group, Group)],
    settings: &MultiplierSettings,
) -> Multipliers {
    let mut in_grid = Vec::new();
    let mut frontier = Vec::new();
    let mut computes = (Vec::new(), Vec::new());
    for (seed, baseline, variant) in pairs {
        let (g, f) = match point_readings(baseline, variant, settings) {
            Ok((readings, _, _)) => readings,
            Err(why) => (Err(why.clone()), Err(why)),
        };
        in_grid.push((*seed, g));
        frontier.push((*seed, f));
        computes
            .0
            .push(geometric_mean(variant.flops.iter().copied()));
        computes.1.push(variant.reference_compute());
    }
    let combine = |readings: Vec<(u64, Reading)>, compute: f64| {
        let loss = readings
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|p| p.1))
            .sum::<f64>()
            / readings.len().max(1) as f64;
        let logs = readings
            .into_iter()
            .map(|(s, r)| (s, r.map(|p| p.0.ln())))
            .collect();
        match strata_stats::aggregate(logs, settings.bootstrap, settings.seed) {
            Ok(p) => Outcome::Reported(Multiplier {
                estimate: p.mean.exp(),
                low: p.t_interval.0.exp(),
                high: p.t_interval.1.exp(),
                compute,
                loss,
                resamples: 0,
                paired: Some(p),
            }),
            Err(why) => Outcome::Refused(why),
        }
    };
    Multipliers {
        in_grid: combine(in_grid, geometric_mean(computes.0.into_iter())),
        frontier: combine(frontier, geometric_mean(computes.1.into_iter())),
    }
}
