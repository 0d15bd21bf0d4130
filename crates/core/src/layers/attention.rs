//! Causal multi-head self-attention through libtorch's `scaled_dot_product_attention`, with
//! optional QK-norm.

use super::{LayerCall, Linear};
use crate::config::ModelConfig;
use crate::kv_cache::LayerKv;
use crate::value_residual::ValueMix;
use strata_tensor::Result;
use tch::{Tensor, nn};

/// Epsilon of QK-norm: PyTorch's `F.rms_norm` default for f32 (the machine epsilon), as in
/// modded-nanogpt; fixed, so that growth that rescales `norm_eps` leaves QK-norm unchanged.
pub const QK_NORM_EPS: f64 = f32::EPSILON as f64;

/// Causal self-attention with a fused query/key/value projection.
#[derive(Debug)]
pub struct CausalSelfAttention {
    /// Query, key and value projections stacked: `[3·A, D]` with `A = n_head · head_dim`.
    pub c_attn: Linear,
    /// Output projection `[D, A]`.
    pub c_proj: Linear,
    n_head: i64,
    head_dim: i64,
    dropout: f64,
    /// QK-norm on or off.
    qk_norm: bool,
}

impl CausalSelfAttention {
    /// Creates the layer under `path`; `proj_std` initialises the output projection.
    pub fn new(path: nn::Path, config: &ModelConfig, proj_std: f64) -> Result<Self> {
        let (d, a) = (config.d_model, config.attn_width());
        Ok(Self {
            c_attn: Linear::new(
                &path / "c_attn",
                d,
                3 * a,
                config.bias,
                0.02,
                config.lora_for(crate::config::LoraTarget::Attn),
            )?,
            c_proj: Linear::new(
                &path / "c_proj",
                a,
                d,
                config.bias,
                proj_std,
                config.lora_for(crate::config::LoraTarget::AttnProj),
            )?,
            n_head: config.n_head as i64,
            head_dim: config.head_dim() as i64,
            dropout: config.dropout,
            qk_norm: config.qk_norm,
        })
    }

    /// Attends over `x` `[B, T, D]`; position `t` sees only positions `<= t`. The values
    /// `[B, n_head, T, head_dim]` go through `values` (the value residual) first. With `kv`,
    /// `x` holds the tokens after the cached ones: they sit at positions `past..past + T`, see
    /// every cached token, and their keys and values join the cache.
    pub fn forward(
        &self,
        x: &Tensor,
        call: LayerCall,
        values: &mut ValueMix,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        let a = self.n_head * self.head_dim;
        let qkv = self.c_attn.forward(x, call.config.precision)?;
        let (q, k, v) = (
            qkv.f_narrow(2, 0, a)?,
            qkv.f_narrow(2, a, a)?,
            qkv.f_narrow(2, 2 * a, a)?,
        );
        self.attend(q, k, v, call, values, kv)
    }

    /// [`CausalSelfAttention::forward`] with separate inputs `[B, T, D]` for the queries, keys
    /// and values (MUDD's ways): each goes through its own rows of `c_attn`.
    pub fn forward_separate(
        &self,
        (query, key, value): (&Tensor, &Tensor, &Tensor),
        call: LayerCall,
        values: &mut ValueMix,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        let a = self.n_head * self.head_dim;
        let p = call.config.precision;
        let q = self.c_attn.forward_rows(query, 0, a, p)?;
        let k = self.c_attn.forward_rows(key, a, a, p)?;
        let v = self.c_attn.forward_rows(value, 2 * a, a, p)?;
        self.attend(q, k, v, call, values, kv)
    }

    /// Attention from projected queries, keys and values `[B, T, A]`, through the output
    /// projection.
    fn attend(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        call: LayerCall,
        values: &mut ValueMix,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        let size = q.size();
        let (b, t) = (size[0], size[1]);
        let a = self.n_head * self.head_dim;
        let heads = |x: Tensor| -> Result<Tensor> {
            Ok(x.f_view([b, t, self.n_head, self.head_dim])?
                .f_transpose(1, 2)?)
        };
        let (mut q, mut k) = (heads(q)?, heads(k)?);
        let v = values.apply(heads(v)?)?;
        if self.qk_norm {
            // modded-nanogpt's QK-norm: RMSNorm over each head's width, no learned gains.
            q = q.f_rms_norm([self.head_dim], None::<&Tensor>, QK_NORM_EPS)?;
            k = k.f_rms_norm([self.head_dim], None::<&Tensor>, QK_NORM_EPS)?;
        }
        let past = kv.as_ref().map_or(0, |kv| kv.len());
        if let Some(rotary) = call.rotary {
            q = rotary.apply_from(&q, past)?;
            k = rotary.apply_from(&k, past)?;
        }
        let (k, v) = match kv {
            Some(kv) => kv.extend(k, v)?,
            None => (k, v),
        };
        let dropout = if call.train { self.dropout } else { 0.0 };
        let own_generator = dropout > 0.0 && call.generator.is_some();
        let y = if past == 0 && own_generator {
            // SDPA's dropout draws from libtorch's default generator: spelled out instead, so
            // that the mask comes from the model's own.
            explicit_causal_attention(&q, &k, &v, |weights| call.dropout(weights, dropout))?
        } else if past == 0 {
            Tensor::f_scaled_dot_product_attention::<Tensor>(
                &q, &k, &v, None, dropout, true, None, false,
            )?
        } else {
            // New token i (at position past + i) sees keys 0..=past + i. SDPA's own causal
            // mask aligns to the top left, so the mask is spelled out (one new token sees all).
            let mask = (t > 1)
                .then(|| -> Result<Tensor> {
                    let device = q.device();
                    let rows = Tensor::f_arange(t, (tch::Kind::Int64, device))?
                        .f_add_scalar(past)?
                        .f_unsqueeze(1)?;
                    let cols =
                        Tensor::f_arange(past + t, (tch::Kind::Int64, device))?.f_unsqueeze(0)?;
                    Ok(cols.f_le_tensor(&rows)?)
                })
                .transpose()?;
            Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                mask.as_ref(),
                dropout,
                false,
                None,
                false,
            )?
        };
        let y = y.f_transpose(1, 2)?.f_contiguous()?.f_view([b, t, a])?;
        call.dropout(
            self.c_proj.forward(&y, call.config.precision)?,
            self.dropout,
        )
    }
}

/// Causal attention written out, `drop(softmax(q·kᵀ/√d with future keys masked))·v` over
/// `[batch, heads, time, head_dim]` inputs: what SDPA computes (`scale = 1/√d`), with `drop`
/// applied to the attention weights.
fn explicit_causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    drop: impl FnOnce(Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let size = q.size();
    let (t, d) = (size[2], size[3]);
    let scores = q
        .f_matmul(&k.f_transpose(-2, -1)?)?
        .f_mul_scalar(1.0 / (d as f64).sqrt())?;
    let future = Tensor::f_ones([t, t], (tch::Kind::Bool, q.device()))?.f_triu(1)?;
    let weights = scores
        .f_masked_fill(&future, f64::NEG_INFINITY)?
        .f_softmax(-1, scores.kind())?;
    Ok(drop(weights)?.f_matmul(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn written_out_attention_is_sdpas_and_drops_the_weights() {
        let shape = [2, 3, 7, 4];
        let draw = || Tensor::randn(shape, (Kind::Double, Device::Cpu));
        let (q, k, v) = (draw(), draw(), draw());
        let sdpa = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, true, None, false,
        );
        let explicit = explicit_causal_attention(&q, &k, &v, Ok).unwrap();
        assert!(explicit.allclose(&sdpa, 1e-12, 1e-12, false));
        // A naive loop over positions, with every weight of key 0 dropped (a mask that scales
        // the rest by 2): output[i] = Σ_{j<=i, j>0} 2·w_ij·v_j.
        let mask = Tensor::ones([7, 7], (Kind::Double, Device::Cpu)) * 2.0;
        let _ = mask.narrow(1, 0, 1).fill_(0.0);
        let dropped = explicit_causal_attention(&q, &k, &v, |w| Ok(w * &mask)).unwrap();
        for (b, h, i) in [(0, 0, 0), (1, 2, 6), (0, 1, 3)] {
            let qi = q.get(b).get(h).get(i);
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (&qi * k.get(b).get(h).get(j))
                        .sum(Kind::Double)
                        .double_value(&[])
                        / 2.0
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for c in 0..4 {
                let expected: f64 = (1..=i)
                    .map(|j| {
                        2.0 * (scores[j as usize] - max).exp() / total
                            * v.get(b).get(h).get(j).double_value(&[c])
                    })
                    .sum();
                let got = dropped.get(b).get(h).get(i).double_value(&[c]);
                assert!((got - expected).abs() < 1e-12, "({b}, {h}, {i}, {c})");
            }
        }
    }
}
