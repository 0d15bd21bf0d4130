//! [`KvCache`]: the keys and values of the tokens a model has already seen, so that
//! generation feeds each new token once instead of re-running the whole context.
//!
//! What is cached is the usual K/V per layer, and nothing else for any depth method: DWA,
//! LAuReL and hyper-connections mix a position's own block outputs (or streams) only, so a
//! new token needs none of the earlier positions' outputs; the value residual mixes each
//! layer's values with the first layer's values *of the same position*, and the cache keeps
//! every layer's values after that mix, which is all later tokens attend to. Memory:
//! `2 · n_layer · T · n_head · head_dim` floats for `T` cached tokens (batch 1), the same
//! for every method; a layer repeated by `[sharing]` gets its own entry per application.

use strata_tensor::{Error, Result};
use tch::Tensor;

/// The cached keys and values of one layer application, `[B, n_head, T, head_dim]` each.
#[derive(Debug, Default)]
pub struct LayerKv {
    keys: Option<Tensor>,
    values: Option<Tensor>,
}

impl LayerKv {
    /// Tokens cached.
    pub fn len(&self) -> i64 {
        self.keys.as_ref().map_or(0, |k| k.size()[2])
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the new tokens' `keys` and `values` and returns every cached token's.
    pub fn extend(&mut self, keys: Tensor, values: Tensor) -> Result<(Tensor, Tensor)> {
        let join = |old: &Option<Tensor>, new: Tensor| -> Result<Tensor> {
            Ok(match old {
                Some(old) => Tensor::f_cat(&[old, &new], 2)?,
                None => new,
            })
        };
        let keys = join(&self.keys, keys)?;
        let values = join(&self.values, values)?;
        self.keys = Some(keys.shallow_clone());
        self.values = Some(values.shallow_clone());
        Ok((keys, values))
    }
}

/// The keys and values of every layer application of a model, and how many tokens they
/// hold.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    tokens: i64,
    limit: i64,
}

impl KvCache {
    /// An empty cache for `layers` layer applications and at most `limit` tokens (the
    /// model's block size).
    pub fn new(layers: usize, limit: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| LayerKv::default()).collect(),
            tokens: 0,
            limit: limit as i64,
        }
    }

    /// Tokens cached (the position of the next token fed).
    pub fn len(&self) -> i64 {
        self.tokens
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    /// How many more tokens fit.
    pub fn room(&self) -> i64 {
        self.limit - self.tokens
    }

    /// Bytes the cache holds now.
    pub fn bytes(&self) -> i64 {
        self.layers
            .iter()
            .flat_map(|l| [&l.keys, &l.values])
            .flatten()
            .map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
            .sum()
    }

    /// Checks that `new` more tokens fit, before a forward pass adds them.
    pub(crate) fn check_room(&self, new: i64) -> Result<()> {
        if new > self.room() {
            return Err(Error::Shape {
                op: "cached forward".to_owned(),
                expected: format!(
                    "at most {} new tokens ({} cached of the block size {})",
                    self.room(),
                    self.tokens,
                    self.limit
                ),
                got: format!("{new} tokens"),
            });
        }
        Ok(())
    }

    /// The cache of layer application `i`.
    pub(crate) fn layer(&mut self, i: usize) -> Result<&mut LayerKv> {
        let n = self.layers.len();
        self.layers.get_mut(i).ok_or_else(|| {
            Error::Invalid(format!(
                "the KV cache has {n} layers, the model asked for layer {i}"
            ))
        })
    }

    /// Records that a forward pass added `new` tokens.
    pub(crate) fn advance(&mut self, new: i64) {
        self.tokens += new;
    }
}
