//! The feed-forward sublayer: GELU or SwiGLU.

use super::Linear;
use crate::config::{MlpKind, ModelConfig};
use strata_tensor::Result;
use tch::{Tensor, nn};

/// Position-wise MLP.
#[derive(Debug)]
pub struct Mlp {
    kind: MlpKind,
    /// Input projection (`c_fc`) for GELU, the gate projection for SwiGLU.
    pub c_fc: Linear,
    /// The up projection of SwiGLU.
    pub w_up: Option<Linear>,
    /// Output projection back to the residual width.
    pub c_proj: Linear,
    dropout: f64,
}

impl Mlp {
    /// Creates the MLP under `path`; `proj_std` initialises the output projection.
    pub fn new(path: nn::Path, config: &ModelConfig, proj_std: f64) -> Self {
        let (d, h) = (config.d_model, config.mlp_hidden());
        let c_fc = Linear::new(&path / "c_fc", d, h, config.bias, 0.02);
        let w_up = (config.mlp == MlpKind::Swiglu)
            .then(|| Linear::new(&path / "w_up", d, h, config.bias, 0.02));
        let c_proj = Linear::new(&path / "c_proj", h, d, config.bias, proj_std);
        Self {
            kind: config.mlp,
            c_fc,
            w_up,
            c_proj,
            dropout: config.dropout,
        }
    }

    /// Applies the MLP to `x` `[B, T, D]`.
    pub fn forward(&self, x: &Tensor, config: &ModelConfig, train: bool) -> Result<Tensor> {
        let p = config.precision;
        let hidden = match (self.kind, &self.w_up) {
            (MlpKind::Swiglu, Some(up)) => self
                .c_fc
                .forward(x, p)?
                .f_silu()?
                .f_mul(&up.forward(x, p)?)?,
            _ => self.c_fc.forward(x, p)?.f_gelu("none")?,
        };
        Ok(self
            .c_proj
            .forward(&hidden, p)?
            .f_dropout(self.dropout, train)?)
    }
}
