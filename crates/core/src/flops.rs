//! Training compute of a model, counted from its config (Kaplan et al. 2020, eq. 2.2 style):
//! per token, a forward pass costs 2 FLOPs per weight of every matrix product it runs (each
//! layer's attention and MLP matrices, once per layer even when layers share a block, and the
//! output head) plus `2 · n_layer · T · A` (`A = n_head · head_dim`) for attention scores and weighted values over a
//! context of `T`; a training step costs three forward passes. A LoRA adapter `B · A` on a
//! linear runs `x · Aᵀ` and then `· Bᵀ`, 2 FLOPs per adapter weight, `2 · rank · (in + out)`
//! per adapted linear per layer (and once for an adapted head). Norms, softmax, DWA averages
//! and the embedding lookup are left out (they are below 1% at these sizes). The methods of
//! `[model.depth]` are counted ([`depth_flops_per_token`]): LAuReL-LR's `B·A·x` as a matrix
//! product (`2 · 2·r·D` per layer), and the elementwise mixes of LAuReL-RW (`3·D` per layer)
//! and the value residual (`3·A` per layer after the first), and hyper-connections with `n`
//! streams: `2·D·(n² + 2n)` per layer for the static read, mix and write, plus
//! `2·n·D·(n + 2)` for the dynamic projections; attention residuals and MUDD as in
//! [`depth_flops_per_token`].

use crate::config::{LaurelKind, MlpKind, ModelConfig};
use crate::schema::{self, Location, Role};

/// Weights that one layer multiplies by (attention projections, MLP matrices and their LoRA
/// adapters, no biases).
pub fn matmul_weights_per_layer(config: &ModelConfig) -> f64 {
    let d = config.d_model as f64;
    let attn = config.attn_width() as f64;
    let hidden = config.mlp_hidden() as f64;
    let mlp_matrices = match config.mlp {
        MlpKind::Gelu | MlpKind::GeluTanh | MlpKind::Relu2 | MlpKind::Pattention => 2.0,
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
    2.0 * (layers * matmul_weights_per_layer(config) + head)
        + 2.0 * layers * context as f64 * attn
        + depth_flops_per_token(config)
}

/// Forward FLOPs per token of the `[model.depth]` methods: LAuReL-LR `2 · 2·r·D` per layer
/// (its two matrices), LAuReL-RW `3·D` per layer (`α·out + (β − α)·x`), the value residual
/// `3·A` per layer after the first (`λ₁·V + λ₂·V₁`), hyper-connections with `n` streams
/// `2·D·(n² + 2n)` per layer (read, mix, write) plus `2·n·D·(n + 2)` when dynamic, attention
/// residuals with `Q = 2L` queries `D·(3·(Q + 1) + 2·Q·(Q + 3))` (an RMSNorm of `3·D` per value,
/// and per query `k = 1..=Q` a dot product and a weighted sum of `2·D` each over `k + 1`
/// values), MUDD per layer `i` with `C` ways over `J = i + 2` outputs (`H = C·J`) `3·D` for
/// the RMSNorm, `2·H·D + 2·H²` for the weight MLP and `2·C·J·D` for the weighted sums; 0 when
/// none is on.
pub fn depth_flops_per_token(config: &ModelConfig) -> f64 {
    let layers = config.n_layer as f64;
    let d = config.d_model as f64;
    let laurel = match config.depth.laurel {
        None => 0.0,
        Some(l) => match l.kind {
            LaurelKind::Rw => 3.0 * d,
            LaurelKind::Lr => 2.0 * 2.0 * l.rank.unwrap_or(0) as f64 * d,
        },
    };
    let value_residual = if config.depth.value_residual {
        3.0 * config.attn_width() as f64 * (layers - 1.0)
    } else {
        0.0
    };
    let hyper = match config.depth.hyper {
        None => 0.0,
        Some(h) => {
            let n = h.streams as f64;
            let dynamic = if h.dynamic {
                2.0 * n * d * (n + 2.0)
            } else {
                0.0
            };
            2.0 * d * (n * n + 2.0 * n) + dynamic
        }
    };
    let attn_res = if config.depth.attn_res {
        attn_res_flops(config.n_layer, config.depth.attn_res_block_sublayers(), d)
    } else {
        0.0
    };
    let mudd: f64 = if config.depth.mudd {
        (0..config.n_layer)
            .map(|i| {
                let h = (crate::mudd::ways(i, config.n_layer) * (i + 2)) as f64;
                3.0 * d + 2.0 * h * d + 2.0 * h * h + 2.0 * h * d
            })
            .sum()
    } else {
        0.0
    };
    layers * (laurel + hyper) + value_residual + attn_res + mudd
}

/// Training FLOPs (forward and backward) of one step of `batch` sequences of `context` tokens.
pub fn train_flops_per_step(config: &ModelConfig, batch: usize, context: usize) -> f64 {
    3.0 * forward_flops_per_token(config, context) * (batch * context) as f64
}

/// Forward FLOPs per token of attention residuals over `n_layer` layers of width `d`, with
/// `block` sublayers summed per value (1: a value per sublayer; [`crate::attn_res`]): an
/// RMSNorm (3 FLOPs per element) per key, a dot product and a weighted sum per value read,
/// and one add per output summed into a block. With one value per sublayer this is
/// `d·(3·(q + 1) + 2·q·(q + 3))`, `q = 2·n_layer`.
pub fn attn_res_flops(n_layer: usize, block: usize, d: f64) -> f64 {
    let sublayers = 2 * n_layer;
    let block = block.max(1);
    let blocks = sublayers.div_ceil(block);
    // The embedding's key and each finished block's, once; each summing add.
    let mut total = 3.0 * d * (1 + sublayers / block) as f64 + d * (sublayers - blocks) as f64;
    for k in 1..=sublayers {
        let partial = k % block != 0;
        let values = 1 + k / block + usize::from(partial);
        total += 4.0 * d * values as f64 + if partial { 3.0 * d } else { 0.0 };
    }
    total
}
