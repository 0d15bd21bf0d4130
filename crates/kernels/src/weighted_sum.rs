//! The weighted sum `Σ_j w_j · x_j` over selected layers of a stacked buffer, and the
//! implementations behind it.

use crate::{Selection, cpu, ffi};
use strata_tensor::{Error, Result, TensorExt};
use tch::{Device, Kind, Tensor};

/// Which implementation computes the weighted sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Implementation {
    /// Chosen for the inputs: `Fused` while autograd records through them, else `CpuNoGrad`
    /// on the CPU and `CudaNoGrad` on a GPU (pass another to pin one; a model takes its
    /// choice when it is built).
    #[default]
    Auto,
    /// The plain loop `Σ w_j · x_j`, accumulated in f32 (f64 for f64 inputs); the oracle.
    Reference,
    /// One pass over the selected layers, differentiable w.r.t. the stack and the weights (a
    /// C++ autograd function): the CPU kernel forward on the CPU, one GEMM over the `[count,
    /// N]` view elsewhere; a GEMV and an outer product backward.
    Fused,
    /// rayon over chunks of the output, one read of each input and one write of the output;
    /// f32, bf16 (accumulating in f32) and f64; no autograd.
    CpuNoGrad,
    /// One GEMV launch over the strided view on the GPU; no autograd.
    CudaNoGrad,
}

impl std::str::FromStr for Implementation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "reference" => Ok(Self::Reference),
            "fused" => Ok(Self::Fused),
            "cpu" => Ok(Self::CpuNoGrad),
            "cuda" => Ok(Self::CudaNoGrad),
            other => Err(Error::Invalid(format!(
                "unknown weighted-sum implementation `{other}`: expected auto, reference, fused, \
                 cpu or cuda"
            ))),
        }
    }
}

/// True when autograd would record an operation on these inputs.
fn records_grad(stack: &Tensor, weights: &Tensor) -> bool {
    (stack.requires_grad() || weights.requires_grad()) && crate::grad_mode_enabled()
}

/// The concrete implementation for a request.
fn resolve(requested: Implementation, stack: &Tensor, weights: &Tensor) -> Implementation {
    if requested != Implementation::Auto {
        return requested;
    }
    if records_grad(stack, weights) {
        return Implementation::Fused;
    }
    if cpu_kernel_applies(stack) {
        Implementation::CpuNoGrad
    } else if matches!(stack.device(), Device::Cuda(_)) {
        Implementation::CudaNoGrad
    } else {
        Implementation::Fused
    }
}

/// True when the rayon CPU kernel handles `stack` (a CPU tensor of f32, bf16 or f64).
fn cpu_kernel_applies(stack: &Tensor) -> bool {
    stack.device() == Device::Cpu
        && matches!(stack.kind(), Kind::Float | Kind::BFloat16 | Kind::Double)
}

/// Checks the stack's rank, that `selection` fits it, and that `weights` has one entry per
/// selected layer.
fn check(stack: &Tensor, weights: &Tensor, selection: &Selection) -> Result<()> {
    if stack.dim() == 0 {
        return Err(Error::Shape {
            op: "weighted_sum stack".to_owned(),
            expected: "[layers, ...]".to_owned(),
            got: "a scalar".to_owned(),
        });
    }
    check_weights(weights, selection)?;
    let layers = stack.size()[0];
    match selection.last() {
        Some(last) if (last as i64) < layers => Ok(()),
        Some(last) => Err(Error::Invalid(format!(
            "weighted_sum: selection reaches layer {last} but the stack holds {layers} layers"
        ))),
        None => Err(Error::Invalid(
            "weighted_sum: the selection is empty".to_owned(),
        )),
    }
}

/// Checks that `weights` is a floating-point vector with one entry per selected layer.
pub(crate) fn check_weights(weights: &Tensor, selection: &Selection) -> Result<()> {
    weights.expect_shape("weighted_sum weights", &[Some(selection.count as i64)])?;
    if !weights.f_is_floating_point()? {
        return Err(Error::Invalid(format!(
            "weighted_sum weights: expected a floating-point vector, got {:?}",
            weights.kind()
        )));
    }
    Ok(())
}

/// The selected layers as a strided view `[count, ...]` (no copy).
fn selected_layers(stack: &Tensor, selection: &Selection) -> Result<Tensor> {
    let span = ((selection.count - 1) * selection.step + 1) as i64;
    Ok(stack.f_narrow(0, selection.start as i64, span)?.f_slice(
        0,
        0,
        span,
        selection.step as i64,
    )?)
}

/// The selected layers as `[count, N]` (a view when the layer's strides allow, else a copy
/// made by libtorch).
pub(crate) fn selected_rows(stack: &Tensor, selection: &Selection) -> Result<Tensor> {
    Ok(selected_layers(stack, selection)?.f_reshape([selection.count as i64, -1])?)
}

/// `weights` as a `[1, count]` row on `stack`'s device and in its dtype: the left factor of
/// the one-matrix-product weighted sums.
pub(crate) fn weight_row(weights: &Tensor, stack: &Tensor) -> Result<Tensor> {
    Ok(weights
        .f_to_device(stack.device())?
        .f_to_kind(stack.kind())?
        .f_unsqueeze(0)?)
}

/// Weighted sum over the selected layers of `stack` (`[L, ...]`); the result has the shape of
/// one layer and the dtype of `stack`. `Reference` and `Fused` are differentiable w.r.t.
/// `stack` and `weights`; the no-grad paths refuse inputs that autograd is recording.
pub fn weighted_sum(
    stack: &Tensor,
    weights: &Tensor,
    selection: &Selection,
    implementation: Implementation,
) -> Result<Tensor> {
    check(stack, weights, selection)?;
    match resolve(implementation, stack, weights) {
        Implementation::Reference => {
            let layers = selected_layers(stack, selection)?;
            let inputs = (0..selection.count as i64)
                .map(|i| layers.f_get(i))
                .collect::<std::result::Result<Vec<Tensor>, _>>()?;
            reference(&inputs, weights)
        }
        Implementation::Fused | Implementation::Auto => {
            ffi::strided_weighted_sum(stack, weights, selection)
        }
        no_grad @ (Implementation::CpuNoGrad | Implementation::CudaNoGrad) => {
            let mut out = Tensor::f_empty(&stack.size()[1..], (stack.kind(), stack.device()))?;
            no_grad_into(no_grad, &mut out, stack, weights, selection)?;
            Ok(out)
        }
    }
}

/// Writes the weighted sum into `out` (one layer's shape and dtype, contiguous, not
/// overlapping `stack`), without autograd. Every element of `out` is written.
pub fn weighted_sum_into(
    out: &mut Tensor,
    stack: &Tensor,
    weights: &Tensor,
    selection: &Selection,
    implementation: Implementation,
) -> Result<()> {
    check(stack, weights, selection)?;
    let path = resolve(implementation, stack, weights);
    if path == Implementation::Reference {
        let _guard = tch::no_grad_guard();
        let sum = weighted_sum(stack, weights, selection, path)?;
        check_output(out, stack)?;
        out.f_copy_(&sum)?;
        return Ok(());
    }
    no_grad_into(path, out, stack, weights, selection)
}

/// Refuses an output that is not contiguous, of one layer's shape and of the stack's dtype.
fn check_output(out: &Tensor, stack: &Tensor) -> Result<()> {
    let layer = &stack.size()[1..];
    if out.size() != layer || out.kind() != stack.kind() || !out.is_contiguous() {
        return Err(Error::Shape {
            op: "weighted_sum output (contiguous)".to_owned(),
            expected: format!("{layer:?} {:?}", stack.kind()),
            got: format!("{:?} {:?}", out.size(), out.kind()),
        });
    }
    Ok(())
}

/// The paths that write into `out` without autograd: the rayon kernel, or one matrix
/// product written straight into `out` (`Fused`, and `CudaNoGrad` on a GPU).
fn no_grad_into(
    path: Implementation,
    out: &mut Tensor,
    stack: &Tensor,
    weights: &Tensor,
    selection: &Selection,
) -> Result<()> {
    if records_grad(stack, weights) {
        return Err(Error::Invalid(format!(
            "weighted_sum: {path:?} does not record gradients; use Fused (or Auto) while \
             autograd records, or call it inside no_grad"
        )));
    }
    check_output(out, stack)?;
    // The fused path's forward on the CPU is the same kernel (see `ffi::strided_weighted_sum`).
    if path == Implementation::CpuNoGrad
        || (path == Implementation::Fused && cpu_kernel_applies(stack))
    {
        return cpu::weighted_sum_into(out, stack, &weights.to_f64_vec()?, selection);
    }
    if path == Implementation::CudaNoGrad && !matches!(stack.device(), Device::Cuda(_)) {
        return Err(Error::Device(format!(
            "the CUDA weighted sum needs a CUDA stack, got {:?}",
            stack.device()
        )));
    }
    let rows = selected_rows(stack, selection)?;
    let w = weight_row(weights, stack)?;
    let out_row = out.f_view([1, rows.size()[1]])?;
    let _ = w.f_mm_out(&out_row, &rows)?;
    Ok(())
}

/// Weighted sum over a list of same-shaped tensors (the live layer outputs of a training
/// step); the reference loop, differentiable w.r.t. inputs and weights.
pub fn weighted_sum_list(inputs: &[Tensor], weights: &Tensor) -> Result<Tensor> {
    weights.expect_shape("weighted_sum weights", &[Some(inputs.len() as i64)])?;
    if let Some(first) = inputs.first() {
        for x in inputs {
            if x.size() != first.size() {
                return Err(Error::Shape {
                    op: "weighted_sum inputs".to_owned(),
                    expected: format!("{:?}", first.size()),
                    got: format!("{:?}", x.size()),
                });
            }
        }
    }
    reference(inputs, weights)
}

/// `Σ w_j · x_j` accumulated in f32 (or f64 for f64 inputs), cast back to the input dtype.
fn reference(inputs: &[Tensor], weights: &Tensor) -> Result<Tensor> {
    let Some(first) = inputs.first() else {
        return Err(Error::Invalid(
            "weighted_sum: no inputs selected".to_owned(),
        ));
    };
    let out_kind = first.kind();
    let acc_kind = if out_kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    let w = weights.f_to_kind(acc_kind)?;
    let mut acc = first.f_to_kind(acc_kind)?.f_mul(&w.f_get(0)?)?;
    for (j, x) in inputs.iter().enumerate().skip(1) {
        acc = acc.f_add(&x.f_to_kind(acc_kind)?.f_mul(&w.f_get(j as i64)?)?)?;
    }
    Ok(if out_kind == acc_kind {
        acc
    } else {
        acc.f_to_kind(out_kind)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementations_parse_from_their_names() {
        for (name, want) in [
            ("auto", Implementation::Auto),
            ("reference", Implementation::Reference),
            ("fused", Implementation::Fused),
            ("cpu", Implementation::CpuNoGrad),
            ("cuda", Implementation::CudaNoGrad),
        ] {
            assert_eq!(name.parse::<Implementation>().unwrap(), want);
        }
        let err = "fast".parse::<Implementation>().unwrap_err();
        assert!(
            err.to_string().contains("expected auto, reference"),
            "{err}"
        );
    }
}
