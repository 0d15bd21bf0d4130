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
