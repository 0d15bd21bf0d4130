//! strata-kernels: the weighted sum across stacked layer outputs (DenseFormer's DWA).
//!
//! [`weighted_sum`] computes `Σ_j w_j · x_j` over a [`Selection`] of a stacked buffer
//! `[L, ...]` without copying the selected layers; [`LayerStack`] holds the outputs of one
//! forward pass, fused into one buffer with its own autograd while training.
//!
//! Implementations ([`Implementation`]): the reference loop (the oracle), a fused matrix
//! product (differentiable, used in training), a rayon CPU kernel and a single-GEMV CUDA
//! path for evaluation; `Auto` picks one per call. [`device_memory`] reads the GPU allocator's
//! peak memory through the same C++ shim, and [`process_group`] joins a c10d process group
//! (libtorch's Gloo backend) for multi-process training.

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod autocast;
mod cpu;
pub mod device_memory;
mod ffi;
mod layer_stack;
pub mod process_group;
mod selection;
mod weighted_sum;

pub use ffi::grad_mode_enabled;
pub use layer_stack::LayerStack;
pub use selection::Selection;
pub use weighted_sum::{
    IMPLEMENTATION_ENV, Implementation, pinned_implementation, weighted_sum, weighted_sum_into,
    weighted_sum_list, with_implementation,
};
