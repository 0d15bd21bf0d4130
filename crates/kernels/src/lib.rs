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
//!
//! The C++ parts (the layer stack's autograd functions, autocast, memory statistics, process
//! groups) sit behind the default `cpp` feature. Without it every weighted sum and layer stack
//! still works, differentiated by libtorch's own ops, and the rest answers with an error that
//! says the feature is off; [`CPP`] tells which build this is.

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

pub mod autocast;
mod cpu;
pub mod device_memory;
#[cfg(feature = "cpp")]
mod ffi;
#[cfg(not(feature = "cpp"))]
#[path = "ffi_without_cpp.rs"]
mod ffi;
pub mod generator;
mod grad_mode;
mod layer_stack;
pub mod process_group;
mod selection;
mod weighted_sum;
#[cfg(not(feature = "cpp"))]
mod without_cpp;

pub use generator::Generator;
pub use grad_mode::grad_mode_enabled;

/// True when this build has strata's C++ (the `cpp` feature).
pub const CPP: bool = cfg!(feature = "cpp");
pub use layer_stack::LayerStack;
pub use selection::Selection;
pub use weighted_sum::{Implementation, weighted_sum, weighted_sum_into, weighted_sum_list};
