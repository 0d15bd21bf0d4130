//! Identity-block insertion (Net2DeeperNet for pre-norm transformers, LLaMA Pro style).
//!
//! A new block is a copy of the block before it (the first block when inserted at the front)
//! with its attention and MLP output projections zeroed. Both residual branches then add
//! nothing, so the block passes its input through unchanged. The tensors are built by
//! `strata_merge::expand` with an `I` layer plan, the same code that `strata merge` uses.
//!
//! **DenseFormer.** The new block's output equals its input, which is the current stream
//! value, and a DWA after it starts at the identity. Every later DWA gains a zero weight for
//! the new output. The DWA pattern of a `k×p` DenseFormer must line up after insertion: a
//! DWA follows every `p`-th block and reads every `k`-th output. So each insertion point
//! takes a multiple of `lcm(k, p)` new blocks, and a request that does not keep the function
//! is refused.
//!
//! Moments: the copied blocks keep theirs, renumbered. New blocks and the DWAs after them
//! start at zero, and so do the new entries of later DWAs.

use crate::{Moments, Snapshot};
use strata_core::ModelConfig;
use strata_core::schema::{self, Location};
use strata_merge::{DwaInit, LayerPlan, PlanEntry, State, expand};
use strata_tensor::{Error, Result};
use tch::Tensor;

/// The layer plan that inserts one identity block after each count in `after`.
fn plan(config: &ModelConfig, after: &[usize]) -> Result<LayerPlan> {
    let n = config.n_layer;
    if after.is_empty() {
        return Err(Error::Invalid(
            "growth insert_blocks: `after` lists no position (expected layer counts from 0 to \
             n_layer)"
                .to_owned(),
        ));
    }
    if let Some(bad) = after.iter().find(|&&a| a > n) {
        return Err(Error::Invalid(format!(
            "growth insert_blocks: position {bad} is out of range: expected a layer count from \
             0 (before the first block) to n_layer = {n} (after the last)"
        )));
    }
    if let Some(dwa) = config.dwa {
        let group = lcm(dwa.dilation, dwa.period);
        for position in 0..=n {
            let count = after.iter().filter(|&&a| a == position).count();
            if !count.is_multiple_of(group) {
                return Err(Error::Invalid(format!(
                    "growth insert_blocks: a DenseFormer {}x{} keeps its function only when each \
                     insertion point gets a multiple of lcm(k, p) = {group} blocks; position \
                     {position} gets {count}",
                    dwa.dilation, dwa.period
                )));
            }
        }
    }
    let mut entries = Vec::with_capacity(n + after.len());
    for layer in 0..=n {
        let inserted = after.iter().filter(|&&a| a == layer).count();
        entries.extend(std::iter::repeat_n(PlanEntry::Identity, inserted));
        if layer < n {
            entries.push(PlanEntry::Source(layer));
        }
    }
    Ok(LayerPlan { entries })
}

/// Least common multiple.
fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut x: usize, mut y: usize| {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    a / gcd(a, b).max(1) * b
}

/// Config with the inserted blocks.
pub fn config(config: &ModelConfig, after: &[usize]) -> Result<ModelConfig> {
    let plan = plan(config, after)?;
    let mut grown = config.clone();
    grown.n_layer = plan.entries.len();
    Ok(grown)
}

/// Inserts identity blocks (module docs).
pub fn apply(snapshot: &Snapshot, config: ModelConfig, after: &[usize]) -> Result<Snapshot> {
    let plan = plan(&snapshot.config, after)?;
    let expanded = expand(
        &snapshot.config,
        &snapshot.params,
        &plan,
        false,
        DwaInit::Map,
    )?;
    if expanded.config.n_layer != config.n_layer {
        return Err(Error::Invalid(format!(
            "growth insert_blocks: expanded to {} layers, expected {}",
            expanded.config.n_layer, config.n_layer
        )));
    }
    let moments = match &snapshot.moments {
        None => None,
        Some(m) => Some(Moments {
            exp_avg: moved_moments(&snapshot.config, &m.exp_avg, &plan)?,
            exp_avg_sq: moved_moments(&snapshot.config, &m.exp_avg_sq, &plan)?,
        }),
    };
    Ok(Snapshot {
        config,
        params: expanded.state,
        moments,
    })
}

/// Moments renumbered like the parameters, zero for new blocks and their DWAs.
fn moved_moments(config: &ModelConfig, moments: &State, plan: &LayerPlan) -> Result<State> {
    let mut state = expand(config, moments, plan, false, DwaInit::Map)?.state;
    for (layer, entry) in plan.entries.iter().enumerate() {
        if *entry != PlanEntry::Identity {
            continue;
        }
        for (name, t) in state.iter_mut() {
            let new_here = match schema::parse(name) {
                Some((Location::Block { block, .. }, _)) => block == layer,
                Some((Location::Dwa { after }, _)) => after == layer,
                _ => false,
            };
            if new_here {
                *t = Tensor::f_zeros_like(t)?;
            }
        }
    }
    Ok(state)
}
