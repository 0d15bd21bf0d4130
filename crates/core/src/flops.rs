//! Training compute of a model, counted from its config (Kaplan et al. 2020, eq. 2.2 style):
//! per token, a forward pass costs 2 FLOPs per weight of every matrix product it runs (each
//! layer's attention and MLP matrices, once per layer even when layers share a block, and the
//! output head) plus `2 · n_layer · T · A` (`A = n_head · head_dim`) for attention scores and weighted values over a
//! context of `T`; a training step costs three forward passes. A LoRA adapter `B · A` on a
//! linear runs `x · Aᵀ` and then `· Bᵀ`, 2 FLOPs per adapter weight, `2 · rank · (in + out)`
//! per adapted linear per layer (and once for an adapted head). Norms, softmax, DWA averages
//! and the embedding lookup are left out (they are below 1% at these sizes).

use crate::config::{MlpKind, ModelConfig};
use crate::schema::{self, Location, Role};

/// Weights that one layer multiplies by (attention projections, MLP matrices and their LoRA
/// adapters, no biases).
pub fn matmul_weights_per_layer(config: &ModelConfig) -> f64 {
    let d = config.d_model as f64;
    let attn = config.attn_width() as f64;
    let hidden = config.mlp_hidden() as f64;
    let mlp_matrices = match config.mlp {
        MlpKind::Gelu | MlpKind::Relu2 | MlpKind::Pattention => 2.0,
        MlpKind::Swiglu => 3.0,
    };
    4.0 * d * attn + mlp_matrices * d * hidden + lora_weights(config, |l| l.block() == Some(0))
}

/// Adapter weights `rank · (in + out)` (the elements of `A` and `B`) of the adapted linears
/// at locations `at` accepts (block 0: one layer's, every block having the same shapes; the
/// head).
fn lora_weights(config: &ModelConfig, at: impl Fn(Location) -> bool) -> f64 {
    schema::schema(config)
        .iter()
        .filter(|s| matches!(s.role, Role::LoraA | Role::LoraB) && at(s.location))
        .map(|s| s.numel() as f64)
        .sum()
}

/// Forward FLOPs per token with a context of `context` tokens.
pub fn forward_flops_per_token(config: &ModelConfig, context: usize) -> f64 {
    let layers = config.n_layer as f64;
    let head = config.vocab_size as f64 * config.d_model as f64
        + lora_weights(config, |l| l == Location::Head);
    let attn = config.attn_width() as f64;
    2.0 * (layers * matmul_weights_per_layer(config) + head) + 2.0 * layers * context as f64 * attn
}

/// Training FLOPs (forward and backward) of one step of `batch` sequences of `context` tokens.
pub fn train_flops_per_step(config: &ModelConfig, batch: usize, context: usize) -> f64 {
    3.0 * forward_flops_per_token(config, context) * (batch * context) as f64
}
