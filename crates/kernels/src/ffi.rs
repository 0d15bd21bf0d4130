//! Safe wrappers over the C++ autograd functions in `csrc/stack_autograd.cpp` (the `cpp`
//! feature; `ffi_without_cpp.rs` stands in for them without it).

use crate::Selection;
use std::ffi::{CStr, c_char, c_int};
use strata_tensor::{Error, Result};
use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn strata_kernels_last_error() -> *const c_char;
    fn strata_stack_push(
        previous: *const C_tensor,
        x: *const C_tensor,
        values: *const C_tensor,
        grads: *const C_tensor,
        slot: i64,
        release_grads: c_int,
    ) -> *mut C_tensor;
    fn strata_strided_weighted_sum(
        stack: *const C_tensor,
        weights: *const C_tensor,
        start: i64,
        step: i64,
        count: i64,
    ) -> *mut C_tensor;
    fn strata_stack_weighted_sum(
        weights: *const C_tensor,
        token: *const C_tensor,
        values: *const C_tensor,
        grads: *const C_tensor,
        start: i64,
        step: i64,
        count: i64,
    ) -> *mut C_tensor;
}

/// Wraps a tensor returned by the shim, or turns a null into the shim's error message.
fn take(ptr: *mut C_tensor, op: &str) -> Result<Tensor> {
    if ptr.is_null() {
        // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
        let message = unsafe { CStr::from_ptr(strata_kernels_last_error()) };
        return Err(Error::Invalid(format!(
            "{op}: {}",
            message.to_string_lossy()
        )));
    }
    // SAFETY: a non-null result is a freshly allocated `at::Tensor*` that we now own.
    Ok(unsafe { Tensor::from_ptr(ptr) })
}

/// True: the layer stack records through the C++ autograd chain ([`push`]).
pub const AUTOGRAD_CHAIN: bool = true;

/// Copies `x` into slot `slot` of `values` and returns the next token of the stack's chain;
/// `release_grads` marks the first output of the chain, whose backward frees `grads`.
pub fn push(
    previous: Option<&Tensor>,
    x: &Tensor,
    values: &Tensor,
    grads: &Tensor,
    slot: usize,
    release_grads: bool,
) -> Result<Tensor> {
    let previous = previous.map_or(std::ptr::null(), Tensor::as_ptr);
    // SAFETY: every pointer refers to a live tensor for the duration of the call.
    let ptr = unsafe {
        strata_stack_push(
            previous,
            x.as_ptr(),
            values.as_ptr(),
            grads.as_ptr(),
            slot as i64,
            c_int::from(release_grads),
        )
    };
    take(ptr, "layer stack push")
}

/// `Σ_i weights[i] · values[selected_i]`, differentiable w.r.t. the weights and, through
/// `token`, the pushed outputs.
pub fn stack_weighted_sum(
    weights: &Tensor,
    token: &Tensor,
    values: &Tensor,
    grads: &Tensor,
    selection: &Selection,
) -> Result<Tensor> {
    // SAFETY: every pointer refers to a live tensor for the duration of the call.
    let ptr = unsafe {
        strata_stack_weighted_sum(
            weights.as_ptr(),
            token.as_ptr(),
            values.as_ptr(),
            grads.as_ptr(),
            selection.start as i64,
            selection.step as i64,
            selection.count as i64,
        )
    };
    take(ptr, "layer stack weighted sum")
}

/// `Σ_i weights[i] · stack[selected_i]` over a stacked tensor of any strides, differentiable
/// w.r.t. the stack and the weights: the CPU kernel forward (a GEMM off the CPU), a GEMV and an
/// outer product backward.
pub fn strided_weighted_sum(
    stack: &Tensor,
    weights: &Tensor,
    selection: &Selection,
) -> Result<Tensor> {
    // SAFETY: both pointers refer to live tensors for the duration of the call.
    let ptr = unsafe {
        strata_strided_weighted_sum(
            stack.as_ptr(),
            weights.as_ptr(),
            selection.start as i64,
            selection.step as i64,
            selection.count as i64,
        )
    };
    take(ptr, "weighted sum")
}

/// The CPU kernel for the C++ forward pass of the layer stack's weighted sum: writes
/// `Σ_i weights[i] · values[start + i·step]` into `out`. Returns 0, or 1 after logging why the
/// inputs were refused (the caller then falls back to a matrix product).
///
/// # Safety
/// `values` and `out` point to live tensors and `weights` to `count` doubles, for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strata_kernels_cpu_stack_sum(
    values: *mut C_tensor,
    out: *mut C_tensor,
    weights: *const f64,
    start: i64,
    step: i64,
    count: i64,
) -> c_int {
    // SAFETY: the caller passes live tensors; shallow clones share them without owning them.
    let (values, mut out) =
        unsafe { (Tensor::clone_from_ptr(values), Tensor::clone_from_ptr(out)) };
    // SAFETY: the caller passes `count` weights.
    let weights = unsafe { std::slice::from_raw_parts(weights, count.max(0) as usize) };
    let selection = Selection {
        start: start as usize,
        step: step as usize,
        count: count as usize,
    };
    match crate::cpu::weighted_sum_into(&mut out, &values, weights, &selection) {
        Ok(()) => 0,
        Err(err) => {
            tracing::debug!("cpu stack sum refused ({err}); using a matrix product");
            1
        }
    }
}
