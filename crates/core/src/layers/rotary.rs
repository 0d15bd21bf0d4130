//! Rotary position embedding (RoPE) for queries and keys.

use strata_tensor::Result;
use tch::{Device, Kind, Tensor};

/// Precomputed cosines and sines for every position up to the block size.
#[derive(Debug)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// Tables for `positions` positions and heads of width `head_dim` (even), base 10000.
    pub fn new(positions: usize, head_dim: usize, device: Device) -> Result<Self> {
        let half = (head_dim / 2) as i64;
        let inv_freq = Tensor::f_arange(half, (Kind::Double, Device::Cpu))?
            .f_mul_scalar(-2.0 / head_dim as f64)?
            .f_mul_scalar(10000f64.ln())?
            .f_exp()?;
        let t = Tensor::f_arange(positions as i64, (Kind::Double, Device::Cpu))?;
        let angles = t.f_outer(&inv_freq)?; // [T, half]
        let angles = Tensor::f_cat(&[&angles, &angles], -1)?; // [T, head_dim]
        let table = |t: Tensor| t.f_to_kind(Kind::Float)?.f_to_device(device);
        Ok(Self {
            cos: table(angles.f_cos()?)?,
            sin: table(angles.f_sin()?)?,
        })
    }

    /// Rotates `x` of shape `[B, H, T, head_dim]` by its positions `0..T`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.apply_from(x, 0)
    }

    /// Rotates `x` of shape `[B, H, T, head_dim]` by the positions `start..start + T` (the
    /// new tokens of a cached forward pass).
    pub fn apply_from(&self, x: &Tensor, start: i64) -> Result<Tensor> {
        let size = x.size();
        let (t, d) = (size[2], size[3]);
        let cos = self.cos.f_narrow(0, start, t)?;
        let sin = self.sin.f_narrow(0, start, t)?;
        let first = x.f_narrow(-1, 0, d / 2)?;
        let second = x.f_narrow(-1, d / 2, d / 2)?;
        let rotated = Tensor::f_cat(&[&second.f_neg()?, &first], -1)?;
        Ok(x.f_mul(&cos)?.f_add(&rotated.f_mul(&sin)?)?)
    }
}
