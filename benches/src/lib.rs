//! Shared fixtures of strata's criterion benchmarks (`cargo xtask bench`).

use strata_core::{Gpt, ModelConfig};
use strata_tensor::seeded;
use strata_train::optim::{AdamW, AdamWConfig};
use tch::{Device, Kind, Tensor, nn};

/// Stacked layers of the weighted-sum benchmark (12 blocks and the embeddings).
pub const WEIGHTED_SUM_LAYERS: i64 = 13;
/// Shape of one layer of the weighted-sum benchmark: batch 12 x 256 tokens x width 768.
pub const WEIGHTED_SUM_LAYER_SHAPE: [i64; 3] = [12, 256, 768];

/// The model of `configs/nanogpt-cpu.toml` (65-character vocabulary), optionally with a DWA
/// after every block.
pub fn nanogpt_cpu_model(denseformer: bool) -> ModelConfig {
    let dwa = if denseformer {
        "\n[dwa]\ndilation = 1\nperiod = 1\n"
    } else {
        ""
    };
    let text =
        format!("vocab_size = 65\nn_layer = 4\nn_head = 4\nd_model = 128\nblock_size = 64\n{dwa}");
    toml::from_str(&text).expect("the benchmark model config parses")
}

/// AdamW over every variable of `vs` with the recipe's hyperparameters (β2 as given).
pub fn adamw(vs: &nn::VarStore, beta2: f64) -> AdamW {
    AdamW::new(
        vs.variables().into_iter().collect(),
        AdamWConfig {
            beta1: 0.9,
            beta2,
            eps: 1e-8,
            weight_decay: 0.1,
        },
    )
}

/// A seeded model on the CPU and its variable store.
pub fn build(config: &ModelConfig) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = seeded(1, || Gpt::new(&vs.root(), config)).expect("valid benchmark config");
    (vs, model)
}

/// A batch of random token ids and targets `[batch, block]`.
pub fn batch(config: &ModelConfig, batch: i64) -> (Tensor, Tensor) {
    let shape = [batch, config.block_size as i64];
    let vocab = config.vocab_size as i64;
    seeded(2, || {
        (
            Tensor::randint(vocab, shape, (Kind::Int64, Device::Cpu)),
            Tensor::randint(vocab, shape, (Kind::Int64, Device::Cpu)),
        )
    })
}
