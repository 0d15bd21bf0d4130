//! The parametric scaling law `L(N, D) = E + A/N^α + B/D^β` (Hoffmann et al. 2022), fitted
//! with a Huber loss on log loss from a grid of starting points (their approach 3), and the
//! compute-optimal frontier `L(C)` it implies.

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use serde::{Deserialize, Serialize};
use strata_tensor::{Error, Result};

/// One observation: parameters `n`, training tokens `d`, final loss `loss`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Model size N (non-embedding parameters).
    pub n: f64,
    /// Training tokens D.
    pub d: f64,
    /// Loss reached.
    pub loss: f64,
}

/// A fitted law `L(N, D) = E + A/N^α + B/D^β`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingLaw {
    /// Irreducible loss E.
    pub e: f64,
    /// Size coefficient A.
    pub a: f64,
    /// Size exponent α.
    pub alpha: f64,
    /// Data coefficient B.
    pub b: f64,
    /// Data exponent β.
    pub beta: f64,
}

impl ScalingLaw {
    /// The predicted loss.
    pub fn loss(&self, n: f64, d: f64) -> f64 {
        self.e + self.a / n.powf(self.alpha) + self.b / d.powf(self.beta)
    }

    /// The compute-optimal split of `compute = kappa · N · D`: `(N, D)` minimising the loss.
    pub fn optimal_split(&self, compute: f64, kappa: f64) -> (f64, f64) {
        let nd = compute / kappa;
        let g = (self.alpha * self.a / (self.beta * self.b)).powf(1.0 / (self.alpha + self.beta));
        let n = g * nd.powf(self.beta / (self.alpha + self.beta));
        (n, nd / n)
    }

    /// The loss on the compute-optimal frontier at `compute`.
    pub fn frontier(&self, compute: f64, kappa: f64) -> f64 {
        let (n, d) = self.optimal_split(compute, kappa);
        self.loss(n, d)
    }

    /// The compute at which the frontier reaches `loss`, searched within `[lo, hi]`; `None`
    /// when the frontier does not reach it there (at or below E it never does).
    pub fn compute_for(&self, loss: f64, kappa: f64, lo: f64, hi: f64) -> Option<f64> {
        if loss <= self.e || self.frontier(hi, kappa) > loss || self.frontier(lo, kappa) < loss {
            return None;
        }
        let (mut a, mut b) = (lo.ln(), hi.ln());
        for _ in 0..200 {
            let mid = 0.5 * (a + b);
            if self.frontier(mid.exp(), kappa) > loss {
                a = mid;
            } else {
                b = mid;
            }
        }
        Some((0.5 * (a + b)).exp())
    }

    /// Parameters in the optimiser's coordinates `[ln A, ln B, ln E, α, β]`.
    fn to_theta(self) -> Vec<f64> {
        vec![self.a.ln(), self.b.ln(), self.e.ln(), self.alpha, self.beta]
    }

    /// The law of optimiser coordinates.
    fn from_theta(t: &[f64]) -> Self {
        Self {
            a: t[0].exp(),
            b: t[1].exp(),
            e: t[2].exp(),
            alpha: t[3],
            beta: t[4],
        }
    }
}

/// How well a law fits its observations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitQuality {
    /// Root mean square residual of log loss.
    pub rmse_log: f64,
    /// Coefficient of determination of log loss.
    pub r2_log: f64,
    /// Observations fitted.
    pub points: usize,
}

/// A fitted law and its quality.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// The law.
    pub law: ScalingLaw,
    /// Its quality.
    pub quality: FitQuality,
}

/// Huber's δ on log loss (Hoffmann et al. use 1e-3).
pub const HUBER_DELTA: f64 = 1e-3;

/// The fitting objective: Σ Huber(log L̂ − log L) with `log L̂` as a log-sum-exp.
struct Objective<'a> {
    points: &'a [(f64, f64, f64)],
}

impl Objective<'_> {
    /// Cost and gradient at `t`.
    fn evaluate(&self, t: &[f64]) -> (f64, Vec<f64>) {
        let (mut cost, mut grad) = (0.0, vec![0.0; 5]);
        for &(ln_n, ln_d, ln_l) in self.points {
            let terms = [t[0] - t[3] * ln_n, t[1] - t[4] * ln_d, t[2]];
            let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = terms.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            let lse = max + sum.ln();
            let r = lse - ln_l;
            let (h, dh) = if r.abs() <= HUBER_DELTA {
                (0.5 * r * r, r)
            } else {
                (
                    HUBER_DELTA * (r.abs() - 0.5 * HUBER_DELTA),
                    HUBER_DELTA * r.signum(),
                )
            };
            cost += h;
            let w: Vec<f64> = exps.iter().map(|e| e / sum).collect();
            grad[0] += dh * w[0];
            grad[1] += dh * w[1];
            grad[2] += dh * w[2];
            grad[3] -= dh * w[0] * ln_n;
            grad[4] -= dh * w[1] * ln_d;
        }
        (cost, grad)
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, t: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.evaluate(t).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, t: &Vec<f64>) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(t).1)
    }
}

/// The default grid of starting points `[ln A, ln B, ln E, α, β]`.
pub fn default_starts() -> Vec<Vec<f64>> {
    let mut starts = Vec::new();
    for a in [0.0, 5.0, 10.0, 15.0] {
        for b in [0.0, 5.0, 10.0, 15.0] {
            for e in [-1.0, 0.0, 0.5] {
                for alpha in [0.2, 0.5, 1.0] {
                    for beta in [0.2, 0.5, 1.0] {
                        starts.push(vec![a, b, e, alpha, beta]);
                    }
                }
            }
        }
    }
    starts
}

/// Runs L-BFGS from one start; `None` when the optimiser fails.
fn minimise(objective: &Objective, start: Vec<f64>) -> Option<(f64, Vec<f64>)> {
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(1e-12)
        .ok()?
        .with_tolerance_cost(1e-14)
        .ok()?;
    let run = Executor::new(
        Objective {
            points: objective.points,
        },
        solver,
    )
    .configure(|state| state.param(start).max_iters(200))
    .run()
    .ok()?;
    let state = run.state();
    let param = state.get_best_param()?.clone();
    let cost = state.get_best_cost();
    cost.is_finite().then_some((cost, param))
}

/// Fits the law to `observations` from each of `starts`, keeping the best; the exponents
/// must come out positive. Needs at least 5 observations.
pub fn fit(observations: &[Observation], starts: &[Vec<f64>]) -> Result<Fit> {
    if observations.len() < 5 {
        return Err(Error::Invalid(format!(
            "scaling-law fit: expected at least 5 runs for 5 parameters, found {}",
            observations.len()
        )));
    }
    if let Some(bad) = observations
        .iter()
        .find(|o| !(o.n > 0.0 && o.d > 0.0 && o.loss > 0.0 && o.loss.is_finite()))
    {
        return Err(Error::Invalid(format!(
            "scaling-law fit: expected positive N, D and finite positive loss, found {bad:?}"
        )));
    }
    let points: Vec<(f64, f64, f64)> = observations
        .iter()
        .map(|o| (o.n.ln(), o.d.ln(), o.loss.ln()))
        .collect();
    let objective = Objective { points: &points };
    let best = starts
        .iter()
        .filter_map(|s| minimise(&objective, s.clone()))
        .filter(|(_, t)| t[3] > 0.0 && t[4] > 0.0 && t.iter().all(|v| v.is_finite()))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let Some((_, theta)) = best else {
        return Err(Error::Invalid(
            "scaling-law fit: no start converged to positive exponents".to_owned(),
        ));
    };
    let law = ScalingLaw::from_theta(&theta);
    Ok(Fit {
        law,
        quality: quality(&law, observations),
    })
}

/// Starting points for refits near `fit` (for the bootstrap): the fit itself and a few
/// perturbations of its exponents.
pub fn starts_near(fit: &ScalingLaw) -> Vec<Vec<f64>> {
    let t = fit.to_theta();
    let mut starts = vec![t.clone()];
    for (da, db) in [(0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.1)] {
        let mut s = t.clone();
        s[3] = (s[3] + da).max(0.05);
        s[4] = (s[4] + db).max(0.05);
        starts.push(s);
    }
    starts
}

/// RMSE and R² of log loss.
pub fn quality(law: &ScalingLaw, observations: &[Observation]) -> FitQuality {
    let logs: Vec<f64> = observations.iter().map(|o| o.loss.ln()).collect();
    let mean = logs.iter().sum::<f64>() / logs.len().max(1) as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (o, y) in observations.iter().zip(&logs) {
        ss_res += (law.loss(o.n, o.d).ln() - y).powi(2);
        ss_tot += (y - mean).powi(2);
    }
    FitQuality {
        rmse_log: (ss_res / logs.len().max(1) as f64).sqrt(),
        r2_log: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            0.0
        },
        points: observations.len(),
    }
}
