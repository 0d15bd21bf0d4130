// libtorch's autocast for any device type, as `torch.autocast(device_type, dtype=...)` sets
// it: tch exposes only CUDA's. Autocast state is per thread; every entry point acts on the
// calling thread. Errors never cross the C boundary: a failed call returns -1.

#include <ATen/autocast_mode.h>

extern "C" {

// Enters an autocast region for device type `cuda` (1) or CPU (0) with bf16 as the lower
// precision; writes the state to restore into `previous` ([enabled, dtype]). 0 on success.
int strata_autocast_enter(int cuda, int64_t* previous) {
  try {
    const auto type = cuda ? at::kCUDA : at::kCPU;
    previous[0] = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    previous[1] = static_cast<int64_t>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Leaves the region entered by `strata_autocast_enter`, restoring `previous`; the cache of
// cast weights is dropped when the outermost region ends. 0 on success.
int strata_autocast_exit(int cuda, const int64_t* previous) {
  try {
    const auto type = cuda ? at::kCUDA : at::kCPU;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type, previous[0] != 0);
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(previous[1]));
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
