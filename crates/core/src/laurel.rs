//! LAuReL, the learned augmented residual layer (Menghani et al., arXiv 2411.07501).
//!
//! A layer computes `out = x + f(x)`; LAuReL replaces its residual connection:
//! - **RW** (residual weights): `x' = α·f(x) + β·x` with learned scalars `(α, β)`, the
//!   parameter `laurel.<i>.alpha` `[2]`, starting at `(1, 1)`;
//! - **LR** (low rank): `x' = f(x) + x + B·A·x` with `A` (`laurel.<i>.down`, `[r, D]`,
//!   normal with standard deviation `1/sqrt(D)`) and `B` (`laurel.<i>.up`, `[D, r]`, zeros).
//!
//! Either way a fresh model computes exactly what the baseline computes: RW is evaluated as
//! `α·out + (β − α)·x`, which is `out` bit for bit at `α = β = 1`, and LR adds `B·A·x = 0`.

use crate::config::{LaurelConfig, LaurelKind};
use strata_tensor::Result;
use tch::{Tensor, nn};

/// One layer's LAuReL weights.
#[derive(Debug)]
pub enum Laurel {
    /// `(α, β)`, `[2]`.
    Rw {
        /// The weights of `f(x)` and `x`.
        alpha: Tensor,
    },
    /// The low-rank map `B·A`.
    Lr {
        /// `A` `[r, D]`.
        down: Tensor,
        /// `B` `[D, r]`, zero at init.
        up: Tensor,
    },
}

impl Laurel {
    /// The weights of one layer under `path` for a stream of width `d_model`. LR's `A` is
    /// drawn from its own generator keyed by `anchor` (see `layers::variant_normal`), so
    /// adding LAuReL moves no other tensor's draw.
    pub fn new(
        path: nn::Path,
        config: LaurelConfig,
        d_model: usize,
        anchor: &Tensor,
    ) -> Result<Self> {
        Ok(match (config.kind, config.rank) {
            (LaurelKind::Rw, _) => Laurel::Rw {
                alpha: path.f_ones("alpha", &[2])?,
            },
            (LaurelKind::Lr, rank) => {
                let (r, d) = (rank.unwrap_or(1) as i64, d_model as i64);
                let a = crate::layers::variant_normal(
                    anchor,
                    &path.path("down"),
                    &[r, d],
                    1.0 / (d_model as f64).sqrt(),
                )?;
                Laurel::Lr {
                    down: path.f_var_copy("down", &crate::layers::own_kind(&a, &path)?)?,
                    up: path.f_zeros("up", &[d, r])?,
                }
            }
        })
    }

    /// The augmented output from the layer's input `x` and its output `out = x + f(x)`.
    pub fn forward(&self, x: &Tensor, out: &Tensor) -> Result<Tensor> {
        match self {
            Laurel::Rw { alpha } => {
                let (a, b) = (alpha.f_get(0)?, alpha.f_get(1)?);
                Ok(out.f_mul(&a)?.f_add(&x.f_mul(&b.f_sub(&a)?)?)?)
            }
            Laurel::Lr { down, up } => {
                let low = x
                    .f_linear::<Tensor>(down, None)?
                    .f_linear::<Tensor>(up, None)?;
                Ok(out.f_add(&low)?)
            }
        }
    }

    /// The parameter tensors, in creation order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        match self {
            Laurel::Rw { alpha } => vec![alpha],
            Laurel::Lr { down, up } => vec![down, up],
        }
    }
}
