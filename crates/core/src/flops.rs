//! Training compute of a model, counted from its config (Kaplan et al. 2020, eq. 2.2 style):
//! per token, a forward pass costs 2 FLOPs per weight of every matrix product it runs (each
//! layer's attention and MLP matrices, once per layer even when layers share a block, and the
//! output head) plus `2 · n_layer · T · d` for attention scores and weighted values over a
//! context of `T`; a training step costs three forward passes. Norms, softmax, DWA averages
//! and the embedding lookup are left out (they are below 1% at these sizes).

use crate::config::{MlpKind, ModelConfig};

/// Weights that one layer multiplies by (attention projections and MLP matrices, no biases).
pub fn matmul_weights_per_layer(config: &ModelConfig) -> f64 {
    let d = config.d_model as f64;
    let hidden = config.mlp_hidden() as f64;
    let mlp_matrices = match config.mlp {
        MlpKind::Gelu => 2.0,
        MlpKind::Swiglu => 3.0,
    };
    4.0 * d * d + mlp_matrices * d * hidden
}

/// Forward FLOPs per token with a context of `context` tokens.
pub fn forward_flops_per_token(config: &ModelConfig, context: usize) -> f64 {
    let layers = config.n_layer as f64;
    let d = config.d_model as f64;
    let head = config.vocab_size as f64 * d;
    2.0 * (layers * matmul_weights_per_layer(config) + head) + 2.0 * layers * context as f64 * d
}

/// Training FLOPs (forward and backward) of one step of `batch` sequences of `context` tokens.
pub fn train_flops_per_step(config: &ModelConfig, batch: usize, context: usize) -> f64 {
    3.0 * forward_flops_per_token(config, context) * (batch * context) as f64
}
