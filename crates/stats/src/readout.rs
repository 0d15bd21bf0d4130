//! Reading paired estimates out: per-seed values aggregated into a [`Paired`] estimate (or
//! the reason there is none), multipliers worded as ratios with both intervals, p-values,
//! power statements and the plain-words verdict on a variant.
//!
//! Multipliers are aggregated as logs: a [`Paired`] of log multipliers is worded as the
//! ratio `exp(mean)` with its exponentiated intervals.

use crate::paired::{Paired, paired, pairs_needed, resolvable};
use serde::{Deserialize, Serialize};

/// The paired estimate of `values` (one per seed, `resamples` bootstrap resamples from
/// `seed`), or the first failing seed's reason why there is none.
pub fn aggregate(
    values: Vec<(u64, Result<f64, String>)>,
    resamples: usize,
    seed: u64,
) -> Result<Paired, String> {
    let n = values.len();
    let failed: Vec<&(u64, Result<f64, String>)> =
        values.iter().filter(|(_, v)| v.is_err()).collect();
    if let Some((seed, Err(why))) = failed.first() {
        return Err(format!(
            "{} of {n} seeds give none (seed {seed}: {why})",
            failed.len()
        ));
    }
    let values: Vec<f64> = values.into_iter().filter_map(|(_, v)| v.ok()).collect();
    paired(&values, resamples, seed).ok_or_else(|| {
        format!(
            "{} seed pair(s): at least 2 are needed for an interval",
            values.len()
        )
    })
}

/// How small a multiplier a paired comparison resolves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// Seed pairs.
    pub n: usize,
    /// Spread of the paired log multipliers.
    pub sd_log: f64,
    /// The smallest multiplier resolved with 80% power at the 95% level.
    pub resolvable: f64,
    /// Seeds needed to resolve `effect` (`None`: more than 10000).
    pub seeds_for_effect: Option<usize>,
    /// The multiplier the seed count is for (e.g. 1.05).
    pub effect: f64,
}

/// The power of a comparison from the spread of its paired log multipliers.
pub fn power(estimate: &Paired, effect: f64) -> Power {
    Power {
        n: estimate.n,
        sd_log: estimate.sd,
        resolvable: resolvable(estimate.sd, estimate.n).exp(),
        seeds_for_effect: pairs_needed(estimate.sd, effect.ln(), 10_000),
        effect,
    }
}

/// The seed-count sentence of a power estimate.
pub fn power_sentence(p: &Power) -> String {
    let needed = p
        .seeds_for_effect
        .map_or_else(|| "more than 10000".to_owned(), |n| n.to_string());
    format!(
        "with {} seeds the smallest multiplier this comparison can resolve is {:.3}×; to \
         resolve {:.2}× you need {needed} seeds",
        p.n, p.resolvable, p.effect
    )
}

/// A paired log-multiplier estimate as `m× (t interval; bootstrap; p for > 1)` ratios.
pub fn describe_multiplier(estimate: &Paired) -> String {
    let e = |v: f64| v.exp();
    format!(
        "{:.3}× (95% t interval {:.3} to {:.3}; bootstrap {:.3} to {:.3}; {} for > 1)",
        e(estimate.mean),
        e(estimate.t_interval.0),
        e(estimate.t_interval.1),
        e(estimate.bootstrap_interval.0),
        e(estimate.bootstrap_interval.1),
        p_value(estimate.p_greater)
    )
}

/// A p-value in three decimals, `p < 0.001` below that (never `p = 0.000`).
pub fn p_value(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_owned()
    } else {
        format!("p = {p:.3}")
    }
}

/// The verdict on `variant` against `baseline` (`at`: where, e.g. "at 300 steps") from its
/// paired log multiplier: worth more, worse, or "no difference resolved" when either
/// interval includes 1; `power` adds its seed-count sentence.
pub fn multiplier_verdict(
    variant: &str,
    baseline: &str,
    at: &str,
    estimate: &Paired,
    power: Option<&Power>,
) -> String {
    let m = describe_multiplier(estimate);
    let power = power.map(power_sentence).unwrap_or_default();
    let tail = if power.is_empty() {
        String::new()
    } else {
        format!("; {power}")
    };
    if !estimate.excludes_zero() {
        format!(
            "no difference resolved between `{variant}` and `{baseline}` {at}: the multiplier \
             is {m}, and its interval includes 1{tail}"
        )
    } else if estimate.mean > 0.0 {
        format!(
            "`{variant}` is worth {m} the compute of `{baseline}` {at}: the baseline needs that \
             many times the compute to reach its loss{tail}"
        )
    } else {
        format!(
            "`{variant}` is worse than `{baseline}` {at}: it is worth only {m} of the \
             baseline's compute (the baseline reaches its loss with {:.3}× less compute){tail}",
            (-estimate.mean).exp()
        )
    }
}
