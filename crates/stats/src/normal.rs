//! [`Normal`]: standard normal samples from a seeded generator, for simulating paired
//! designs (synthetic curves, coverage and power checks) reproducibly.

use rand::{Rng, SeedableRng};

/// Standard normal samples (Box-Muller, one of each pair) from a seeded generator.
pub struct Normal(rand_pcg::Pcg64);

impl Normal {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(rand_pcg::Pcg64::seed_from_u64(seed))
    }

    /// One sample.
    pub fn sample(&mut self) -> f64 {
        let u: f64 = self.0.random_range(f64::EPSILON..1.0);
        let v: f64 = self.0.random();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}
