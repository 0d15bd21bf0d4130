//! Shared helpers for the trainer tests: a tiny config and a small corpus.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use strata_core::Gpt;
use strata_train::RunConfig;
use strata_train::checkpoint::{self, Checkpoint};
use strata_train::evaluation::{LossEstimate, validation_set};
use strata_train::prepare::prepare_data;
use tch::{Device, nn};

/// The smallest complete run config (2 layers of width 8, 10 steps), as TOML text.
pub const BASE: &str = r#"
[model]
n_layer = 2
n_head = 2
d_model = 8
block_size = 4
[train]
batch_size = 2
max_iters = 10
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 1
eval_interval = 5
eval_iters = 1
"#;

/// A small text corpus written to `dir/corpus.txt`.
pub fn corpus(dir: &Path) -> PathBuf {
    let text = strata_train::prepare::TINY_SHAKESPEARE[..20_000].to_owned();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// A tiny run config over `corpus`: 2 blocks of width 32, block 16, `iters` steps.
pub fn tiny_config(corpus: &Path, iters: u64, dwa: bool, dropout: f64) -> RunConfig {
    let dwa = if dwa {
        "\n[model.dwa]\ndilation = 1\nperiod = 1\n"
    } else {
        ""
    };
    let text = format!(
        r#"
name = "tiny"
[model]
n_layer = 2
n_head = 2
d_model = 32
block_size = 16
dropout = {dropout}
{dwa}
[data]
path = "{}"
tokenizer = "char"
[train]
batch_size = 8
max_iters = {iters}
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 5
weight_decay = 0.1
eval_interval = 10
eval_iters = 2
log_interval = 1
device = "cpu"
"#,
        corpus.display()
    );
    RunConfig::parse(&text, "tiny.toml", "tiny", &[]).unwrap()
}

/// The checkpoint at `path` (a checkpoint folder or a run folder's latest) with its model
/// built on CPU.
pub fn load_model(path: &Path) -> strata_tensor::Result<(Checkpoint, nn::VarStore, Gpt)> {
    let ckpt = checkpoint::load(path)?;
    let (vs, model) = checkpoint::load_model(&ckpt, Device::Cpu)?;
    Ok((ckpt, vs, model))
}

/// The validation loss of the checkpoint at `path` on its run's validation set, measured
/// apart from any run (as `strata eval` measures it).
pub fn checkpoint_val_loss(path: &Path) -> LossEstimate {
    let (ckpt, _vs, model) = load_model(path).unwrap();
    let config = &ckpt.meta.config;
    let data = prepare_data(config, Some(ckpt.tokenizer.clone())).unwrap();
    let block = config.model.block_size;
    validation_set(&config.train, &data.splits, block, Device::Cpu)
        .unwrap()
        .evaluate(&model)
        .unwrap()
}
