//! The layer stack's entry points when strata-kernels is built without its `cpp` feature: the
//! weighted sum over a stacked tensor as one libtorch matrix product (libtorch differentiates
//! it), and no autograd chain, so a recording [`crate::LayerStack`] keeps the live tensors.

use crate::Selection;
use strata_tensor::{Error, Result};
use tch::Tensor;

/// False: the in-place autograd chain of the layer stack needs the C++ functions.
pub const AUTOGRAD_CHAIN: bool = false;

/// The refusal of every chain operation (never reached: without the chain no stack uses it).
fn no_chain() -> Error {
    Error::Invalid("layer stack: the autograd chain needs strata-kernels' `cpp` feature".to_owned())
}

/// Not available without the C++ functions (see [`AUTOGRAD_CHAIN`]).
pub fn push(
    _previous: Option<&Tensor>,
    _x: &Tensor,
    _values: &Tensor,
    _grads: &Tensor,
    _slot: usize,
    _release_grads: bool,
) -> Result<Tensor> {
    Err(no_chain())
}

/// Not available without the C++ functions (see [`AUTOGRAD_CHAIN`]).
pub fn stack_weighted_sum(
    _weights: &Tensor,
    _token: &Tensor,
    _values: &Tensor,
    _grads: &Tensor,
    _selection: &Selection,
) -> Result<Tensor> {
    Err(no_chain())
}

/// `Σ_i weights[i] · stack[selected_i]` as one matrix product over the selected rows,
/// differentiable w.r.t. the stack and the weights by libtorch's autograd.
pub fn strided_weighted_sum(
    stack: &Tensor,
    weights: &Tensor,
    selection: &Selection,
) -> Result<Tensor> {
    let rows = crate::weighted_sum::selected_rows(stack, selection)?;
    let w = crate::weighted_sum::weight_row(weights, stack)?;
    Ok(w.f_mm(&rows)?.f_reshape(&stack.size()[1..])?)
}
