//! The value residual (ResFormer, Zhou et al., arXiv 2410.17897).
//!
//! The first layer's attention values `V₁` feed every later layer: layer `n >= 1` attends
//! with `V'ₙ = λₙ₁·Vₙ + λₙ₂·V₁` instead of `Vₙ` (the queries, keys and attention weights are
//! its own). `λₙ = (λₙ₁, λₙ₂)` is the parameter `vres.<n>.lambda` `[2]`, learned, and starts
//! at `(0.5, 0.5)`, the paper's fixed ResFormer mix (so a fresh model is not the baseline;
//! the paper does not start from it). Gradients flow into `V₁` through every later layer.
//! [`crate::depth::DepthStack`] owns the weights and hands each layer a [`ValueMix`].

use strata_tensor::{Error, Result};
use tch::{Tensor, nn};

/// The starting value of both mixing weights, `λ₁ = λ₂ = 0.5`.
pub const INIT: f64 = 0.5;

/// The learned mixing weights of layer `layer` (`>= 1`) under `path`, `path.<layer>.lambda`.
pub(crate) fn lambda(path: &nn::Path, layer: usize) -> Result<Tensor> {
    Ok((path / layer).f_var("lambda", &[2], nn::Init::Const(INIT))?)
}

/// The value residual as one layer sees it: hand it the attention's values and use what it
/// returns. Without a value residual (or for a layer that is not part of one) it returns the
/// values unchanged.
#[derive(Debug)]
pub struct ValueMix<'a> {
    /// This layer's `(λ₁, λ₂)`; `None` for the first layer and when the method is off.
    lambda: Option<&'a Tensor>,
    /// Where the first layer's values are kept; `None` when the method is off.
    first: Option<&'a mut Option<Tensor>>,
}

impl<'a> ValueMix<'a> {
    /// No value residual: [`ValueMix::apply`] returns the values unchanged.
    pub fn off() -> Self {
        Self {
            lambda: None,
            first: None,
        }
    }

    /// The mix of a layer in a stack with a value residual: the first layer (no `lambda`)
    /// stores its values in `first`, a later one mixes with them.
    pub(crate) fn on(lambda: Option<&'a Tensor>, first: &'a mut Option<Tensor>) -> Self {
        Self {
            lambda,
            first: Some(first),
        }
    }

    /// The values layer attention uses in place of `v` (any shape, the same for every
    /// layer): `v` itself for the first layer (which keeps it) and without a value residual,
    /// `λ₁·v + λ₂·V₁` for a later layer.
    pub fn apply(&mut self, v: Tensor) -> Result<Tensor> {
        let Some(first) = self.first.as_deref_mut() else {
            return Ok(v);
        };
        let Some(lambda) = self.lambda else {
            *first = Some(v.shallow_clone());
            return Ok(v);
        };
        let Some(v1) = first.as_ref() else {
            return Err(Error::Invalid(
                "value residual: a later layer ran before the first layer stored its values"
                    .to_owned(),
            ));
        };
        let l = lambda.f_to_kind(v.kind())?;
        Ok(v.f_mul(&l.f_get(0)?)?.f_add(&v1.f_mul(&l.f_get(1)?)?)?)
    }
}
