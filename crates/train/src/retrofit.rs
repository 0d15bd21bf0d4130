//! Retrofit: a trained model continues with depth methods added (DenseFormer's DWA, the
//! `[model.depth]` methods), the way the DenseFormer paper switched DWA on late.
//!
//! The run's own model config must equal the checkpoint's plus depth methods: every other
//! field the same, and the checkpoint's model without depth methods of its own. Every
//! checkpoint tensor is copied into the new model; the new methods' tensors (and only they)
//! keep their initial values, which for DWA, LAuReL and (m)HC compute the checkpoint's
//! function (the value residual starts at its paper's mix instead). Their learning rate is the
//! `[train.optimizer]` group of their role (`scalar_lr` for DWA weights and depth scalars), and
//! the run's own warmup re-warms every rate.

use crate::checkpoint::{Checkpoint, restore_weights_leaving};
use std::collections::HashSet;
use strata_core::ModelConfig;
use strata_core::schema::{self, Role};
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
    if saved.dwa.is_some() || !saved.depth.is_off() {
        return Err(Error::checkpoint(
            path,
            format!(
                "a retrofit adds depth methods to a model without them, and this checkpoint \
                 already has {} (model.dwa / model.depth)",
                saved.variant_name()
            ),
        ));
    }
    if wanted.dwa.is_none() && wanted.depth.is_off() {
        return Err(Error::config(
            file,
            "model.dwa / model.depth",
            "a depth method to add (a retrofit without one is a plain init_from)",
            "none",
        ));
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

/// Copies the checkpoint's weights into `vs` (a model of `wanted`); the depth-method tensors
/// it lacks keep their initial values. Returns their names.
pub fn restore(vs: &nn::VarStore, ckpt: &Checkpoint, wanted: &ModelConfig) -> Result<Vec<String>> {
    let added: HashSet<String> = schema::schema(wanted)
        .into_iter()
        .filter(|spec| {
            matches!(
                spec.role,
                Role::DwaWeight | Role::DepthScalar | Role::DepthMatrix
            )
        })
        .map(|spec| spec.name())
        .collect();
    restore_weights_leaving(vs, &ckpt.loaded.model, &ckpt.loaded.path, |name| {
        added.contains(name)
    })?;
    let mut names: Vec<String> = added.into_iter().collect();
    names.sort();
    Ok(names)
}
