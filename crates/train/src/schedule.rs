//! Learning-rate schedule: linear warmup, then cosine decay to a floor.

use serde::{Deserialize, Serialize};

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
        if step < self.warmup_iters {
            return self.lr * (step + 1) as f64 / (self.warmup_iters + 1) as f64;
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
}
