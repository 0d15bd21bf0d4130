//! Loss against compute: "the compute at which a curve reaches loss L", the one
//! implementation of that question, and its inverse, "the loss a curve has at compute C".
//!
//! A curve is a set of measured points `(compute, loss)` (for a comparison: the final
//! validation loss of each budget's run). Between neighbouring points it is a straight line
//! in log compute. Nothing is extrapolated: a question outside the measured range gets a
//! [`OutOfRange`] saying where the range ends.

use serde::{Deserialize, Serialize};

/// A measured loss-against-compute curve, sorted by compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Points `(compute, loss)`, compute ascending and positive.
    points: Vec<(f64, f64)>,
}

/// Why a curve cannot answer a question without extrapolating.
#[derive(Clone, Debug, PartialEq)]
pub enum OutOfRange {
    /// The curve has no points.
    Empty,
    /// The loss asked for is higher than the curve's first point: the curve reached it
    /// before its smallest measured compute.
    AboveFirst {
        /// The loss asked for.
        loss: f64,
        /// The curve's first (smallest-compute) point.
        first: (f64, f64),
    },
    /// The curve never comes down to the loss asked for.
    NeverReached {
        /// The loss asked for.
        loss: f64,
        /// The curve's lowest loss.
        lowest: f64,
        /// The curve's largest measured compute.
        last_compute: f64,
    },
    /// The compute asked for lies outside the measured compute range.
    ComputeOutside {
        /// The compute asked for.
        compute: f64,
        /// The measured range.
        range: (f64, f64),
    },
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "the curve has no measured points"),
            Self::AboveFirst { loss, first } => write!(
                f,
                "loss {loss:.4} lies above the curve's first point ({:.4} at {:.3e} FLOPs): \
                 it is reached before the smallest measured compute (not extrapolated)",
                first.1, first.0
            ),
            Self::NeverReached {
                loss,
                lowest,
                last_compute,
            } => write!(
                f,
                "loss {loss:.4} is never reached within the measured compute (lowest \
                 {lowest:.4}, up to {last_compute:.3e} FLOPs; not extrapolated)"
            ),
            Self::ComputeOutside { compute, range } => write!(
                f,
                "{compute:.3e} FLOPs lies outside the measured range {:.3e} to {:.3e} (not \
                 extrapolated)",
                range.0, range.1
            ),
        }
    }
}

impl Curve {
    /// A curve through `points` (any order); points with non-positive or non-finite compute
    /// or a non-finite loss are dropped.
    pub fn new(points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut points: Vec<(f64, f64)> = points
            .into_iter()
            .filter(|&(c, l)| c > 0.0 && c.is_finite() && l.is_finite())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self { points }
    }

    /// The points, compute ascending.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The least compute at which the curve reaches `loss` (first crossing, interpolated
    /// linearly in log compute), or why it cannot be read off without extrapolating.
    pub fn compute_to_reach(&self, loss: f64) -> Result<f64, OutOfRange> {
        let &first = self.points.first().ok_or(OutOfRange::Empty)?;
        if loss > first.1 {
            return Err(OutOfRange::AboveFirst { loss, first });
        }
        if loss == first.1 {
            return Ok(first.0);
        }
        for w in self.points.windows(2) {
            let ((c0, l0), (c1, l1)) = (w[0], w[1]);
            if l0 > loss && l1 == loss {
                // A measured point is returned as measured (identical runs give exactly 1).
                return Ok(c1);
            }
            if l0 > loss && l1 < loss {
                let t = (l0 - loss) / (l0 - l1);
                return Ok((c0.ln() + t * (c1.ln() - c0.ln())).exp());
            }
        }
        Err(OutOfRange::NeverReached {
            loss,
            lowest: self
                .points
                .iter()
                .map(|p| p.1)
                .fold(f64::INFINITY, f64::min),
            last_compute: self.points[self.points.len() - 1].0,
        })
    }

    /// The curve's loss at `compute` (linear in log compute between the neighbouring
    /// points), or why it cannot be read off without extrapolating.
    pub fn loss_at(&self, compute: f64) -> Result<f64, OutOfRange> {
        let (&first, &last) = self
            .points
            .first()
            .zip(self.points.last())
            .ok_or(OutOfRange::Empty)?;
        // Rounding in FLOP counts of equal budgets must not count as extrapolation.
        let slack = 1e-9;
        if compute < first.0 * (1.0 - slack) || compute > last.0 * (1.0 + slack) {
            return Err(OutOfRange::ComputeOutside {
                compute,
                range: (first.0, last.0),
            });
        }
        let compute = compute.clamp(first.0, last.0);
        for w in self.points.windows(2) {
            let ((c0, l0), (c1, l1)) = (w[0], w[1]);
            if compute <= c1 {
                let t = if c1 > c0 {
                    (compute.ln() - c0.ln()) / (c1.ln() - c0.ln())
                } else {
                    0.0
                };
                return Ok(l0 + t * (l1 - l0));
            }
        }
        Ok(last.1)
    }
}
