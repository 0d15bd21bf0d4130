//! TokenFormer's parameter-token growth for Pattention MLPs.
//!
//! A Pattention layer scores the input against `n` key tokens and mixes `n` value tokens,
//! `gelu(τ · a / ‖a‖₂) · V` with `a = x · Kᵀ`. A token with a zero key scores exactly 0: it
//! adds `gelu(0) · v = 0` whatever its value, and it leaves `‖a‖₂` unchanged. So appending
//! tokens with zero keys keeps the function, provided τ stays fixed (the grown config records
//! it). The new values start small and random, so the new keys get gradients from the first
//! step. Had both keys and values started at zero, neither would ever get a gradient.

use crate::axis::AxisMap;
use crate::widen::{Fresh, Rule, linear_rules, transform};
use crate::{Snapshot, not_larger};
use strata_core::schema::{BlockLayer, Location};
use strata_core::{MlpKind, ModelConfig};
use strata_tensor::{Error, Result};

/// Config with `tokens` parameter tokens per Pattention layer and τ fixed.
pub fn config(config: &ModelConfig, tokens: usize) -> Result<ModelConfig> {
    if config.mlp != MlpKind::Pattention {
        return Err(Error::Invalid(format!(
            "growth grow_param_tokens: expected model.mlp = \"pattention\", found {:?}",
            config.mlp
        )));
    }
    let current = config.mlp_hidden();
    if tokens <= current {
        return Err(not_larger("grow_param_tokens", "tokens", current, tokens));
    }
    let mut grown = config.clone();
    grown.pattention_tau = Some(config.pattention_tau());
    grown.mlp_hidden = Some(tokens);
    Ok(grown)
}

/// Appends parameter tokens: zero keys (`c_fc` rows), small random values (`c_proj`
/// columns, standard deviation 0.02); their moments start at zero.
pub fn apply(snapshot: &Snapshot, config: ModelConfig) -> Result<Snapshot> {
    let (old, new) = (snapshot.config.mlp_hidden(), config.mlp_hidden());
    let extend = AxisMap::extend(old, new - old);
    transform(
        "grow_param_tokens",
        snapshot,
        config,
        0.0,
        |location, slot| match location {
            Location::Block {
                layer: BlockLayer::MlpIn,
                ..
            } => linear_rules(slot, Some(Rule::new(0, &extend, Fresh::Zero)), None),
            Location::Block {
                layer: BlockLayer::MlpOut,
                ..
            } => linear_rules(slot, None, Some(Rule::new(1, &extend, Fresh::Normal(0.02)))),
            _ => Vec::new(),
        },
    )
}
