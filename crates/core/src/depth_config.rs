//! [`DepthConfig`]: the `[model.depth]` section, the depth-connection methods beyond DWA
//! (which keeps its own key, `[model.dwa]`, so every existing config and checkpoint loads
//! unchanged). Every method is off by default; `docs/depth.md` gives their equations.

use serde::{Deserialize, Serialize};
use strata_tensor::{Error, Result};

/// The depth-connection methods of a model (`[model.depth]`); the default is none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthConfig {
    /// Value residual (ResFormer, arXiv 2410.17897): every layer after the first mixes its
    /// attention values with the first layer's, `V' = λ₁·V + λ₂·V₁`, by learned scalars.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub value_residual: bool,
    /// LAuReL (arXiv 2411.07501): a learned augmented residual connection around each layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub laurel: Option<LaurelConfig>,
    /// Hyper-connections (arXiv 2409.19606): `n` residual streams with learned read, write
    /// and mixing weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyper: Option<HyperConfig>,
    /// Attention residuals (arXiv 2603.15031): every sublayer reads a softmax over depth of
    /// the earlier sublayers' outputs, scored by one learned query each ([`crate::attn_res`]).
    #[serde(default, skip_serializing_if = "crate::config::is_false")]
    pub attn_res: bool,
    /// Block AttnRes (the same paper's memory-saving variant): with `n > 0` the layers form
    /// blocks of `n`, each summed into one value as a plain residual stream would, and every
    /// sublayer reads a softmax over the embedding, the finished blocks and its own block's
    /// partial sum ([`crate::attn_res`]); 0 (the default): every sublayer's output is a value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attn_res_block_layers: usize,
    /// MUDD (arXiv 2502.12170): after each layer, per-token weights over every earlier
    /// output, from a small MLP, make separate query, key, value and residual inputs for the
    /// next block ([`crate::mudd`]).
    #[serde(default, skip_serializing_if = "crate::config::is_false")]
    pub mudd: bool,
}

/// `[model.depth.hyper]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperConfig {
    /// Number of residual streams n (the paper's expansion rate), at least 1.
    pub streams: usize,
    /// Dynamic hyper-connections: per-token weights from the normalised streams (tanh-gated)
    /// on top of the static ones.
    #[serde(default)]
    pub dynamic: bool,
    /// mHC (arXiv 2512.24880): the weights become logits of constrained maps, the read
    /// weights `σ(·)`, the write weights `2σ(·)` and the stream mixing a doubly stochastic
    /// matrix by Sinkhorn-Knopp iterations ([`crate::hyper`]).
    #[serde(default, skip_serializing_if = "crate::config::is_false")]
    pub manifold: bool,
    /// mHC: Sinkhorn-Knopp iterations (row and column normalisations) per mixing matrix
    /// (0: the default, 20).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sinkhorn_iters: usize,
}

/// Default Sinkhorn-Knopp iterations of mHC.
pub const DEFAULT_SINKHORN_ITERS: usize = 20;

impl HyperConfig {
    /// The Sinkhorn-Knopp iterations mHC runs.
    pub fn sinkhorn_iterations(&self) -> usize {
        if self.sinkhorn_iters == 0 {
            DEFAULT_SINKHORN_ITERS
        } else {
            self.sinkhorn_iters
        }
    }
}

/// Serde helper: leave `0` out.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Which LAuReL variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaurelKind {
    /// Residual weights: `x' = α·f(x) + β·x`, learned scalars α, β (1 and 1 at init).
    Rw,
    /// Low rank: `x' = f(x) + x + B·A·x`, `A` `[rank, D]`, `B` `[D, rank]` (zero at init).
    Lr,
}

/// `[model.depth.laurel]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaurelConfig {
    /// The variant, `"rw"` or `"lr"`.
    pub kind: LaurelKind,
    /// Rank of `A` and `B` (only, and required, for `kind = "lr"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
}

impl DepthConfig {
    /// True when no method of this section is on (the section is then left out of a
    /// serialised config, so that configs and checkpoints without it stay byte-identical).
    pub fn is_off(&self) -> bool {
        *self == DepthConfig::default()
    }

    /// The LAuReL-LR rank, when LAuReL-LR is on.
    pub fn laurel_rank(&self) -> Option<usize> {
        self.laurel
            .filter(|l| l.kind == LaurelKind::Lr)
            .and_then(|l| l.rank)
    }

    /// Sublayers whose outputs attention residuals sum into one value: `2n` for blocks of `n`
    /// layers, 1 when every sublayer's output is its own value.
    pub fn attn_res_block_sublayers(&self) -> usize {
        (2 * self.attn_res_block_layers).max(1)
    }

    /// A short label of the methods on (`vres`, `laurel-rw`, `laurel-lr4`), joined by `-`;
    /// empty when none is.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if self.value_residual {
            parts.push("vres".to_owned());
        }
        match self.laurel {
            Some(LaurelConfig {
                kind: LaurelKind::Rw,
                ..
            }) => parts.push("laurel-rw".to_owned()),
            Some(LaurelConfig {
                kind: LaurelKind::Lr,
                rank,
            }) => parts.push(format!("laurel-lr{}", rank.unwrap_or(0))),
            None => {}
        }
        if let Some(hyper) = self.hyper {
            let kind = match (hyper.dynamic, hyper.manifold) {
                (false, false) => "shc",
                (true, false) => "dhc",
                (false, true) => "mhc",
                (true, true) => "dmhc",
            };
            parts.push(format!("{kind}{}", hyper.streams));
        }
        match (self.attn_res, self.attn_res_block_layers) {
            (false, _) => {}
            (true, 0) => parts.push("attnres".to_owned()),
            (true, n) => parts.push(format!("attnres-b{n}")),
        }
        if self.mudd {
            parts.push("mudd".to_owned());
        }
        parts.join("-")
    }

    /// The first method on that acts on the one residual stream (DWA when `dwa`, LAuReL,
    /// hyper-connections), named as its config section: what attention residuals and MUDD,
    /// which replace that stream, cannot combine with.
    fn residual_method(&self, dwa: bool) -> Option<&'static str> {
        if dwa {
            Some("[model.dwa]")
        } else if self.laurel.is_some() {
            Some("[model.depth.laurel]")
        } else if self.hyper.is_some() {
            Some("[model.depth.hyper]")
        } else {
            None
        }
    }

    /// Checks the section against the model (`n_layer` layers of width `d_model`, with DWA
    /// when `dwa`); `file` names the source in errors, whose fields are spelled
    /// `model.depth.<field>`.
    pub fn validate(&self, file: &str, n_layer: usize, d_model: usize, dwa: bool) -> Result<()> {
        let err = |field: &str, expected: String, found: String| {
            Err(Error::config(
                file,
                format!("model.depth.{field}"),
                expected,
                found,
            ))
        };
        if self.value_residual && n_layer < 2 {
            return err(
                "value_residual",
                "a model of at least 2 layers (the first layer's values feed the later ones)"
                    .to_owned(),
                format!("n_layer = {n_layer}"),
            );
        }
        if let Some(laurel) = self.laurel {
            match (laurel.kind, laurel.rank) {
                (LaurelKind::Rw, Some(rank)) => {
                    return err(
                        "laurel.rank",
                        "no rank for kind = \"rw\" (a rank is for \"lr\")".to_owned(),
                        rank.to_string(),
                    );
                }
                (LaurelKind::Lr, None) => {
                    return err(
                        "laurel.rank",
                        format!("a rank from 1 to d_model = {d_model} for kind = \"lr\""),
                        "nothing".to_owned(),
                    );
                }
                (LaurelKind::Lr, Some(rank)) if rank == 0 || rank > d_model => {
                    return err(
                        "laurel.rank",
                        format!("a rank from 1 to d_model = {d_model}"),
                        rank.to_string(),
                    );
                }
                _ => {}
            }
        }
        if self.attn_res_block_layers > 0 && !self.attn_res {
            return err(
                "attn_res_block_layers",
                "attn_res = true (blocks of layers are a form of attention residuals)".to_owned(),
                self.attn_res_block_layers.to_string(),
            );
        }
        if self.attn_res_block_layers > n_layer {
            return err(
                "attn_res_block_layers",
                format!("1 to n_layer = {n_layer} layers per block (0: one value per sublayer)"),
                self.attn_res_block_layers.to_string(),
            );
        }
        if self.attn_res
            && let Some(other) = self.residual_method(dwa)
        {
            return err(
                "attn_res",
                format!(
                    "no {other} with it (attention residuals replace the residual stream that \
                     it acts on)"
                ),
                "both".to_owned(),
            );
        }
        if self.mudd {
            let other = self
                .residual_method(dwa)
                .or(self.attn_res.then_some("model.depth.attn_res"));
            if let Some(other) = other {
                return err(
                    "mudd",
                    format!(
                        "no {other} with it (MUDD makes each block's inputs from every earlier \
                         output itself; it combines only with value_residual)"
                    ),
                    "both".to_owned(),
                );
            }
        }
        if let Some(hyper) = self.hyper {
            if hyper.streams == 0 || hyper.streams > 64 {
                return err(
                    "hyper.streams",
                    "1 to 64 residual streams".to_owned(),
                    hyper.streams.to_string(),
                );
            }
            if hyper.manifold && hyper.streams < 2 {
                return err(
                    "hyper.manifold",
                    "at least 2 streams for mHC (a 1x1 doubly stochastic matrix is 1, and \
                     σ(read) < 1 could never start as the baseline)"
                        .to_owned(),
                    format!("{} stream", hyper.streams),
                );
            }
            if hyper.sinkhorn_iters > 200 || (hyper.sinkhorn_iters > 0 && !hyper.manifold) {
                return err(
                    "hyper.sinkhorn_iters",
                    "1 to 200 iterations, and only with manifold = true".to_owned(),
                    hyper.sinkhorn_iters.to_string(),
                );
            }
            if dwa {
                return err(
                    "hyper",
                    "no [model.dwa] with it (hyper-connections keep n streams, a DWA averages \
                     one; the model kind \"hyper-connections + DWA\" is not served)"
                        .to_owned(),
                    "both".to_owned(),
                );
            }
            if self.laurel.is_some() {
                return err(
                    "hyper",
                    "no [model.depth.laurel] with it (both replace the residual connection)"
                        .to_owned(),
                    "both".to_owned(),
                );
            }
        }
        Ok(())
    }
}
