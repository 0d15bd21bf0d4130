//! The feed-forward sublayer: GELU (exact or tanh-approximated), squared ReLU, SwiGLU or
//! Pattention.

use super::{LayerCall, Linear};
use crate::config::{MlpKind, ModelConfig};
use strata_tensor::Result;
use tch::{Tensor, nn};

/// Position-wise MLP.
#[derive(Debug)]
pub struct Mlp {
    kind: MlpKind,
    /// Pattention's score scale τ.
    tau: f64,
    /// Input projection (`c_fc`) for GELU and squared ReLU, the gate projection for SwiGLU.
    pub c_fc: Linear,
    /// The up projection of SwiGLU.
    pub w_up: Option<Linear>,
    /// Output projection back to the residual width.
    pub c_proj: Linear,
    dropout: f64,
}

impl Mlp {
    /// Creates the MLP under `path`; `proj_std` initialises the output projection.
    pub fn new(path: nn::Path, config: &ModelConfig, proj_std: f64) -> Result<Self> {
        let (d, h) = (config.d_model, config.mlp_hidden());
        // Pattention's parameter tokens carry no bias (they are keys and values).
        let bias = config.bias && config.mlp != MlpKind::Pattention;
        let c_fc = Linear::new(
            &path / "c_fc",
            d,
            h,
            bias,
            0.02,
            config.lora_for(crate::config::LoraTarget::Mlp),
        )?;
        let w_up = (config.mlp == MlpKind::Swiglu)
            .then(|| {
                Linear::new(
                    &path / "w_up",
                    d,
                    h,
                    config.bias,
                    0.02,
                    config.lora_for(crate::config::LoraTarget::Mlp),
                )
            })
            .transpose()?;
        let c_proj = Linear::new(
            &path / "c_proj",
            h,
            d,
            bias,
            proj_std,
            config.lora_for(crate::config::LoraTarget::MlpProj),
        )?;
        Ok(Self {
            kind: config.mlp,
            tau: config.pattention_tau(),
            c_fc,
            w_up,
            c_proj,
            dropout: config.dropout,
        })
    }

    /// Applies the MLP to `x` `[B, T, D]`.
    pub fn forward(&self, x: &Tensor, call: LayerCall) -> Result<Tensor> {
        let p = call.config.precision;
        let hidden = match (self.kind, &self.w_up) {
            (MlpKind::Swiglu, Some(up)) => self
                .c_fc
                .forward(x, p)?
                .f_silu()?
                .f_mul(&up.forward(x, p)?)?,
            (MlpKind::Pattention, _) => pattention_scores(&self.c_fc.forward(x, p)?, self.tau)?,
            (MlpKind::Relu2, _) => self.c_fc.forward(x, p)?.f_relu()?.f_square()?,
            (MlpKind::GeluTanh, _) => self.c_fc.forward(x, p)?.f_gelu("tanh")?,
            _ => self.c_fc.forward(x, p)?.f_gelu("none")?,
        };
        call.dropout(self.c_proj.forward(&hidden, p)?, self.dropout)
    }
}

/// TokenFormer's normalised activation `gelu(τ · a / ‖a‖₂)` over the last dimension (the
/// parameter tokens). A token whose key is zero scores 0 and contributes nothing, whatever its
/// value, and leaves the norm unchanged: appending such tokens keeps the function.
pub fn pattention_scores(scores: &Tensor, tau: f64) -> Result<Tensor> {
    let norm = scores
        .f_square()?
        .f_sum_dim_intlist([-1i64].as_slice(), true, scores.kind())?
        .f_sqrt()?
        .f_clamp_min(1e-12)?;
    Ok(scores.f_div(&norm)?.f_mul_scalar(tau)?.f_gelu("none")?)
}
