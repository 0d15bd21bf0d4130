//! Device selection (`cpu`, `cuda`, `auto`) that really makes CUDA usable.
//!
//! The linker drops `libtorch_cuda.so` from binaries that never name one of its symbols, so
//! libtorch reports no CUDA even on a GPU machine. [`cuda_available`] loads that library
//! (once, before libtorch is first asked about CUDA) when the machine shows an NVIDIA driver,
//! and leaves CPU-only machines without the cost of mapping the CUDA libraries.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr, sync::OnceLock};
use tch::Device;

/// Where a run places its tensors, as written in configs and on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; an error when none is usable.
    Cuda,
    /// CUDA when usable, else the CPU.
    #[default]
    Auto,
}

impl DeviceChoice {
    /// Resolves the choice to a concrete libtorch device.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda if cuda_available() => Ok(Device::Cuda(0)),
            Self::Cuda => Err(Error::Device(format!(
                "`cuda` was requested but no usable CUDA device was found ({}); use `cpu` or `auto`",
                cuda_status()
            ))),
            Self::Auto if cuda_available() => Ok(Device::Cuda(0)),
            Self::Auto => Ok(Device::Cpu),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(Error::Invalid(format!(
                "unknown device `{other}`: expected one of cpu, cuda, auto"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
    }
}

/// Outcome of the one attempt to wire CUDA into libtorch.
static CUDA_STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// True when libtorch can run on a CUDA device; loads `libtorch_cuda.so` on first call.
pub fn cuda_available() -> bool {
    CUDA_STATE.get_or_init(load_torch_cuda).is_ok() && tch::Cuda::is_available()
}

/// A human-readable reason why CUDA is (un)available.
pub fn cuda_status() -> String {
    match CUDA_STATE.get_or_init(load_torch_cuda) {
        Ok(()) if tch::Cuda::is_available() => {
            format!("{} CUDA device(s)", tch::Cuda::device_count())
        }
        Ok(()) => "libtorch_cuda is loaded but reports no device".to_owned(),
        Err(reason) => reason.clone(),
    }
}

/// Reports whether the machine shows an NVIDIA driver at all.
fn nvidia_driver_present() -> bool {
    [
        "/proc/driver/nvidia/version",
        "/dev/nvidiactl",
        "/dev/nvidia0",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

/// Loads `libtorch_cuda.so` with global symbols so that libtorch's CUDA hooks register.
fn load_torch_cuda() -> std::result::Result<(), String> {
    if !nvidia_driver_present() {
        return Err("no NVIDIA driver on this machine".to_owned());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = option_env!("STRATA_TORCH_LIB") {
        candidates.push(format!("{dir}/libtorch_cuda.so"));
    }
    candidates.push("libtorch_cuda.so".to_owned());
    let mut failures = Vec::new();
    for candidate in &candidates {
        // SAFETY: loading libtorch_cuda runs its static initialisers, which only register
        // CUDA hooks with the libtorch already loaded in this process.
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        match unsafe { libloading::os::unix::Library::open(Some(candidate), flags) } {
            Ok(library) => {
                // Keep the library loaded for the life of the process.
                std::mem::forget(library);
                tracing::debug!(library = %candidate, "loaded libtorch_cuda");
                return Ok(());
            }
            Err(err) => failures.push(format!("{candidate}: {err}")),
        }
    }
    Err(format!(
        "could not load libtorch_cuda.so ({})",
        failures.join("; ")
    ))
}

/// Sets the number of CPU threads libtorch uses; `0` keeps libtorch's default.
///
/// The inter-op pool is set to one thread once per process, before any parallel work:
/// libtorch refuses to change it later, so a process that trains several runs (a study)
/// sets only the intra-op count for the later ones.
pub fn set_cpu_threads(threads: usize) {
    static INTEROP: std::sync::Once = std::sync::Once::new();
    if threads > 0 {
        INTEROP.call_once(|| {
            if tch::get_num_interop_threads() != 1 {
                tch::set_num_interop_threads(1);
            }
        });
        tch::set_num_threads(threads as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_choice() {
        for choice in [DeviceChoice::Cpu, DeviceChoice::Cuda, DeviceChoice::Auto] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_resolves_to_cuda_exactly_when_cuda_is_usable() {
        let device = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(device.is_cuda(), cuda_available());
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        assert_eq!(DeviceChoice::Cuda.resolve().is_ok(), cuda_available());
    }
}
