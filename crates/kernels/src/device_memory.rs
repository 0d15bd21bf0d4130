//! GPU memory and timing helpers for benchmarks and run summaries: the caching allocator's
//! peak bytes on a CUDA device (what `torch.cuda.max_memory_allocated` reports) and a
//! device-wide synchronisation so that wall-clock timings cover the queued kernels.

use tch::Device;

#[cfg(feature = "cpp")]
unsafe extern "C" {
    fn strata_accelerator_peak_allocated(index: i64) -> i64;
    fn strata_accelerator_reset_peak(index: i64) -> std::ffi::c_int;
    fn strata_accelerator_memory_info(
        index: i64,
        free_bytes: *mut i64,
        total_bytes: *mut i64,
    ) -> std::ffi::c_int;
}
#[cfg(not(feature = "cpp"))]
use crate::without_cpp::{
    strata_accelerator_memory_info, strata_accelerator_peak_allocated,
    strata_accelerator_reset_peak,
};

/// Peak bytes libtorch's allocator has handed out on `device` since the process started or
/// [`reset_peak`]; `None` on the CPU or when no accelerator is registered.
pub fn peak_allocated_bytes(device: Device) -> Option<u64> {
    let Device::Cuda(index) = device else {
        return None;
    };
    // SAFETY: the shim only reads the allocator's counters and catches every exception.
    let bytes = unsafe { strata_accelerator_peak_allocated(index as i64) };
    u64::try_from(bytes).ok()
}

/// Restarts the peak statistics of `device`; false on the CPU or when unavailable.
pub fn reset_peak(device: Device) -> bool {
    let Device::Cuda(index) = device else {
        return false;
    };
    // SAFETY: as above; resetting counters has no other effect.
    unsafe { strata_accelerator_reset_peak(index as i64) != 0 }
}

/// Free and total bytes of `device` as its driver reports them (`torch.cuda.mem_get_info`);
/// `None` on the CPU or when no accelerator is registered.
pub fn free_and_total_bytes(device: Device) -> Option<(u64, u64)> {
    let Device::Cuda(index) = device else {
        return None;
    };
    let (mut free, mut total) = (0i64, 0i64);
    // SAFETY: the shim writes the two counters only on success and catches every exception.
    let done = unsafe { strata_accelerator_memory_info(index as i64, &mut free, &mut total) };
    (done != 0).then_some((u64::try_from(free).ok()?, u64::try_from(total).ok()?))
}

/// Waits until every kernel queued on `device` has finished (a no-op on the CPU).
pub fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_allocator_statistics() {
        assert_eq!(peak_allocated_bytes(Device::Cpu), None);
        assert!(!reset_peak(Device::Cpu));
        assert_eq!(free_and_total_bytes(Device::Cpu), None);
        synchronize(Device::Cpu);
    }
}
