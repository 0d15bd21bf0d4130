//! The weighted sum `Σ_j w_j · x_j` over selected layers of a stacked buffer.

use crate::Selection;
use strata_tensor::{Error, Result, TensorExt};
use tch::{Kind, Tensor};

/// Which implementation computes the weighted sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Implementation {
    /// Chosen automatically for the inputs.
    #[default]
    Auto,
    /// The plain loop `Σ w_j · x_j`, accumulated in f32; the oracle for every other path.
    Reference,
}

/// Checks that `selection` fits a stack of `layers` layers and `weights` has one entry per layer.
fn check(stack_layers: i64, weights: &Tensor, selection: &Selection) -> Result<()> {
    weights.expect_shape("weighted_sum weights", &[Some(selection.count as i64)])?;
    match selection.last() {
        Some(last) if (last as i64) < stack_layers => Ok(()),
        Some(last) => Err(Error::Invalid(format!(
            "weighted_sum: selection reaches layer {last} but the stack holds {stack_layers} layers"
        ))),
        None => Err(Error::Invalid(
            "weighted_sum: the selection is empty".to_owned(),
        )),
    }
}

/// Weighted sum over the selected layers of `stack` ([L, ...]); the result has the shape of
/// one layer and the dtype of `stack`. Differentiable w.r.t. `stack` and `weights`.
pub fn weighted_sum(
    stack: &Tensor,
    weights: &Tensor,
    selection: &Selection,
    implementation: Implementation,
) -> Result<Tensor> {
    let layers = stack.size().first().copied().unwrap_or(0);
    check(layers, weights, selection)?;
    match implementation {
        Implementation::Auto | Implementation::Reference => {
            let inputs: Vec<Tensor> = selection.indices().map(|j| stack.get(j as i64)).collect();
            reference(&inputs, weights)
        }
    }
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
    let w = weights.to_kind(acc_kind);
    let mut acc: Option<Tensor> = None;
    for (j, x) in inputs.iter().enumerate() {
        let term = x.to_kind(acc_kind) * w.get(j as i64);
        acc = Some(match acc {
            None => term,
            Some(a) => a + term,
        });
    }
    let acc = acc.expect("at least one input");
    Ok(if out_kind == acc_kind {
        acc
    } else {
        acc.to_kind(out_kind)
    })
}
