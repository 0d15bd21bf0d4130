//! Hyper-connections (Zhu et al., arXiv 2409.19606), static and dynamic.
//!
//! The stream is widened to `n` copies `H = (h₁, .., hₙ)` (all the embedding output at the
//! start). Around layer `i` the connection reads the layer input as a weighted sum of the
//! streams, and writes the layer's residual branch `f = out − input` back into every stream
//! while mixing the streams among themselves:
//!
//! ```text
//! input  = Σₖ aₖ · hₖ
//! h'ⱼ    = Σₖ Aₖⱼ · hₖ + bⱼ · f
//! ```
//!
//! Static weights (`hyper.<i>.read` `a` `[n]`, `hyper.<i>.mix` `A` stored flat as `[n·n]`,
//! row-major, so that AdamW's decay of matrices does not pull it towards zero,
//! `hyper.<i>.write` `b` `[n]`) start as the paper's Pre-Norm equivalent: `a` one-hot on
//! stream `i mod n`, `A = I`, `b = 1`. Dynamic weights add, per token and stream, terms
//! computed from the normalised streams `h̄ₖ = LayerNorm(hₖ)` (no gain or bias):
//! `aₖ += s_α · tanh(h̄ₖ · w_a)`, `Aₖ· += s_α · tanh(h̄ₖ · W_A)`, `bₖ += s_β · tanh(h̄ₖ · w_b)`,
//! with `(w_a; W_A)` the parameter `hyper.<i>.dyn_alpha` `[1 + n, D]` and `w_b`
//! `hyper.<i>.dyn_beta` `[1, D]` (zeros at init) and `(s_α, s_β)` `hyper.<i>.scales` `[2]`
//! (0.01 at init). After the last layer the streams are summed.
//!
//! At init every stream carries the baseline's residual stream, so the model computes the
//! baseline's function up to the final sum `n · x` (which the final norm removes up to its ε)
//! and rounding. The "layer" is a whole block here (attention and MLP together).
//!
//! **mHC** (`manifold = true`, Xie et al., arXiv 2512.24880) keeps the same tensors and
//! dynamic terms but reads them as logits of constrained maps: the read weights are `σ(a)`,
//! the write weights `2σ(b)` and the mixing matrix is `SK(A)`, the doubly stochastic matrix
//! that `sinkhorn_iters` Sinkhorn-Knopp iterations (normalise every row, then every column,
//! in the log domain) make of `exp(A)`; with dynamic weights, per token. A doubly stochastic
//! mixing keeps the streams' mean and cannot amplify them, which is the paper's point. Init:
//! `A` is 0 on the diagonal and [`MHC_OFF_DIAGONAL`] off it, `b = 0` (write weight 1), and `a`
//! is [`MHC_READ_LOGIT`] on stream `i mod n` and, on the others, the logit that makes the read
//! weights sum to exactly 1. Streams that are all equal then stay equal (the columns of a
//! doubly stochastic matrix sum to 1), so mHC, too, starts as the baseline up to the final
//! norm's ε and rounding.

use crate::config::HyperConfig;
use crate::layers::{fill, set_entry};
use strata_tensor::Result;
use tch::{Tensor, nn};

/// The starting value of the dynamic scales `s_α` and `s_β`.
pub const DYNAMIC_SCALE_INIT: f64 = 0.01;

/// mHC: the initial read logit of the stream a layer reads first (`σ(4) ≈ 0.982`).
pub const MHC_READ_LOGIT: f64 = 4.0;

/// mHC: the initial off-diagonal mixing logit (`exp(-4) ≈ 0.018` before normalisation).
pub const MHC_OFF_DIAGONAL: f64 = -4.0;

/// Logit of `p` (in (0, 1)).
fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// The doubly stochastic matrix that `iterations` Sinkhorn-Knopp iterations make of
/// `exp(logits)`: `logits` `[n, ..., n]` (axis 0: from stream, last axis: to stream; any
/// token axes between), normalised in the log domain over the last axis, then over axis 0.
pub fn sinkhorn(logits: &Tensor, iterations: usize) -> Result<Tensor> {
    let mut l = logits.shallow_clone();
    for _ in 0..iterations {
        l = l.f_sub(&l.f_logsumexp([-1i64].as_slice(), true)?)?;
        l = l.f_sub(&l.f_logsumexp([0i64].as_slice(), true)?)?;
    }
    Ok(l.f_exp()?)
}

/// The dynamic part of one hyper-connection.
#[derive(Debug)]
pub struct Dynamic {
    /// `(w_a; W_A)` `[1 + n, D]`, zeros at init.
    pub alpha: Tensor,
    /// `w_b` `[1, D]`, zeros at init.
    pub beta: Tensor,
    /// `(s_α, s_β)` `[2]`.
    pub scales: Tensor,
}

/// The hyper-connection around one layer.
#[derive(Debug)]
pub struct HyperConnection {
    /// Static read weights `a` `[n]`.
    pub read: Tensor,
    /// Static stream mixing `A`, `[n·n]` row-major (row: from stream, column: to stream).
    pub mix: Tensor,
    /// Static write weights `b` `[n]`.
    pub write: Tensor,
    /// The dynamic weights, when `dynamic = true`.
    pub dynamic: Option<Dynamic>,
    width: i64,
    /// mHC: the Sinkhorn-Knopp iterations (`None`: plain hyper-connections).
    sinkhorn: Option<usize>,
}

impl HyperConnection {
    /// The connection around layer `layer` under `path`, for streams of width `d_model`, at
    /// the paper's init. Draws no random numbers.
    pub fn new(path: nn::Path, layer: usize, config: HyperConfig, d_model: usize) -> Result<Self> {
        let (n, d) = (config.streams as i64, d_model as i64);
        let read = path.f_zeros("read", &[n])?;
        let mix = path.f_zeros("mix", &[n * n])?;
        let first = layer as i64 % n;
        if config.manifold {
            // σ(read) sums to 1: the rest of σ(MHC_READ_LOGIT) shared by the others.
            let main = 1.0 / (1.0 + (-MHC_READ_LOGIT).exp());
            let other = logit((1.0 - main) / (n - 1).max(1) as f64);
            fill(&read, other)?;
            set_entry(&read, first, MHC_READ_LOGIT)?;
            fill(&mix, MHC_OFF_DIAGONAL)?;
            for k in 0..n {
                set_entry(&mix, k * n + k, 0.0)?;
            }
        } else {
            set_entry(&read, first, 1.0)?;
            for k in 0..n {
                set_entry(&mix, k * n + k, 1.0)?;
            }
        }
        let write = if config.manifold {
            path.f_zeros("write", &[n])?
        } else {
            path.f_ones("write", &[n])?
        };
        let dynamic = config
            .dynamic
            .then(|| -> Result<Dynamic> {
                Ok(Dynamic {
                    alpha: path.f_zeros("dyn_alpha", &[1 + n, d])?,
                    beta: path.f_zeros("dyn_beta", &[1, d])?,
                    scales: path.f_var("scales", &[2], nn::Init::Const(DYNAMIC_SCALE_INIT))?,
                })
            })
            .transpose()?;
        Ok(Self {
            read,
            mix,
            write,
            dynamic,
            width: d,
            sinkhorn: config.manifold.then(|| config.sinkhorn_iterations()),
        })
    }

    /// Number of streams n.
    pub fn streams(&self) -> usize {
        self.read.size().first().copied().unwrap_or(0) as usize
    }

    /// One layer: `streams` `[n, ..., D]` in, the layer run on the read input, the new
    /// streams out.
    pub fn forward(
        &self,
        streams: &Tensor,
        layer: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let n = self.read.size()[0];
        let rest = streams.dim() - 1;
        // Per stream (and, when dynamic, per token): read [n, ..., 1], mix [n, ..., n],
        // write [n, ..., 1]; static weights broadcast over the token axes.
        let shape = |last: i64| -> Vec<i64> {
            let mut s = vec![n];
            s.extend(std::iter::repeat_n(1, rest.saturating_sub(1)));
            s.push(last);
            s
        };
        let mut read = self.read.f_view(shape(1).as_slice())?;
        let mut mix = self.mix.f_view(shape(n).as_slice())?;
        let mut write = self.write.f_view(shape(1).as_slice())?;
        if let Some(dynamic) = &self.dynamic {
            let normed =
                streams.f_layer_norm::<Tensor>([self.width].as_slice(), None, None, 1e-5, true)?;
            let (s_alpha, s_beta) = (dynamic.scales.f_get(0)?, dynamic.scales.f_get(1)?);
            let alpha = normed
                .f_linear::<Tensor>(&dynamic.alpha, None)?
                .f_tanh()?
                .f_mul(&s_alpha)?;
            let beta = normed
                .f_linear::<Tensor>(&dynamic.beta, None)?
                .f_tanh()?
                .f_mul(&s_beta)?;
            read = read.f_add(&alpha.f_narrow(-1, 0, 1)?)?;
            mix = mix.f_add(&alpha.f_narrow(-1, 1, n)?)?;
            write = write.f_add(&beta)?;
        }
        if let Some(iterations) = self.sinkhorn {
            read = read.f_sigmoid()?;
            write = write.f_sigmoid()?.f_mul_scalar(2.0)?;
            // The mixing [n, ..., n] with its token axes in the middle, as `sinkhorn` takes it.
            mix = sinkhorn(&mix, iterations)?;
        }
        let input =
            streams
                .f_mul(&read)?
                .f_sum_dim_intlist([0i64].as_slice(), false, streams.kind())?;
        let branch = layer(&input)?.f_sub(&input)?;
        // h'ⱼ = Σₖ Aₖⱼ hₖ: move the "to" axis first, then sum over the "from" axis.
        let mixed = mix
            .f_movedim(&[-1i64][..], &[0i64][..])?
            .f_unsqueeze(-1)?
            .f_mul(&streams.f_unsqueeze(0)?)?
            .f_sum_dim_intlist([1i64].as_slice(), false, streams.kind())?;
        Ok(mixed.f_add(&write.f_mul(&branch.f_unsqueeze(0)?)?)?)
    }

    /// The parameter tensors, in creation order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.read, &self.mix, &self.write];
        if let Some(d) = &self.dynamic {
            out.extend([&d.alpha, &d.beta, &d.scales]);
        }
        out
    }
}

/// The `n` streams at the start: `x` `[..., D]` copied into `[n, ..., D]`.
pub fn expand(x: &Tensor, n: usize) -> Result<Tensor> {
    let copies: Vec<Tensor> = (0..n).map(|_| x.shallow_clone()).collect();
    Ok(Tensor::f_stack(&copies, 0)?)
}

/// The stream after the last layer: the sum of the `n` streams.
pub fn collapse(streams: &Tensor) -> Result<Tensor> {
    Ok(streams.f_sum_dim_intlist([0i64].as_slice(), false, streams.kind())?)
}
