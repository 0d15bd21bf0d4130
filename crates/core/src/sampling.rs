//! Autoregressive sampling from a [`Gpt`].

use crate::model::Gpt;
use rand::{Rng, SeedableRng};
use strata_tensor::TensorExt;
use strata_tensor::{Error, Result};
use tch::{Kind, Tensor};

/// How to draw each next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// Softmax temperature; 0 picks the most likely token.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Seed of the sampler's own generator (independent of libtorch's global one).
    pub seed: u64,
}

/// Where the next token's logits come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    /// The KV cache: each token is fed once. Once the sequence outgrows the block size, the
    /// cache is refilled with the window the uncached path sees (the last `block_size`
    /// tokens) for every token, so both paths always condition on the same tokens and past
    /// the block size cached sampling costs what uncached sampling does.
    Cached,
    /// The whole context (the last `block_size` tokens) is re-run for every token.
    Uncached,
}

impl Gpt {
    /// Extends `prompt` by `new_tokens` sampled tokens and returns the whole sequence,
    /// feeding each token once through a KV cache ([`Gpt::forward_cached`]).
    pub fn generate(
        &self,
        prompt: &[i64],
        new_tokens: usize,
        options: &SampleOptions,
    ) -> Result<Vec<i64>> {
        self.sample(prompt, new_tokens, options, Context::Cached)
    }

    /// [`Gpt::generate`] without the cache: the whole context is re-run for every token
    /// (the reference the cached path is tested and benchmarked against).
    pub fn generate_uncached(
        &self,
        prompt: &[i64],
        new_tokens: usize,
        options: &SampleOptions,
    ) -> Result<Vec<i64>> {
        self.sample(prompt, new_tokens, options, Context::Uncached)
    }

    /// The sampling loop over either context.
    fn sample(
        &self,
        prompt: &[i64],
        new_tokens: usize,
        options: &SampleOptions,
        context: Context,
    ) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::Invalid(
                "sampling needs a prompt of at least one token".to_owned(),
            ));
        }
        if !(options.temperature >= 0.0 && options.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature must be finite and >= 0, got {}",
                options.temperature
            )));
        }
        let _guard = tch::no_grad_guard();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(options.seed);
        let block = self.config().block_size;
        let mut ids = prompt.to_vec();
        let mut cache = self.kv_cache();
        let input = |tokens: &[i64]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(tokens)?
                .f_to_device(self.device())?
                .f_unsqueeze(0)?)
        };
        for _ in 0..new_tokens {
            let logits = match context {
                Context::Uncached => {
                    let window = &ids[ids.len().saturating_sub(block)..];
                    self.forward(&input(window)?, false)?
                }
                Context::Cached => {
                    let fed = cache.len() as usize;
                    if fed > 0 && cache.room() >= (ids.len() - fed) as i64 {
                        self.forward_cached(&input(&ids[fed..])?, &mut cache)?
                    } else {
                        // First token, or the cache is full: refill it with the window
                        // the uncached path would see.
                        cache = self.kv_cache();
                        let window = &ids[ids.len().saturating_sub(block)..];
                        self.forward_cached(&input(window)?, &mut cache)?
                    }
                }
            };
            let logits = logits.f_get(0)?.f_get(-1)?;
            let next = if options.temperature == 0.0 {
                logits.f_argmax(-1, false)?.f_int64_value(&[])?
            } else {
                let mut scaled = logits.f_div_scalar(options.temperature)?;
                if let Some(k) = options.top_k.filter(|&k| k > 0) {
                    let k = k.min(scaled.size()[0] as usize) as i64;
                    let (top, _) = scaled.f_topk(k, -1, true, true)?;
                    let cutoff = top.f_get(k - 1)?;
                    scaled =
                        scaled.f_masked_fill(&scaled.f_lt_tensor(&cutoff)?, f64::NEG_INFINITY)?;
                }
                let probs = scaled.f_softmax(-1, Kind::Double)?.to_f64_vec()?;
                draw(&probs, rng.random::<f64>())
            };
            ids.push(next);
        }
        Ok(ids)
    }
}

/// The index whose cumulative probability first exceeds `u` in [0, 1).
fn draw(probs: &[f64], u: f64) -> i64 {
    let total: f64 = probs.iter().sum();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p / total;
        if u < acc && *p > 0.0 {
            return i as i64;
        }
    }
    probs.iter().rposition(|p| *p > 0.0).unwrap_or(0) as i64
}

#[cfg(test)]
mod tests {
    use super::draw;

    #[test]
    fn draw_follows_the_cumulative_distribution_and_skips_zeros() {
        let p = [0.0, 0.25, 0.0, 0.75];
        assert_eq!(draw(&p, 0.0), 1);
        assert_eq!(draw(&p, 0.2499), 1);
        assert_eq!(draw(&p, 0.25), 3);
        assert_eq!(draw(&p, 0.999_999_999), 3);
    }
}
