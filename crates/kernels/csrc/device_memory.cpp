// Peak-memory statistics of libtorch's caching allocator on an accelerator (CUDA when
// libtorch_cuda is loaded), through the device-generic `at::accelerator` API so that no CUDA
// header is needed at build time. Errors never cross the C boundary: each entry point returns
// -1 (or 0) when no accelerator is registered or the call throws.

#include <ATen/DeviceAccelerator.h>

#include <cstdint>

extern "C" {

// Peak bytes the caching allocator has handed out on device `index` since the process started
// or the last reset; -1 when no accelerator is available.
int64_t strata_accelerator_peak_allocated(int64_t index) {
  try {
    if (!at::accelerator::getAccelerator(false).has_value()) return -1;
    const auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return stats.allocated_bytes[aggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Restarts the peak statistics of device `index`; 1 when done, 0 when unavailable.
int strata_accelerator_reset_peak(int64_t index) {
  try {
    if (!at::accelerator::getAccelerator(false).has_value()) return 0;
    at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(index));
    return 1;
  } catch (...) {
    return 0;
  }
}

// Free and total bytes of device `index` as the driver reports them (what
// `torch.cuda.mem_get_info` returns); 1 when done, 0 when unavailable.
int strata_accelerator_memory_info(int64_t index, int64_t* free_bytes, int64_t* total_bytes) {
  try {
    if (!at::accelerator::getAccelerator(false).has_value()) return 0;
    const auto info = at::accelerator::getMemoryInfo(static_cast<c10::DeviceIndex>(index));
    *free_bytes = static_cast<int64_t>(info.first);
    *total_bytes = static_cast<int64_t>(info.second);
    return 1;
  } catch (...) {
    return 0;
  }
}

}  // extern "C"
