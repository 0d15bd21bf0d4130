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
//!
//! **Block AttnRes** (the paper's memory-saving variant) groups the sublayers into blocks of
//! `S` (`2n` for `n` layers per block): a block's outputs are summed into one value, as the
//! residual stream would sum them, and sublayer `k` reads the embedding, the finished blocks
//! and, when its own block has begun, that block's partial sum. With `S = 1` every output is
//! its own block and this is the full form above; at zero queries the input is again the
//! baseline's stream over the number of values. Only the finished blocks are kept as values,
//! so memory grows with the number of blocks rather than of layers.

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
    /// Sublayers per block (1: every output is a value).
    block: usize,
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
        self.keys.push(key_of(&value, width)?);
        self.values.push(value);
        Ok(())
    }
}

/// The sublayer outputs of the current value block, summed; a full block becomes a value.
#[derive(Debug)]
pub struct BlockSum {
    size: usize,
    count: usize,
    partial: Option<Tensor>,
}

impl BlockSum {
    /// An empty block of `size` sublayers (at least 1).
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            count: 0,
            partial: None,
        }
    }

    /// The current block's partial sum; `None` before its first output.
    pub fn partial(&self) -> Option<&Tensor> {
        self.partial.as_ref()
    }

    /// Adds a sublayer's output to the block; a full block's sum is pushed onto `seen`.
    pub fn add(&mut self, output: Tensor, seen: &mut DepthValues, width: i64) -> Result<()> {
        let sum = match self.partial.take() {
            Some(partial) => partial.f_add(&output)?,
            None => output,
        };
        self.count += 1;
        if self.count < self.size {
            self.partial = Some(sum);
            return Ok(());
        }
        self.count = 0;
        seen.push(sum, width)
    }
}

/// The key of a value `[..., D]`: its RMSNorm without gain.
fn key_of(value: &Tensor, width: i64) -> Result<Tensor> {
    Ok(value.f_rms_norm([width].as_slice(), None::<&Tensor>, KEY_NORM_EPS)?)
}

impl AttnRes {
    /// Queries for `n_layer` blocks of width `d_model` under `path` (`path.<k>.query`), with
    /// `block` sublayers per value ([`crate::DepthConfig::attn_res_block_sublayers`]).
    pub fn new(path: &nn::Path, n_layer: usize, d_model: usize, block: usize) -> Result<Self> {
        let d = d_model as i64;
        Ok(Self {
            queries: (1..=2 * n_layer)
                .map(|k| (path / k).f_zeros("query", &[d]))
                .collect::<std::result::Result<_, _>>()?,
            width: d,
            block: block.max(1),
        })
    }

    /// Sublayers summed into one value (1: every output is a value).
    pub fn block_sublayers(&self) -> usize {
        self.block
    }

    /// The width of the values.
    pub fn width(&self) -> i64 {
        self.width
    }

    /// The query of sublayer `k` (`None` for `k = 0`, which has none).
    pub fn query(&self, k: usize) -> Option<&Tensor> {
        k.checked_sub(1).and_then(|i| self.queries.get(i))
    }

    /// The input of sublayer `k`: the softmax-weighted sum of `seen`'s values and, when
    /// given, the current block's partial sum (the only value for `k = 0`).
    pub fn read(&self, k: usize, seen: &DepthValues, partial: Option<&Tensor>) -> Result<Tensor> {
        let Some(query) = self.query(k) else {
            return Ok(seen.values[0].shallow_clone());
        };
        let mut keys: Vec<&Tensor> = seen.keys.iter().collect();
        let mut values: Vec<&Tensor> = seen.values.iter().collect();
        let partial_key;
        if let Some(partial) = partial {
            partial_key = key_of(partial, self.width)?;
            keys.push(&partial_key);
            values.push(partial);
        }
        let keys = Tensor::f_stack(&keys, 0)?; // [J, ..., D]
        let values = Tensor::f_stack(&values, 0)?;
        let weights = keys
            .f_matmul(&query.f_to_kind(keys.kind())?)? // [J, ...]
            .f_softmax(0, keys.kind())?
            .f_unsqueeze(-1)?;
        Ok(values
            .f_mul(&weights)?
            .f_sum_dim_intlist([0i64].as_slice(), false, values.kind())?)
    }
}
