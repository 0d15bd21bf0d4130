//! What every layer of one forward pass shares.

use super::Rotary;
use crate::config::ModelConfig;
use strata_kernels::Generator;
use strata_tensor::Result;
use tch::{Device, Tensor};

/// The context of one forward pass, the same for every layer: the model config (precision,
/// dropout, ...), the rotary table (rotary positions only), whether it trains (dropout
/// applies) and the model's own random generator, if it has one. The per-layer state (the value residual's mix, a layer's KV cache) is passed
/// beside it.
#[derive(Clone, Copy, Debug)]
pub struct LayerCall<'a> {
    /// The model's config.
    pub config: &'a ModelConfig,
    /// The rotary table, with rotary positions.
    pub rotary: Option<&'a Rotary>,
    /// True while training (dropout on).
    pub train: bool,
    /// The model's random generator ([`crate::Gpt::with_generator`]), which draws dropout
    /// masks for CPU tensors; without one, or on other devices, dropout draws from libtorch's
    /// default generator.
    pub generator: Option<&'a Generator>,
}

impl LayerCall<'_> {
    /// The generator that draws dropout for tensors on `device` in this pass: the model's own
    /// while training on the CPU, else none (libtorch's default generator).
    pub fn generator_for(&self, device: Device) -> Option<&Generator> {
        self.generator
            .filter(|_| self.train && Generator::draws_on(device))
    }

    /// Inverted dropout of `x` with probability `p` while training; `x` itself otherwise.
    pub fn dropout(&self, x: Tensor, p: f64) -> Result<Tensor> {
        if !self.train || p == 0.0 {
            return Ok(x);
        }
        match self.generator_for(x.device()) {
            Some(generator) => Ok(x.f_mul(&generator.keep_mask(&x, 1.0 - p)?)?),
            None => Ok(x.f_dropout(p, true)?),
        }
    }
}
