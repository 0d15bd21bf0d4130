//! [`Autocast`]: a region in which libtorch's autocast runs the ops on its lower-precision list
//! (matrix products, linear layers, attention) in bf16 while parameters stay f32, as
//! `torch.autocast(device_type, dtype=torch.bfloat16)` does. tch exposes only CUDA's autocast;
//! this reaches any device type through the C++ shim (`csrc/autocast.cpp`).
//!
//! The region belongs to the thread that entered it (libtorch keeps autocast state per thread).

use std::ffi::c_int;
use strata_tensor::{Error, Result};
use tch::Device;

#[cfg(feature = "cpp")]
unsafe extern "C" {
    fn strata_autocast_enter(cuda: c_int, previous: *mut i64) -> c_int;
    fn strata_autocast_exit(cuda: c_int, previous: *const i64) -> c_int;
}
#[cfg(not(feature = "cpp"))]
use crate::without_cpp::{strata_autocast_enter, strata_autocast_exit};

/// An autocast region on the current thread, left (and the previous state restored) on drop.
pub struct Autocast {
    cuda: c_int,
    previous: [i64; 2],
    /// Autocast state is per thread: the guard must be dropped where it was made.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Autocast {
    /// Enters bf16 autocast for `device`'s type (CPU, or CUDA) on this thread.
    pub fn bf16(device: Device) -> Result<Self> {
        if !crate::CPP {
            return Err(Error::Device(
                "bf16 autocast needs strata-kernels' `cpp` feature, which this build lacks"
                    .to_owned(),
            ));
        }
        let cuda = c_int::from(device.is_cuda());
        let mut previous = [0i64; 2];
        // SAFETY: `previous` has room for the two values the shim writes.
        if unsafe { strata_autocast_enter(cuda, previous.as_mut_ptr()) } != 0 {
            return Err(Error::Device(format!(
                "libtorch's autocast cannot be enabled on {device:?}"
            )));
        }
        Ok(Self {
            cuda,
            previous,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: restores the state `bf16` saved, on the thread that saved it.
        if unsafe { strata_autocast_exit(self.cuda, self.previous.as_ptr()) } != 0 {
            tracing::warn!("could not leave libtorch's autocast region");
        }
    }
}
