//! Stand-ins for the C++ shims in a build without the `cpp` feature, with the shims' own
//! signatures: each reports failure the way its shim does, so the callers' error paths answer.
//! The callers refuse first with a message naming the feature; these keep the build whole.

use std::ffi::{c_char, c_int, c_void};
use torch_sys::C_tensor;

/// Autocast cannot be entered (nonzero: failure).
pub(crate) unsafe fn strata_autocast_enter(_cuda: c_int, _previous: *mut i64) -> c_int {
    1
}

/// Nothing to leave (nonzero: failure).
pub(crate) unsafe fn strata_autocast_exit(_cuda: c_int, _previous: *const i64) -> c_int {
    1
}

/// No allocator statistics (negative: unknown).
pub(crate) unsafe fn strata_accelerator_peak_allocated(_index: i64) -> i64 {
    -1
}

/// Nothing reset (zero: not done).
pub(crate) unsafe fn strata_accelerator_reset_peak(_index: i64) -> c_int {
    0
}

/// No memory information (zero: not done).
pub(crate) unsafe fn strata_accelerator_memory_info(
    _index: i64,
    _free_bytes: *mut i64,
    _total_bytes: *mut i64,
) -> c_int {
    0
}

/// The reason every process-group call fails.
pub(crate) unsafe fn strata_process_group_last_error() -> *const c_char {
    c"strata-kernels was built without its `cpp` feature: no c10d process group".as_ptr()
}

/// No group (null).
pub(crate) unsafe fn strata_process_group_new(
    _host: *const c_char,
    _port: c_int,
    _rank: c_int,
    _world: c_int,
    _timeout_ms: i64,
) -> *mut c_void {
    std::ptr::null_mut()
}

/// Nothing to free.
pub(crate) unsafe fn strata_process_group_free(_group: *mut c_void) {}

/// No collective (nonzero: failure).
pub(crate) unsafe fn strata_process_group_all_reduce(
    _group: *mut c_void,
    _tensors: *const *const C_tensor,
    _count: i64,
    _op: c_int,
) -> c_int {
    1
}

/// No collective (nonzero: failure).
pub(crate) unsafe fn strata_process_group_broadcast(
    _group: *mut c_void,
    _tensors: *const *const C_tensor,
    _count: i64,
    _root: c_int,
) -> c_int {
    1
}

/// No reducer (null).
pub(crate) unsafe fn strata_reducer_new(
    _group: *mut c_void,
    _params: *const *const C_tensor,
    _count: i64,
    _bucket_bytes: i64,
) -> *mut c_void {
    std::ptr::null_mut()
}

/// Nothing to arm (nonzero: failure).
pub(crate) unsafe fn strata_reducer_prepare(_reducer: *mut c_void) -> c_int {
    1
}

/// Nothing to check (nonzero: failure).
pub(crate) unsafe fn strata_reducer_check_finished(_reducer: *mut c_void) -> c_int {
    1
}

/// No buckets.
pub(crate) unsafe fn strata_reducer_buckets(_reducer: *mut c_void) -> i64 {
    0
}

/// Nothing launched.
pub(crate) unsafe fn strata_reducer_launched(_reducer: *mut c_void) -> i64 {
    0
}

/// Nothing to free.
pub(crate) unsafe fn strata_reducer_free(_reducer: *mut c_void) -> c_int {
    0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use tch::Device;

    #[test]
    fn the_parts_that_need_the_cpp_feature_say_so() {
        let joined =
            crate::process_group::ProcessGroup::join("127.0.0.1", 1, 0, 1, Duration::from_secs(1));
        let Err(err) = joined else {
            panic!("a process group without the C++ shim")
        };
        assert!(err.to_string().contains("`cpp` feature"), "{err}");
        let Err(err) = crate::autocast::Autocast::bf16(Device::Cpu) else {
            panic!("autocast without the C++ shim")
        };
        assert!(err.to_string().contains("`cpp` feature"), "{err}");
        assert_eq!(
            crate::device_memory::peak_allocated_bytes(Device::Cuda(0)),
            None
        );
        assert_eq!(
            crate::device_memory::free_and_total_bytes(Device::Cuda(0)),
            None
        );
    }
}
