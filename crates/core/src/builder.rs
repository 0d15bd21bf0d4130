//! [`ModelConfig::default`] (nanoGPT's CPU recipe model) and [`ModelConfigBuilder`], so that
//! code can write a config without spelling out every field.

use crate::config::{
    DwaConfig, LoraConfig, MlpKind, ModelConfig, NormKind, PositionKind, SharingConfig,
};
use strata_tensor::{Precision, Result};

impl Default for ModelConfig {
    /// The model of nanoGPT's CPU recipe for Tiny Shakespeare (`configs/nanogpt-cpu.toml`):
    /// 65 characters, 4 layers, 4 heads, width 128, block 64, GELU MLP of width 512,
    /// LayerNorm without biases, learned positions, tied embeddings, no dropout, no DWA.
    fn default() -> Self {
        ModelConfig {
            vocab_size: 65,
            n_layer: 4,
            n_head: 4,
            d_model: 128,
            head_dim: None,
            block_size: 64,
            mlp: MlpKind::Gelu,
            mlp_ratio: 4.0,
            mlp_hidden: None,
            pattention_tau: None,
            norm: NormKind::Layernorm,
            norm_eps: None,
            positions: PositionKind::Learned,
            bias: false,
            tied_embeddings: true,
            qk_norm: false,
            zero_init_projections: false,
            zero_init_head: false,
            logit_softcap: None,
            dropout: 0.0,
            dwa: None,
            depth: crate::config::DepthConfig::default(),
            sharing: None,
            precision: Precision::default(),
            lora: None,
        }
    }
}

impl ModelConfig {
    /// A builder starting from [`ModelConfig::default`]; [`ModelConfigBuilder::build`]
    /// validates, e.g. `ModelConfig::builder().n_layer(6).d_model(64).dwa(1, 1).build()?`.
    pub fn builder() -> ModelConfigBuilder {
        ModelConfigBuilder {
            config: ModelConfig::default(),
        }
    }
}

/// Builds a [`ModelConfig`] field by field and validates it at the end.
#[derive(Clone, Debug)]
pub struct ModelConfigBuilder {
    config: ModelConfig,
}

/// Setters that store their argument in the field of the same name.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

/// Setters of optional fields: the argument is stored as `Some`.
macro_rules! optional_setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = Some(value);
                self
            }
        )*
    };
}

impl ModelConfigBuilder {
    setters! {
        /// Vocabulary size.
        vocab_size: usize,
        /// Number of layers.
        n_layer: usize,
        /// Attention heads per block.
        n_head: usize,
        /// Width of the residual stream.
        d_model: usize,
        /// Longest context in tokens.
        block_size: usize,
        /// Feed-forward variant.
        mlp: MlpKind,
        /// MLP hidden width as a multiple of `d_model`.
        mlp_ratio: f64,
        /// Normalisation layer.
        norm: NormKind,
        /// Position encoding.
        positions: PositionKind,
        /// Biases in linear layers and LayerNorm.
        bias: bool,
        /// Share the token embedding with the output head.
        tied_embeddings: bool,
        /// RMSNorm of every head's queries and keys (no gains).
        qk_norm: bool,
        /// Zero initial attention and MLP output projections.
        zero_init_projections: bool,
        /// Zero initial untied head.
        zero_init_head: bool,
        /// Dropout probability.
        dropout: f64,
        /// Dtype of matrix products.
        precision: Precision,
        /// The depth methods of `[model.depth]` (value residual, LAuReL).
        depth: crate::config::DepthConfig,
    }

    optional_setters! {
        /// Width of one attention head (default `d_model / n_head`).
        head_dim: usize,
        /// MLP hidden width (parameter tokens for Pattention), overriding `mlp_ratio`.
        mlp_hidden: usize,
        /// Pattention's score scale τ.
        pattention_tau: f64,
        /// Epsilon of the norms.
        norm_eps: f64,
        /// Logit soft-cap `cap` in `cap · tanh(logits / cap)`.
        logit_softcap: f64,
        /// Weight-shared depth.
        sharing: SharingConfig,
        /// Low-rank adapters.
        lora: LoraConfig,
    }

    /// A DenseFormer with dilation `k` and period `p` (`1, 1`: a DWA after every block).
    pub fn dwa(mut self, dilation: usize, period: usize) -> Self {
        self.config.dwa = Some(DwaConfig { dilation, period });
        self
    }

    /// The config, after [`ModelConfig::validate`] (errors name `model config (builder)`).
    pub fn build(self) -> Result<ModelConfig> {
        self.config.validate("model config (builder)")?;
        Ok(self.config)
    }
}
