//! strata-tensor: the layer every strata crate stands on.
//!
//! - [`TensorExt`], an extension trait on `tch::Tensor` with shape checks and comparisons;
//! - [`DeviceChoice`] and [`cuda_available`], device selection that loads libtorch's CUDA
//!   library when a GPU is present;
//! - [`Precision`], the dtype policy (f32 or bf16 compute over f32 master weights);
//! - [`seeded`], reproducible draws from libtorch's process-global generator;
//! - [`Error`], the one error type.

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

mod device;
mod error;
mod ext;
mod precision;
mod rng;

pub use device::{DeviceChoice, cuda_available, cuda_status, set_cpu_threads};
pub use error::{Error, Result};
pub use ext::TensorExt;
pub use precision::Precision;
pub use rng::seeded;
pub use tch;
