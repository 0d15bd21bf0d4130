//! What every layer of one forward pass shares.

use super::Rotary;
use crate::config::ModelConfig;
use strata_kernels::Generator;
use strata_tensor::Result;
use tch::Tensor;

/// The context of one forward pass, the same for every layer: the model config (precision,
/// dropout, ...), the rotary table (rotary positions only), whether it trains (dropout
/// applies) and the generator dropout draws from. The per-layer state (the value residual's
/// mix, a layer's KV cache) is passed beside it.
#[derive(Clone, Copy, Debug)]
pub struct LayerCall<'a> {
    /// The model's config.
    pub config: &'a ModelConfig,
    /// The rotary table, with rotary positions.
    pub rotary: Option<&'a Rotary>,
    /// True while training (dropout on).
    pub train: bool,
    /// The generator this pass's dropout draws from while training
    /// ([`crate::Gpt::dropout_generator`]); `None`: libtorch's default generator.
    pub generator: Option<&'a Generator>,
}

impl LayerCall<'_> {
    /// Inverted dropout of `x` with probability `p` while training; `x` itself otherwise.
    pub fn dropout(&self, x: Tensor, p: f64) -> Result<Tensor> {
        if !self.train || p == 0.0 {
            return Ok(x);
        }
        match self.generator {
            Some(generator) => Ok(x.f_mul(&generator.keep_mask(&x, 1.0 - p)?)?),
            None => Ok(x.f_dropout(p, true)?),
        }
    }
}
