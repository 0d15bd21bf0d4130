//! Learning-rate schedules: linear warmup, then cosine decay to a floor (nanoGPT's), or
//! warmup-stable-decay (WSD: a constant rate, then a short decay at the end of the run).

use serde::{Deserialize, Serialize};

/// Which schedule a run uses (`train.schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Warmup, then cosine from the peak rate to `min_lr` (nanoGPT's).
    #[default]
    Cosine,
    /// Warmup, a constant peak rate, then a decay over the last `decay_fraction` of the run.
    Wsd,
}

/// How the decay phase of a WSD schedule falls from the peak rate to `min_lr`
/// (`train.decay_shape`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecayShape {
    /// Falls linearly in the decay progress `p`: `1 - p`.
    #[default]
    #[serde(rename = "linear")]
    Linear,
    /// Falls as `1 - sqrt(p)` (Hägele et al. 2024): fast at first, slow at the end.
    #[serde(rename = "1-sqrt")]
    OneMinusSqrt,
}

/// The warmup rate `lr·(s+1)/(w+1)` for a step inside the warmup, `None` after it; shared by
/// every schedule.
fn warmup(lr: f64, warmup_iters: u64, step: u64) -> Option<f64> {
    (step < warmup_iters).then(|| lr * (step + 1) as f64 / (warmup_iters + 1) as f64)
}

/// nanoGPT's schedule: `lr·(s+1)/(w+1)` for `s < w`, cosine from `lr` to `min_lr` until
/// `decay_iters`, then `min_lr`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Floor reached at `decay_iters`.
    pub min_lr: f64,
    /// Warmup steps.
    pub warmup_iters: u64,
    /// Step at which the cosine reaches `min_lr`.
    pub decay_iters: u64,
}

impl CosineSchedule {
    /// Learning rate for optimizer step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if let Some(lr) = warmup(self.lr, self.warmup_iters, step) {
            return lr;
        }
        if step > self.decay_iters || self.decay_iters <= self.warmup_iters {
            return self.min_lr;
        }
        let ratio =
            (step - self.warmup_iters) as f64 / (self.decay_iters - self.warmup_iters) as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        self.min_lr + coeff * (self.lr - self.min_lr)
    }
}

/// Steps a WSD run of `max_iters` steps spends decaying: `round(decay_fraction · max_iters)`,
/// at least 1 (for a run of at least one step).
pub fn wsd_decay_steps(max_iters: u64, decay_fraction: f64) -> u64 {
    let steps = (decay_fraction * max_iters as f64).round() as u64;
    steps.max(1).min(max_iters)
}

/// The first step of the decay phase of a WSD run of `max_iters` steps. It never decreases
/// when `max_iters` grows, so a longer run is still in its stable phase there.
pub fn wsd_decay_start(max_iters: u64, decay_fraction: f64) -> u64 {
    max_iters - wsd_decay_steps(max_iters, decay_fraction)
}

/// Warmup-stable-decay: warmup as [`CosineSchedule`], then `lr` until `decay_start`, then a
/// decay of `shape` that would reach `min_lr` at `max_iters`. Up to `decay_start` the rate
/// does not depend on `max_iters`, which is what makes cooldown branches exact.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WsdSchedule {
    /// Peak (stable) learning rate.
    pub lr: f64,
    /// Floor reached at `max_iters`.
    pub min_lr: f64,
    /// Warmup steps.
    pub warmup_iters: u64,
    /// First step of the decay ([`wsd_decay_start`]).
    pub decay_start: u64,
    /// Step at which the decay reaches `min_lr` (the run's length).
    pub max_iters: u64,
    /// Shape of the decay.
    pub shape: DecayShape,
}

impl WsdSchedule {
    /// Learning rate for optimizer step `step` (0-based): with decay progress
    /// `p = (step - decay_start) / (max_iters - decay_start)`, `min_lr + (lr - min_lr)·f(p)`
    /// where `f(p) = 1 - p` (linear) or `1 - sqrt(p)`.
    pub fn at(&self, step: u64) -> f64 {
        if let Some(lr) = warmup(self.lr, self.warmup_iters, step) {
            return lr;
        }
        if step < self.decay_start {
            return self.lr;
        }
        if step >= self.max_iters {
            return self.min_lr;
        }
        let p = (step - self.decay_start) as f64 / (self.max_iters - self.decay_start) as f64;
        let remaining = match self.shape {
            DecayShape::Linear => 1.0 - p,
            DecayShape::OneMinusSqrt => 1.0 - p.sqrt(),
        };
        self.min_lr + remaining * (self.lr - self.min_lr)
    }
}

/// The schedule a run follows (built by `TrainConfig::schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// Warmup and cosine.
    Cosine(CosineSchedule),
    /// Warmup, stable, decay.
    Wsd(WsdSchedule),
}

impl Schedule {
    /// Learning rate for optimizer step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        match self {
            Schedule::Cosine(s) => s.at(step),
            Schedule::Wsd(s) => s.at(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_and_floor_match_closed_forms() {
        let s = CosineSchedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_iters: 100,
            decay_iters: 2000,
        };
        assert_eq!(s.at(0), 1e-3 / 101.0);
        assert_eq!(s.at(99), 1e-3 * 100.0 / 101.0);
        assert_eq!(s.at(100), 1e-3);
        assert!(
            (s.at(1050) - 5.5e-4).abs() < 1e-12,
            "midpoint is the mean of lr and min_lr"
        );
        assert!((s.at(2000) - 1e-4).abs() < 1e-15);
        assert_eq!(s.at(5000), 1e-4);
        let mut last = f64::INFINITY;
        for step in 100..=2000 {
            assert!(s.at(step) <= last);
            last = s.at(step);
        }
    }

    fn wsd(shape: DecayShape) -> WsdSchedule {
        WsdSchedule {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_iters: 100,
            decay_start: wsd_decay_start(2000, 0.2),
            max_iters: 2000,
            shape,
        }
    }

    #[test]
    fn decay_start_is_the_last_fraction_and_never_moves_back() {
        assert_eq!(wsd_decay_start(2000, 0.2), 1600);
        assert_eq!(wsd_decay_start(10, 0.25), 7, "round(2.5) = 3 decay steps");
        assert_eq!(wsd_decay_start(3, 0.1), 2, "at least one decay step");
        assert_eq!(wsd_decay_start(10, 1.0), 0);
        assert_eq!(wsd_decay_start(10, 0.7), 3, "0.7·10 is not rounded up to 8");
        for fraction in [0.05, 0.1, 0.2, 0.33, 0.5, 0.9, 1.0] {
            let starts: Vec<u64> = (1..500).map(|m| wsd_decay_start(m, fraction)).collect();
            assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{fraction}");
        }
    }

    #[test]
    fn wsd_linear_matches_its_closed_form() {
        let s = wsd(DecayShape::Linear);
        assert_eq!(s.at(0), 1e-3 / 101.0, "warmup as cosine's");
        assert_eq!(s.at(99), 1e-3 * 100.0 / 101.0);
        for step in [100, 101, 1000, 1599] {
            assert_eq!(s.at(step), 1e-3, "stable at step {step}");
        }
        assert_eq!(s.at(1600), 1e-3, "the decay starts at the peak");
        for step in 1600..2000 {
            let p = (step - 1600) as f64 / 400.0;
            let expected = 1e-4 + (1e-3 - 1e-4) * (1.0 - p);
            assert!((s.at(step) - expected).abs() < 1e-18, "step {step}");
        }
        assert!((s.at(1800) - 5.5e-4).abs() < 1e-15, "halfway is the mean");
        assert_eq!(s.at(2000), 1e-4);
        assert_eq!(s.at(9000), 1e-4);
    }

    #[test]
    fn wsd_one_minus_sqrt_matches_its_closed_form() {
        let s = wsd(DecayShape::OneMinusSqrt);
        assert_eq!(s.at(1599), 1e-3);
        // p = 1/4 leaves 1 - 1/2 of the range; p = 9/16 leaves 1/4 of it.
        assert!((s.at(1700) - (1e-4 + 0.5 * 9e-4)).abs() < 1e-15);
        assert!((s.at(1825) - (1e-4 + 0.25 * 9e-4)).abs() < 1e-15);
        let linear = wsd(DecayShape::Linear);
        for step in 1601..2000 {
            assert!(s.at(step) < linear.at(step), "1-sqrt lies below linear");
            assert!(s.at(step) < s.at(step - 1), "and falls monotonically");
        }
        assert_eq!(s.at(2000), 1e-4);
    }

    #[test]
    fn wsd_before_the_decay_does_not_depend_on_the_run_length() {
        let long = wsd(DecayShape::OneMinusSqrt);
        let short = WsdSchedule {
            decay_start: wsd_decay_start(1000, 0.2),
            max_iters: 1000,
            ..long
        };
        for step in 0..short.decay_start {
            assert_eq!(long.at(step).to_bits(), short.at(step).to_bits(), "{step}");
        }
    }
}
