//! A linear layer whose product runs in the configured compute dtype.

use strata_tensor::{Precision, Result};
use tch::{Kind, Tensor, nn};

/// `y = x · Wᵀ + b` with `W` of shape `[out, in]`, stored in f32.
#[derive(Debug)]
pub struct Linear {
    /// Weight `[out, in]`.
    pub weight: Tensor,
    /// Optional bias `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Creates `path.weight` (normal with `std`) and, if `bias`, `path.bias` (zeros).
    pub fn new(path: nn::Path, inputs: usize, outputs: usize, bias: bool, std: f64) -> Self {
        let weight = path.var(
            "weight",
            &[outputs as i64, inputs as i64],
            super::normal(std),
        );
        let bias = bias.then(|| path.zeros("bias", &[outputs as i64]));
        Self { weight, bias }
    }

    /// Applies the layer; the result is f32 whatever the compute dtype.
    pub fn forward(&self, x: &Tensor, precision: Precision) -> Result<Tensor> {
        let weight = precision.cast(&self.weight);
        let bias = self.bias.as_ref().map(|b| precision.cast(b));
        let y = precision.cast(x).f_linear(&weight, bias.as_ref())?;
        Ok(if y.kind() == Kind::Float {
            y
        } else {
            y.f_to_kind(Kind::Float)?
        })
    }
}
