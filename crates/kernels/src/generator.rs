//! [`Generator`]: a random-number generator of its own, passed to a model when it is built, so
//! that its dropout draws neither read libtorch's process-wide default generator nor wait for
//! the lock that guards it ([`strata_tensor::seeded`]). Data-parallel workers each own one and
//! draw at the same time.
//!
//! With the `cpp` feature (the default) it is libtorch's CPU generator (`at::Generator`,
//! `csrc/generator.cpp`) and draws CPU tensors. Without it, each draw seeds the default
//! generator inside [`strata_tensor::seeded`] from the generator's seed and its draw count:
//! still reproducible, but serialised like any seeded section, and disturbed by draws from the
//! default generator that other threads make outside seeded sections.

use strata_tensor::{Error, Result};
use tch::{Device, Tensor};

#[cfg(feature = "cpp")]
mod native {
    use std::ffi::{CStr, c_char, c_int, c_void};
    use torch_sys::C_tensor;

    unsafe extern "C" {
        pub fn strata_generator_last_error() -> *const c_char;
        pub fn strata_generator_new(seed: u64) -> *mut c_void;
        pub fn strata_generator_free(generator: *mut c_void);
        pub fn strata_generator_seed(generator: *mut c_void, seed: u64) -> c_int;
        pub fn strata_generator_keep_mask(
            generator: *mut c_void,
            like: *const C_tensor,
            keep: f64,
        ) -> *mut C_tensor;
    }

    /// The error of the last failed call of `what` on this thread, with the shim's message.
    pub fn failed(what: &str) -> strata_tensor::Error {
        // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
        let message = unsafe { CStr::from_ptr(strata_generator_last_error()) };
        strata_tensor::Error::Invalid(format!("{what}: {}", message.to_string_lossy()))
    }
}

/// A random-number generator owned by one model (see the module documentation).
#[derive(Debug)]
pub struct Generator {
    #[cfg(feature = "cpp")]
    handle: std::ptr::NonNull<std::ffi::c_void>,
    /// Without the C++ shim: (seed, draws since seeding).
    #[cfg(not(feature = "cpp"))]
    state: std::sync::Mutex<(u64, u64)>,
}

// SAFETY: the generator is owned by this value alone, and libtorch guards every use of it
// (seeding and each draw) with the generator's own mutex.
#[cfg(feature = "cpp")]
unsafe impl Send for Generator {}
// SAFETY: as for `Send`: concurrent calls are serialised by the generator's mutex.
#[cfg(feature = "cpp")]
unsafe impl Sync for Generator {}

impl Generator {
    /// A generator whose stream starts from `seed`.
    pub fn new(seed: u64) -> Result<Self> {
        #[cfg(feature = "cpp")]
        {
            // SAFETY: plain call; a null result is reported below.
            let ptr = unsafe { native::strata_generator_new(seed) };
            let handle =
                std::ptr::NonNull::new(ptr).ok_or_else(|| native::failed("random generator"))?;
            Ok(Self { handle })
        }
        #[cfg(not(feature = "cpp"))]
        Ok(Self {
            state: std::sync::Mutex::new((seed, 0)),
        })
    }

    /// Restarts the stream from `seed`.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        #[cfg(feature = "cpp")]
        {
            // SAFETY: the handle is live until drop; the shim locks the generator.
            if unsafe { native::strata_generator_seed(self.handle.as_ptr(), seed) } != 0 {
                return Err(native::failed("random generator"));
            }
            Ok(())
        }
        #[cfg(not(feature = "cpp"))]
        {
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (seed, 0);
            Ok(())
        }
    }

    /// Whether this generator draws tensors on `device` (the CPU only; elsewhere dropout
    /// draws from libtorch's default generator of the device).
    pub fn draws_on(device: Device) -> bool {
        device == Device::Cpu
    }

    /// Inverted dropout's mask for `like`: its shape, dtype and device, without gradient
    /// history, each element `1/keep` with probability `keep` and 0 otherwise.
    pub fn keep_mask(&self, like: &Tensor, keep: f64) -> Result<Tensor> {
        if !(keep > 0.0 && keep <= 1.0) {
            return Err(Error::Invalid(format!(
                "dropout keep probability {keep}: expected a number in (0, 1]"
            )));
        }
        if !Self::draws_on(like.device()) {
            return Err(Error::Device(format!(
                "strata's random generator draws CPU tensors, not {:?}",
                like.device()
            )));
        }
        #[cfg(feature = "cpp")]
        {
            // SAFETY: the handle and `like` are live for the call; the shim locks the generator.
            let ptr = unsafe {
                native::strata_generator_keep_mask(self.handle.as_ptr(), like.as_ptr(), keep)
            };
            if ptr.is_null() {
                return Err(native::failed("dropout mask"));
            }
            // SAFETY: a non-null result is a freshly allocated `at::Tensor*` that we now own.
            Ok(unsafe { Tensor::from_ptr(ptr) })
        }
        #[cfg(not(feature = "cpp"))]
        {
            let seed = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.1 += 1;
                state.0 ^ state.1.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            };
            strata_tensor::seeded(seed, || -> Result<Tensor> {
                let mut mask = Tensor::f_empty(like.size(), (like.kind(), like.device()))?;
                let _ = mask.f_bernoulli_float_(keep)?;
                Ok(mask.f_div_scalar(keep)?)
            })
        }
    }
}

#[cfg(feature = "cpp")]
impl Drop for Generator {
    fn drop(&mut self) {
        // SAFETY: the handle came from `strata_generator_new` and is freed once, here.
        unsafe { native::strata_generator_free(self.handle.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn like() -> Tensor {
        Tensor::zeros([64, 257], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn masks_are_inverted_dropout_and_follow_the_seed() {
        let generator = Generator::new(11).unwrap();
        let a = generator.keep_mask(&like(), 0.8).unwrap();
        let b = generator.keep_mask(&like(), 0.8).unwrap();
        assert!(!a.equal(&b), "the stream moves on");
        generator.reseed(11).unwrap();
        assert!(generator.keep_mask(&like(), 0.8).unwrap().equal(&a));
        let other = Generator::new(12).unwrap();
        assert!(!other.keep_mask(&like(), 0.8).unwrap().equal(&a));
        // Every element is 0 or 1/keep, and the kept fraction is keep within 5 binomial
        // standard deviations (n = 16448).
        let values = Vec::<f32>::try_from(a.flatten(0, -1)).unwrap();
        let kept = values.iter().filter(|&&v| v != 0.0).count() as f64;
        assert!(values.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        let n = values.len() as f64;
        let sd = (n * 0.8 * 0.2).sqrt();
        assert!((kept - 0.8 * n).abs() < 5.0 * sd, "{kept} of {n}");
        assert!(generator.keep_mask(&like(), 0.0).is_err());
        assert!(generator.keep_mask(&like(), 1.5).is_err());
    }

    #[test]
    fn draws_leave_the_default_generator_alone_and_do_not_interfere_across_threads() {
        let reference: Vec<Tensor> = {
            let generator = Generator::new(5).unwrap();
            (0..20)
                .map(|_| generator.keep_mask(&like(), 0.5).unwrap())
                .collect()
        };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let generator = Generator::new(5).unwrap();
                    (0..20)
                        .map(|_| {
                            // Another user of the default generator in between (without the
                            // C++ generator such unlocked draws would disturb the stream).
                            #[cfg(feature = "cpp")]
                            let _ = Tensor::randn([100], (Kind::Float, Device::Cpu));
                            generator.keep_mask(&like(), 0.5).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            for (mask, expected) in thread.join().unwrap().iter().zip(&reference) {
                assert!(mask.equal(expected));
            }
        }
        #[cfg(feature = "cpp")]
        strata_tensor::seeded(3, || {
            let before = Tensor::randn([8], (Kind::Float, Device::Cpu));
            tch::manual_seed(3);
            let _ = Generator::new(9).unwrap().keep_mask(&like(), 0.5).unwrap();
            let after = Tensor::randn([8], (Kind::Float, Device::Cpu));
            assert!(before.equal(&after), "the default generator did not move");
        });
    }
}
