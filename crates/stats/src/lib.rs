//! strata-stats: the statistics behind every multiplier strata prints, without libtorch.
//!
//! [`curve`] reads "the compute at which a loss-against-compute curve reaches loss L"
//! (and its inverse) without ever extrapolating; [`paired`] turns one value per seed pair
//! into a mean with Student-t and bootstrap intervals, a one-sided p-value and a power
//! statement; [`readout`] aggregates per-seed readings and words them (multipliers as
//! ratios, p-values, verdicts that refuse to call a winner inside the noise). Comparisons,
//! sweeps and studies all read their multipliers through these, so every interval strata
//! prints is made the same way.

// Library code returns errors and never panics on its own (see strata-train's lib.rs).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod curve;
pub mod normal;
pub mod paired;
pub mod readout;

pub use curve::{Curve, OutOfRange};
pub use normal::Normal;
pub use paired::{Paired, paired, pairs_needed, resolvable};
pub use readout::{
    Power, aggregate, describe_multiplier, multiplier_verdict, p_value, power, power_sentence,
};

/// The distinct values of `values`, ascending (e.g. the seeds of a study's records).
pub fn distinct_sorted<T: Ord>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    values
        .into_iter()
        .collect::<std::collections::BTreeSet<T>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn distinct_sorted_drops_repeats_and_sorts() {
        assert_eq!(super::distinct_sorted([3, 1, 3, 2, 1]), vec![1, 2, 3]);
        assert!(super::distinct_sorted(Vec::<u64>::new()).is_empty());
    }
}
