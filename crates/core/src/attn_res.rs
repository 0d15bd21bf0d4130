//! Attention residuals (AttnRes; Kimi Team, arXiv 2603.15031).
//!
//! The residual stream is replaced by softmax attention over depth. The values are the
//! embedding output `v₀` and every sublayer's branch output `vⱼ = fⱼ(inputⱼ)` (attention and
//! MLP separately, without the residual add), and each sublayer reads
//!
//! ```text
//! input_k = Σⱼ αⱼ · vⱼ,    αⱼ = softmaxⱼ(w_k · RMSNorm(vⱼ))      (j over the values so far)
//! ```
//!
//! with one learned pseudo-query `w_k` `[D]` per sublayer (`attnres.<k>.query`, `k = 2i` before
//! block `i`'s attention, `2i + 1` before its MLP) and one more, `attnres.<2L>.query`, for the
//! final norm's input. The first attention has only the embedding to read, which a softmax
//! over one value returns whatever its query, so it has none (`k` starts at 1). The RMSNorm of the keys has no gain (a gain would only rescale the
//! query). Queries start at zero, so every input is the mean of the values so far: the
//! baseline's residual stream (their sum) divided by their count, which the pre-norm of the
//! next sublayer (and the final norm) removes up to its ε. AttnRes so starts as the baseline up
//! to the norms' ε and rounding. The cost per token: one RMSNorm per value and, per query, a
//! dot product and a weighted sum over the values so far.

use strata_tensor::Result;
use tch::{Tensor, nn};

/// Epsilon of the keys' RMSNorm.
pub const KEY_NORM_EPS: f64 = 1e-6;

/// The pseudo-queries of a model's attention residuals.
#[derive(Debug)]
pub struct AttnRes {
    /// `w_k` `[D]` for `k = 1..=2L` (at index `k - 1`), zeros at init.
    pub queries: Vec<Tensor>,
    width: i64,
}

/// The values read so far and their normalised keys.
#[derive(Debug, Default)]
pub struct DepthValues {
    values: Vec<Tensor>,
    keys: Vec<Tensor>,
}

impl DepthValues {
    /// Adds a value `[..., D]` (and its key).
    pub fn push(&mut self, value: Tensor, width: i64) -> Result<()> {
        let key = value.f_rms_norm([width].as_slice(), None::<&Tensor>, KEY_NORM_EPS)?;
        self.values.push(value);
        self.keys.push(key);
        Ok(())
    }
}

impl AttnRes {
    /// Queries for `n_layer` blocks of width `d_model` under `path` (`path.<k>.query`).
    pub fn new(path: &nn::Path, n_layer: usize, d_model: usize) -> Self {
        let d = d_model as i64;
        Self {
            queries: (1..=2 * n_layer)
                .map(|k| (path / k).zeros("query", &[d]))
                .collect(),
            width: d,
        }
    }

    /// The width of the values.
    pub fn width(&self) -> i64 {
        self.width
    }

    /// The query of sublayer `k` (`None` for `k = 0`, which has none).
    pub fn query(&self, k: usize) -> Option<&Tensor> {
        k.checked_sub(1).and_then(|i| self.queries.get(i))
    }

    /// The input of sublayer `k`: the softmax-weighted sum of `seen`'s values (the only value
    /// for `k = 0`).
    pub fn read(&self, k: usize, seen: &DepthValues) -> Result<Tensor> {
        let Some(query) = self.query(k) else {
            return Ok(seen.values[0].shallow_clone());
        };
        let keys = Tensor::f_stack(&seen.keys, 0)?; // [J, ..., D]
        let values = Tensor::f_stack(&seen.values, 0)?;
        let weights = keys
            .f_matmul(&query.f_to_kind(keys.kind())?)? // [J, ...]
            .f_softmax(0, keys.kind())?
            .f_unsqueeze(-1)?;
        Ok(values
            .f_mul(&weights)?
            .f_sum_dim_intlist([0i64].as_slice(), false, values.kind())?)
    }
}
