//! strata-tensor: the layer every strata crate stands on.
//!
//! - [`TensorExt`], an extension trait on `tch::Tensor` with checked shape operations;
//! - [`DeviceChoice`] and [`cuda_available`], device selection that loads libtorch's CUDA
//!   library when a GPU is present;
//! - [`Precision`], the dtype policy (f32 or bf16 compute over f32 master weights);
//! - [`seeded`], reproducible draws from libtorch's process-global generator;
//! - [`Error`], the one error type.

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
