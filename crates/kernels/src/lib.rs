//! strata-kernels: the weighted sum across stacked layer outputs (DenseFormer's DWA).
//!
//! [`weighted_sum`] computes `Σ_j w_j · x_j` over a [`Selection`] of a stacked buffer
//! `[L, ...]` without copying the selected layers; [`LayerStack`] holds the outputs of one
//! forward pass. Only the reference implementation exists so far.

mod layer_stack;
mod selection;
mod weighted_sum;

pub use layer_stack::LayerStack;
pub use selection::Selection;
pub use weighted_sum::{Implementation, weighted_sum, weighted_sum_list};
