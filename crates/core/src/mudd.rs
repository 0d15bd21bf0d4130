//! MUDD connections, multiway dynamic dense (Xiao et al., arXiv 2502.12170).
//!
//! After layer `i` the stack holds `J = i + 2` outputs `x₀` (the embedding output) ..
//! `xᵢ₊₁`. MUDD makes the next layer's inputs from all of them with weights computed per
//! token from the newest output, separately for each of `C` ways: the query, key and value
//! inputs of the next block's attention and its residual stream (`C = 4`); after the last
//! layer a single way feeds the final norm (`C = 1`):
//!
//! ```text
//! w      = static + up · GELU(down · RMSNorm(xᵢ₊₁))      [C, J] per token
//! way_c  = Σⱼ w[c, j] · xⱼ
//! block: h = way_r + attn(LN₁(way_q), LN₁(way_k), LN₁(way_v)),   out = h + mlp(LN₂(h))
//! ```
//!
//! The RMSNorm has no gain. The parameters of layer `i` are `mudd.<i>.static` (`[C·J]`,
//! row-major `[C, J]`, flat so that AdamW's decay of matrices leaves it alone), `mudd.<i>.down`
//! (`[C·J, D]`, normal with standard deviation `1/√D`, drawn from its own generator so that
//! adding MUDD moves no other tensor's draw) and `mudd.<i>.up` (`[C·J, C·J]`, zeros): the
//! hidden width is `C·J`, the paper's choice without its rounding to 64. The static weights
//! start one-hot on the newest output and `up` at zero, so every way is `xᵢ₊₁` and the model
//! computes the baseline's function; the only difference is rounding, since the query, key and
//! value projections then run as three products instead of one. The block's one `LN₁` (gain
//! and bias) normalises all three attention ways (the paper's option of separate norms per
//! way is not taken).
//!
//! The stored outputs live in a [`strata_kernels::LayerStack`] made for per-token weights
//! (live tensors under autograd, one buffer otherwise). Cost per token and layer: the two
//! small products, the RMSNorm and `C·J` weighted sums of width `D`.

use strata_tensor::{Error, Result};
use tch::{Tensor, nn};

/// Epsilon of the RMSNorm that feeds the weight MLP.
pub const NORM_EPS: f64 = 1e-6;

/// The ways of every layer but the last: query, key, value and residual.
pub const WAYS: usize = 4;

/// The ways of layer `layer` of `n_layer` (4, and 1 after the last layer).
pub fn ways(layer: usize, n_layer: usize) -> usize {
    if layer + 1 == n_layer { 1 } else { WAYS }
}

/// The MUDD connection after one layer.
#[derive(Debug)]
pub struct Mudd {
    /// Static weights `[C·J]` (row-major `[C, J]`), one-hot on the newest output at init.
    pub static_weights: Tensor,
    /// The weight MLP's first matrix `[C·J, D]`.
    pub down: Tensor,
    /// The weight MLP's second matrix `[C·J, C·J]`, zeros at init.
    pub up: Tensor,
    ways: i64,
    reads: i64,
    width: i64,
}

impl Mudd {
    /// The connection after layer `layer` of `n_layer` (width `d_model`) under `path`;
    /// `anchor` keys the draw of `down` (see `layers::variant_normal`).
    pub fn new(
        path: nn::Path,
        layer: usize,
        n_layer: usize,
        d_model: usize,
        anchor: &Tensor,
    ) -> Result<Self> {
        let (c, j, d) = (
            ways(layer, n_layer) as i64,
            layer as i64 + 2,
            d_model as i64,
        );
        let static_weights = path.f_zeros("static", &[c * j])?;
        for way in 0..c {
            crate::layers::set_entry(&static_weights, way * j + j - 1, 1.0)?;
        }
        let down = crate::layers::variant_normal(
            anchor,
            &path.path("down"),
            &[c * j, d],
            1.0 / (d_model as f64).sqrt(),
        )?;
        let down = path.f_var_copy("down", &crate::layers::own_kind(&down, &path)?)?;
        let up = path.f_zeros("up", &[c * j, c * j])?;
        Ok(Self {
            static_weights,
            down,
            up,
            ways: c,
            reads: j,
            width: d,
        })
    }

    /// Number of ways `C` this connection makes.
    pub fn ways(&self) -> usize {
        self.ways as usize
    }

    /// The weights `[..., C, J]` for the newest output `newest` `[..., D]`.
    pub fn weights(&self, newest: &Tensor) -> Result<Tensor> {
        let normed = newest.f_rms_norm([self.width].as_slice(), None::<&Tensor>, NORM_EPS)?;
        let hidden = normed
            .f_linear::<Tensor>(&self.down, None)?
            .f_gelu("none")?;
        let dynamic = hidden.f_linear::<Tensor>(&self.up, None)?;
        let weights = dynamic.f_add(&self.static_weights)?;
        let mut shape = newest.size();
        shape.pop();
        shape.extend([self.ways, self.reads]);
        Ok(weights.f_view(shape.as_slice())?)
    }

    /// The parameter tensors, in creation order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        vec![&self.static_weights, &self.down, &self.up]
    }
}

/// A layer's input: one stream, or MUDD's separate ways.
#[derive(Debug)]
pub enum LayerInput {
    /// One stream for attention and residual alike.
    One(Tensor),
    /// MUDD's ways.
    Ways {
        /// The attention's query input (before the block's norm).
        query: Tensor,
        /// The attention's key input.
        key: Tensor,
        /// The attention's value input.
        value: Tensor,
        /// The residual stream.
        residual: Tensor,
    },
}

impl LayerInput {
    /// The input made of MUDD's mixes `[..., C, D]`: the ways for `C = 4`, one stream for
    /// `C = 1`.
    pub fn from_mixes(mixes: &Tensor) -> Result<Self> {
        let way = |c: i64| mixes.f_select(-2, c);
        match mixes.size().iter().rev().nth(1) {
            Some(1) => Ok(LayerInput::One(way(0)?)),
            Some(4) => Ok(LayerInput::Ways {
                query: way(0)?,
                key: way(1)?,
                value: way(2)?,
                residual: way(3)?,
            }),
            _ => Err(Error::Shape {
                op: "MUDD ways".to_owned(),
                expected: "[..., 1 or 4, D]".to_owned(),
                got: format!("{:?}", mixes.size()),
            }),
        }
    }
}
