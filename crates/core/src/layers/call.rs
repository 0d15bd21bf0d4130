//! What every layer of one forward pass shares.

use super::Rotary;
use crate::config::ModelConfig;

/// The context of one forward pass, the same for every layer: the model config (precision,
/// dropout, ...), the rotary table (rotary positions only) and whether it trains (dropout
/// applies). The per-layer state (the value residual's mix, a layer's KV cache) is passed
/// beside it.
#[derive(Clone, Copy, Debug)]
pub struct LayerCall<'a> {
    /// The model's config.
    pub config: &'a ModelConfig,
    /// The rotary table, with rotary positions.
    pub rotary: Option<&'a Rotary>,
    /// True while training (dropout on).
    pub train: bool,
}
