//! The pre-norm transformer block.

use crate::config::ModelConfig;
use crate::kv_cache::LayerKv;
use crate::layers::{CausalSelfAttention, LayerCall, Mlp, Norm, fill};
use crate::mudd::LayerInput;
use crate::value_residual::ValueMix;
use strata_tensor::Result;
use tch::{Tensor, nn};

/// `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug)]
pub struct Block {
    /// Norm before attention.
    pub ln_1: Norm,
    /// Causal self-attention.
    pub attn: CausalSelfAttention,
    /// Norm before the MLP.
    pub ln_2: Norm,
    /// Feed-forward sublayer.
    pub mlp: Mlp,
}

impl Block {
    /// Creates block parameters under `path` (GPT-2 init: residual projections scaled by
    /// `1/sqrt(2·n_layer)`, or zero with `zero_init_projections`).
    pub fn new(path: nn::Path, config: &ModelConfig) -> Result<Self> {
        let proj_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let block = Self {
            ln_1: Norm::new(
                &path / "ln_1",
                config.norm,
                config.d_model,
                config.bias,
                config.norm_eps(),
            )?,
            attn: CausalSelfAttention::new(&path / "attn", config, proj_std)?,
            ln_2: Norm::new(
                &path / "ln_2",
                config.norm,
                config.d_model,
                config.bias,
                config.norm_eps(),
            )?,
            mlp: Mlp::new(&path / "mlp", config, proj_std)?,
        };
        if config.zero_init_projections {
            // Drawn and then zeroed, so that every other tensor gets the draws it has without
            // the option (paired runs share their initial values).
            fill(&block.attn.c_proj.weight, 0.0)?;
            fill(&block.mlp.c_proj.weight, 0.0)?;
        }
        Ok(block)
    }

    /// Applies the block to `x` `[B, T, D]` in the forward pass `call`; the attention's values go through `values`
    /// (the value residual; [`ValueMix::off`] for none), and with `kv` the tokens of `x`
    /// follow the cached ones ([`CausalSelfAttention::forward`]).
    pub fn forward(
        &self,
        x: &Tensor,
        call: LayerCall,
        values: &mut ValueMix,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        let attended = self.attention_branch(x, call, values, kv)?;
        let x = x.f_add(&attended)?;
        let mixed = self.mlp_branch(&x, call)?;
        Ok(x.f_add(&mixed)?)
    }

    /// [`Block::forward`] on a layer input of the depth stack: one stream, or MUDD's ways,
    /// where the block computes `h = residual + attn(ln_1(query), ln_1(key), ln_1(value))`
    /// and then `h + mlp(ln_2(h))`.
    pub fn forward_input(
        &self,
        input: &LayerInput,
        call: LayerCall,
        values: &mut ValueMix,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        match input {
            LayerInput::One(x) => self.forward(x, call, values, kv),
            LayerInput::Ways {
                query,
                key,
                value,
                residual,
            } => {
                let (q, k, v) = (
                    self.ln_1.forward(query)?,
                    self.ln_1.forward(key)?,
                    self.ln_1.forward(value)?,
                );
                let attended = self.attn.forward_separate((&q, &k, &v), call, values, kv)?;
                let x = residual.f_add(&attended)?;
                let mixed = self.mlp_branch(&x, call)?;
                Ok(x.f_add(&mixed)?)
            }
        }
    }

    /// The attention branch alone, `attn(ln_1(x))`, without the residual add (arguments as
    /// for [`Block::forward`]).
    pub fn attention_branch(
        &self,
        x: &Tensor,
        call: LayerCall,
        values: &mut ValueMix,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        self.attn.forward(&self.ln_1.forward(x)?, call, values, kv)
    }

    /// The MLP branch alone, `mlp(ln_2(x))`, without the residual add.
    pub fn mlp_branch(&self, x: &Tensor, call: LayerCall) -> Result<Tensor> {
        self.mlp.forward(&self.ln_2.forward(x)?, call)
    }
}
