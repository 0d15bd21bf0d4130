//! Retrofit: a trained model continues with depth methods added (DenseFormer's DWA, the
//! `[model.depth]` methods), the way the DenseFormer paper switched DWA on late.
//!
//! The run's own model config must equal the checkpoint's plus depth methods: every other
//! field the same, and the checkpoint's model without depth methods of its own. Every
//! checkpoint tensor is copied into the new model; the new methods' tensors (and only they)
//! take their initial values, which for DWA, LAuReL, (m)HC, attention residuals and MUDD
//! compute the checkpoint's function (the value residual starts at its paper's mix instead).
//! Their learning rate is the `[train.optimizer]` group of their role (`depth_lr`, which
//! follows `scalar_lr` when absent), and the run's own warmup re-warms every rate.
//!
//! The tensors are made by the `add_depth` growth operation ([`strata_growth::depth`]), which
//! also switches methods on in the middle of one run (`[[growth]] op = "add_depth"`): that
//! path keeps the step, the schedule, the batches and the old parameters' optimizer state,
//! which is what a paired study of switching late needs.

use crate::checkpoint::{Checkpoint, restore_weights};
use strata_core::ModelConfig;
use strata_growth::depth::{self, Refusal};
use strata_growth::{GrowthOp, Snapshot};
use strata_tensor::{Error, Result};
use tch::nn;

/// The checkpoint's model with the depth methods of `wanted` removed: what the checkpoint
/// must be for a retrofit into `wanted`.
fn without_depth_methods(wanted: &ModelConfig) -> ModelConfig {
    let mut base = wanted.clone();
    base.dwa = None;
    base.depth = Default::default();
    base
}

/// Checks that `wanted` is `ckpt`'s model plus depth methods; `file` names the run config.
pub fn check(ckpt: &Checkpoint, wanted: &ModelConfig, file: &str) -> Result<()> {
    let saved = &ckpt.meta.config.model;
    let path = &ckpt.loaded.path;
    match depth::refusal(saved, wanted.dwa, &wanted.depth) {
        Some(Refusal::AlreadyHas(variant)) => {
            return Err(Error::checkpoint(
                path,
                format!(
                    "a retrofit adds depth methods to a model without them, and this checkpoint \
                     already has {variant} (model.dwa / model.depth)"
                ),
            ));
        }
        Some(Refusal::NothingToAdd) => {
            return Err(Error::config(
                file,
                "model.dwa / model.depth",
                "a depth method to add (a retrofit without one is a plain init_from)",
                "none",
            ));
        }
        None => {}
    }
    if let Some(diff) = saved.first_difference(&without_depth_methods(wanted)) {
        return Err(Error::checkpoint(
            path,
            format!(
                "does not match the base of {file}: a retrofit may only add depth methods, but \
                 {diff}"
            ),
        ));
    }
    Ok(())
}

/// The growth operation that adds `wanted`'s depth methods to a model without them.
fn add_depth_op(wanted: &ModelConfig) -> GrowthOp {
    GrowthOp::AddDepth {
        dwa: wanted.dwa,
        depth: wanted.depth.clone(),
        rewarm_steps: 0,
    }
}

/// Copies the checkpoint's weights into `vs` (a model of `wanted`) and the depth methods'
/// new tensors at their init under `seed`, as the `add_depth` growth makes them (one
/// implementation for both). Returns the new tensors' names.
pub fn restore(
    vs: &nn::VarStore,
    ckpt: &Checkpoint,
    wanted: &ModelConfig,
    seed: u64,
) -> Result<Vec<String>> {
    let snapshot = Snapshot {
        config: ckpt.meta.config.model.clone(),
        params: strata_merge::state_from(&ckpt.loaded.model)?,
        moments: None,
    };
    let grown = add_depth_op(wanted).apply(&snapshot, seed)?;
    let added: Vec<String> = grown
        .params
        .keys()
        .filter(|name| !snapshot.params.contains_key(*name))
        .cloned()
        .collect();
    let tensors: Vec<(String, tch::Tensor)> = grown.params.into_iter().collect();
    restore_weights(vs, &tensors, &ckpt.loaded.path)?;
    Ok(added)
}
