//! LayerNorm and RMSNorm over the last dimension, computed in f32.

use crate::config::NormKind;
use strata_tensor::Result;
use tch::{Tensor, nn};

/// Default epsilon of both norms (PyTorch's LayerNorm default).
pub const DEFAULT_EPS: f64 = 1e-5;

/// A normalisation layer with a learned gain (and a bias for LayerNorm with `bias = true`).
#[derive(Debug)]
pub struct Norm {
    kind: NormKind,
    width: i64,
    eps: f64,
    /// Gain `[width]`, initialised to ones.
    pub weight: Tensor,
    /// Bias `[width]`, initialised to zeros.
    pub bias: Option<Tensor>,
}

impl Norm {
    /// Creates `path.weight` and, for a biased LayerNorm, `path.bias`; `eps` is added to the
    /// variance (LayerNorm) or mean square (RMSNorm).
    pub fn new(path: nn::Path, kind: NormKind, width: usize, bias: bool, eps: f64) -> Result<Self> {
        let weight = path.f_ones("weight", &[width as i64])?;
        let bias = (bias && kind == NormKind::Layernorm)
            .then(|| path.f_zeros("bias", &[width as i64]))
            .transpose()?;
        Ok(Self {
            kind,
            width: width as i64,
            eps,
            weight,
            bias,
        })
    }

    /// Normalises the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            NormKind::Layernorm => x.f_layer_norm(
                [self.width],
                Some(&self.weight),
                self.bias.as_ref(),
                self.eps,
                true,
            )?,
            NormKind::Rmsnorm => x.f_rms_norm([self.width], Some(&self.weight), self.eps)?,
        })
    }
}
