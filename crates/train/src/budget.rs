//! Memory a run or an evaluation will need, estimated from its config before anything is
//! allocated, so that an oversized batch or model is refused with the fields to change and
//! the bytes it would need, instead of failing inside libtorch.
//!
//! The estimates are lower bounds (f32 weights, gradients and AdamW moments; the activations
//! every layer keeps for the backward pass; the logits; the token batches), counted in `f64`
//! so that no size overflows. They leave out the attention score matrices and allocator
//! slack, so a config they pass may still run out of memory; one they refuse cannot run.

use crate::config::{RunConfig, TrainConfig};
use crate::growth_schedule;
use crate::optimizer::{OptimizerKind, ParamGroup};
use strata_core::ModelConfig;
use strata_tensor::{Error, Result};
use tch::Device;

/// Bytes of one f32 value.
const F32: f64 = 4.0;
/// Bytes of one Int64 token id.
const I64: f64 = 8.0;

/// Estimated bytes of one use of a model, by what holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryNeed {
    /// Weights (and, for training, gradients and the optimizer state).
    pub model: f64,
    /// Activations of one step: kept for the backward pass when training, one layer's and
    /// the logits when evaluating.
    pub activations: f64,
    /// Token batches held at once (a training batch and the fixed evaluation batches).
    pub batches: f64,
}

impl MemoryNeed {
    /// All of it.
    pub fn total(&self) -> f64 {
        self.model + self.activations + self.batches
    }
}

/// Parameters of `model`: every tensor of its parameter schema, counted in `f64` so that a
/// config at the bounds overflows no integer.
pub fn parameter_count(model: &ModelConfig) -> f64 {
    strata_core::schema::schema(model)
        .iter()
        .map(|spec| spec.shape.iter().map(|&n| n as f64).product::<f64>())
        .sum()
}

/// Activation bytes of one forward pass over `batch_size` full blocks: every layer's when
/// `training` (kept for backward), one layer's otherwise; plus the logits (twice when
/// training: the logits and the log-probabilities the loss keeps).
fn activation_bytes(model: &ModelConfig, batch_size: usize, training: bool) -> f64 {
    let tokens = batch_size as f64 * model.block_size as f64;
    let d = model.d_model as f64;
    let per_layer =
        tokens * (3.0 * d + 4.0 * model.attn_width() as f64 + 2.0 * model.mlp_hidden() as f64);
    let layers = if training { model.n_layer as f64 } else { 1.0 };
    let stack = if model.dwa.is_some() {
        (model.n_layer as f64 + 1.0) * tokens * d
    } else {
        0.0
    };
    let logits = tokens * model.vocab_size as f64 * if training { 2.0 } else { 1.0 };
    let depth = tokens * depth_floats_per_token(model, training);
    F32 * (layers * per_layer + stack + depth + logits)
}

/// Floats per token that the `[model.depth]` methods hold beyond the layers' own
/// activations: hyper-connections their `n` streams (per layer when `training`), attention
/// residuals every value and its normalised key (`2·(2L + 1)·D`; with blocks of `n` layers
/// `2·(1 + ⌈L/n⌉)·D`), MUDD its stored outputs
/// outside autograd (`(L + 1)·D`) and, when `training`, the outputs each layer's sums stack
/// (`i + 2` at layer `i`) and the four ways they make.
pub fn depth_floats_per_token(model: &ModelConfig, training: bool) -> f64 {
    let (l, d) = (model.n_layer as f64, model.d_model as f64);
    let mut floats = 0.0;
    if let Some(hyper) = model.depth.hyper {
        floats += hyper.streams as f64 * d * if training { l } else { 1.0 };
    }
    if model.depth.attn_res {
        let block = model.depth.attn_res_block_sublayers();
        let values = 1 + (2 * model.n_layer).div_ceil(block);
        floats += 2.0 * values as f64 * d;
    }
    if model.depth.mudd {
        floats += if training {
            (0..model.n_layer).map(|i| (i as f64 + 2.0 + 4.0) * d).sum()
        } else {
            (l + 1.0) * d
        };
    }
    floats
}

/// Bytes of `count` batches of inputs and targets, `batch_size × block_size` token ids each.
fn batch_bytes(model: &ModelConfig, batch_size: usize, count: f64) -> f64 {
    2.0 * I64 * count * batch_size as f64 * model.block_size as f64
}

/// Bytes of the weights, gradients and optimizer state of `model` trained with `t`'s
/// optimizer: AdamW keeps two moments per value, Muon one momentum buffer per value of the
/// hidden matrices it takes (`[train.optimizer] kind = "muon"`).
pub fn model_state_bytes(model: &ModelConfig, t: &TrainConfig) -> f64 {
    let muon = t.optimizer.kind == OptimizerKind::Muon;
    strata_core::schema::schema(model)
        .iter()
        .map(|spec| {
            let values = spec.shape.iter().map(|&n| n as f64).product::<f64>();
            let state = if muon && ParamGroup::of(spec.role) == ParamGroup::Hidden {
                1.0
            } else {
                2.0
            };
            F32 * (2.0 + state) * values
        })
        .sum()
}

/// What training `model` with the settings `t` needs: weights, gradients and optimizer
/// state, one step's activations, a batch being drawn and both splits' fixed evaluation
/// batches.
pub fn training_need(model: &ModelConfig, t: &TrainConfig) -> MemoryNeed {
    MemoryNeed {
        model: model_state_bytes(model, t),
        activations: activation_bytes(model, t.batch_size, true),
        // The batch drawn (index, windows, inputs and targets) and the evaluation batches.
        batches: batch_bytes(model, t.batch_size, 2.0 + 2.0 * t.eval_iters as f64),
    }
}

/// What evaluating `model` on `batches` batches of `batch_size` per split needs, when the
/// batches of both splits are held at once.
pub fn evaluation_need(model: &ModelConfig, batch_size: usize, batches: usize) -> MemoryNeed {
    MemoryNeed {
        model: F32 * parameter_count(model),
        activations: activation_bytes(model, batch_size, false),
        batches: batch_bytes(model, batch_size, 2.0 * batches as f64),
    }
}

/// Bytes `device` can still hand out: free device memory on a GPU, available RAM plus free
/// swap on the CPU; `None` when unknown (the checks are then skipped).
pub fn available_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cpu => crate::memory::available_bytes(),
        _ => strata_kernels::device_memory::free_and_total_bytes(device).map(|(free, _)| free),
    }
}

/// `bytes` for people: `512 B`, `3.2 MiB`, `5.1 TiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `None` when `need` fits in `available` bytes (or `available` is unknown), otherwise what
/// it needs against what there is, e.g. `needs at least 5.1 TiB (model 3.1 MiB, activations
/// 5.0 TiB, batches 95.4 GiB), but Cpu has 12.0 GiB available`.
pub fn shortfall(need: &MemoryNeed, available: Option<u64>, device: Device) -> Option<String> {
    let available = available? as f64;
    (need.total() > available).then(|| {
        format!(
            "needs at least {} (model {}, activations {}, batches {}), but {device:?} has {} \
             available",
            human_bytes(need.total()),
            human_bytes(need.model),
            human_bytes(need.activations),
            human_bytes(need.batches),
            human_bytes(available)
        )
    })
}

/// Refuses a run whose training would not fit in `device`'s memory, naming the config
/// fields to change; checks the largest model of a growth schedule. `file` names the config.
pub fn check_run(
    config: &RunConfig,
    model: &ModelConfig,
    device: Device,
    file: &str,
) -> Result<()> {
    let grown = growth_schedule::model_after(&config.growth, model, config.growth.len())?;
    let t = &config.train;
    let need = training_need(&grown, t);
    let Some(short) = shortfall(&need, available_bytes(device), device) else {
        return Ok(());
    };
    if need.model >= need.activations + need.batches {
        return Err(Error::config(
            file,
            "model",
            format!(
                "a model that fits in memory: model.n_layer = {}, model.d_model = {} and \
                 model.vocab_size = {} give {:.3e} parameters, and training them {short}",
                grown.n_layer,
                grown.d_model,
                grown.vocab_size,
                parameter_count(&grown)
            ),
            format!("{:.3e} parameters", parameter_count(&grown)),
        ));
    }
    Err(Error::config(
        file,
        "train.batch_size",
        format!(
            "a batch that fits in memory: train.batch_size = {} × model.block_size = {} tokens \
             (with train.eval_iters = {} evaluation batches per split) {short}; lower \
             train.batch_size or model.block_size",
            t.batch_size, grown.block_size, t.eval_iters
        ),
        t.batch_size,
    ))
}

/// Refuses building `model` on `device` when its weights alone cannot fit; `source` names
/// where the config came from (a checkpoint).
pub fn check_model(model: &ModelConfig, device: Device, source: &std::path::Path) -> Result<()> {
    let need = MemoryNeed {
        model: F32 * parameter_count(model),
        ..MemoryNeed::default()
    };
    match shortfall(&need, available_bytes(device), device) {
        None => Ok(()),
        Some(short) => Err(Error::checkpoint(
            source,
            format!(
                "its model config (model.n_layer = {}, model.d_model = {}, model.vocab_size = {}) \
                 {short}",
                model.n_layer, model.d_model, model.vocab_size
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_the_largest_unit_below_the_value() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(5.0 * 1024f64.powi(4)), "5.0 TiB");
    }

    #[test]
    fn shortfall_only_when_the_need_exceeds_what_is_known_to_be_available() {
        let need = MemoryNeed {
            model: 100.0,
            activations: 50.0,
            batches: 10.0,
        };
        assert_eq!(shortfall(&need, None, Device::Cpu), None);
        assert_eq!(shortfall(&need, Some(160), Device::Cpu), None);
        let short = shortfall(&need, Some(159), Device::Cpu).unwrap();
        assert!(
            short.contains("160 B") && short.contains("159 B"),
            "{short}"
        );
    }
}
