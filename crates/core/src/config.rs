//! [`ModelConfig`]: the architecture of a decoder-only transformer, read from TOML.

use serde::{Deserialize, Serialize};
use strata_tensor::{Error, Precision, Result};

pub use crate::depth_config::{DepthConfig, HyperConfig, LaurelConfig, LaurelKind};

/// Largest width, vocabulary or context a config may ask for (2^24); larger values are
/// refused by [`ModelConfig::validate`] before any size arithmetic or allocation.
pub const MAX_WIDTH: usize = 1 << 24;

/// Most layers a config may ask for (2^16).
pub const MAX_LAYERS: usize = 1 << 16;

/// Feed-forward variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// `W2 · gelu(W1 · x)`.
    #[default]
    Gelu,
    /// `W2 · gelu_tanh(W1 · x)` with GELU's tanh approximation (GPT-2's `gelu_new`).
    #[serde(rename = "gelu_tanh")]
    GeluTanh,
    /// `W2 · (silu(Wg · x) ⊙ (Wu · x))`.
    Swiglu,
    /// TokenFormer's Pattention: the input attends over learned key/value parameter tokens,
    /// `Θ(x · Kᵀ) · V` with `Θ(a) = gelu(τ · a / ‖a‖₂)`; the keys are `c_fc`, the values
    /// `c_proj`, and `mlp_hidden` is the number of parameter tokens.
    Pattention,
    /// `W2 · relu(W1 · x)²` (squared ReLU, So et al. 2021; the modded-nanogpt speedrun's MLP).
    Relu2,
}

/// Normalisation layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm (mean and variance), with a bias when `bias = true`.
    #[default]
    Layernorm,
    /// RMSNorm (root mean square only).
    Rmsnorm,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionKind {
    /// A learned embedding per position, added to the token embedding.
    #[default]
    Learned,
    /// Rotary position embedding applied to queries and keys.
    Rotary,
}

/// DenseFormer's depth-weighted averaging, `k × p` in the paper's notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DwaConfig {
    /// Dilation k: a DWA averages only every k-th earlier output.
    #[serde(default = "one")]
    pub dilation: usize,
    /// Period p: a DWA follows every p-th block only.
    #[serde(default = "one")]
    pub period: usize,
}

impl DwaConfig {
    /// True when a DWA follows layer `i` (0-based): every `period`-th layer.
    pub fn after(self, i: usize) -> bool {
        (i + 1).is_multiple_of(self.period)
    }
}

/// How the layers of a weight-shared model walk through its blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharingPattern {
    /// `0, 1, .., B-1, 0, 1, ..`: the group of blocks runs again and again (one block: the
    /// Universal Transformer).
    #[default]
    Cycle,
    /// `0, 0, 1, 1, ..`: each block runs `n_layer / B` times in a row (immediate block-wise
    /// repetition).
    Repeat,
}

/// Weight-shared depth: `n_layer` layers run fewer distinct blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharingConfig {
    /// Number of distinct blocks (weight sets); not needed with `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<usize>,
    /// How layers walk through the blocks.
    #[serde(default)]
    pub pattern: SharingPattern,
    /// The block (0-based) each layer runs, overriding `blocks` and `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<usize>>,
}

/// A linear layer (of every block, or the output head) that a LoRA adapter can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// The fused query/key/value projection `attn.c_attn`.
    Attn,
    /// The attention output projection `attn.c_proj`.
    #[serde(alias = "attn_proj")]
    AttnProj,
    /// The MLP input projection `mlp.c_fc` (and SwiGLU's up projection `mlp.w_up`).
    Mlp,
    /// The MLP output projection `mlp.c_proj`.
    #[serde(alias = "mlp_proj")]
    MlpProj,
    /// The untied output head `lm_head` (needs `tied_embeddings = false`).
    Head,
}

impl LoraTarget {
    /// The default targets: every linear layer of the blocks.
    pub fn blocks() -> Vec<LoraTarget> {
        vec![
            LoraTarget::Attn,
            LoraTarget::AttnProj,
            LoraTarget::Mlp,
            LoraTarget::MlpProj,
        ]
    }
}

/// Low-rank adapters: an adapted linear computes `x · (W0 + scale · B · A)ᵀ + b` with `A`
/// (`<linear>.lora_a`, `[rank, in]`) and `B` (`<linear>.lora_b`, `[out, rank]`, zero at init).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r of every adapter (at most `min(in, out)` of each adapted matrix).
    pub rank: usize,
    /// Fixed multiplier of `B · A` (not `alpha / rank`, so that growing the rank keeps the
    /// function).
    #[serde(default = "unit")]
    pub scale: f64,
    /// The adapted linear layers; by default every linear of the blocks.
    #[serde(default = "LoraTarget::blocks")]
    pub targets: Vec<LoraTarget>,
    /// Freeze the base weights and biases of adapted linears (no gradients), as in LoRA
    /// fine-tuning and ReLoRA.
    #[serde(default)]
    pub freeze_base: bool,
}

/// Default of 1.0 for the LoRA scale.
fn unit() -> f64 {
    1.0
}

/// Default of 1 for dilation and period.
fn one() -> usize {
    1
}

/// Default MLP width ratio.
fn four() -> f64 {
    4.0
}

/// Default for booleans that are on unless switched off.
fn yes() -> bool {
    true
}

/// Serde: an option that is off is not written, so configs without it stay as they were.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

/// The architecture of a decoder-only transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size; 0 means "take it from the tokenizer".
    #[serde(default)]
    pub vocab_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Width of one attention head; absent means `d_model / n_head` (set explicitly when
    /// growth adds heads or widens the residual stream while keeping the heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Longest context in tokens.
    pub block_size: usize,
    /// Feed-forward variant.
    #[serde(default)]
    pub mlp: MlpKind,
    /// Hidden width of the MLP as a multiple of `d_model` (SwiGLU uses 2/3 of it, rounded
    /// up to a multiple of 8, to keep the parameter count of a GELU MLP).
    #[serde(default = "four")]
    pub mlp_ratio: f64,
    /// Hidden width of the MLP (parameter tokens for Pattention), overriding `mlp_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_hidden: Option<usize>,
    /// Pattention's score scale τ; absent means `sqrt(mlp_hidden)` (growth fixes it so that
    /// appending parameter tokens keeps the function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattention_tau: Option<f64>,
    /// Normalisation layer.
    #[serde(default)]
    pub norm: NormKind,
    /// Epsilon of the norms; absent means 1e-5 (residual growth of an RMSNorm model scales
    /// it with the mean square, which keeps the function exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    /// Position encoding.
    #[serde(default)]
    pub positions: PositionKind,
    /// Biases in linear layers and LayerNorm.
    #[serde(default)]
    pub bias: bool,
    /// Share the token embedding with the output head.
    #[serde(default = "yes")]
    pub tied_embeddings: bool,
    /// QK-norm: RMSNorm (without learned gains and with epsilon `f32::EPSILON`, as in
    /// modded-nanogpt) of every head's queries and keys, before rotary positions.
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
    /// Initialise the output projections of attention and MLP (`c_proj`) to zero.
    #[serde(default, skip_serializing_if = "is_false")]
    pub zero_init_projections: bool,
    /// Initialise the untied output head to zero (needs `tied_embeddings = false`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub zero_init_head: bool,
    /// Logit soft-capping: logits become `cap · tanh(logits / cap)`; absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_softcap: Option<f64>,
    /// Dropout probability (embeddings, attention, residual branches).
    #[serde(default)]
    pub dropout: f64,
    /// DenseFormer DWA; absent for the baseline transformer.
    #[serde(default)]
    pub dwa: Option<DwaConfig>,
    /// The other depth-connection methods (`[model.depth]`: value residual, LAuReL); all
    /// off by default.
    #[serde(default, skip_serializing_if = "DepthConfig::is_off")]
    pub depth: DepthConfig,
    /// Weight-shared depth; absent when every layer has its own block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<SharingConfig>,
    /// Dtype of matrix products.
    #[serde(default)]
    pub precision: Precision,
    /// Low-rank adapters on some linear layers; absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

impl ModelConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.d_model / self.n_head.max(1))
    }

    /// Width of the attention's query/key/value space, `n_head · head_dim`.
    pub fn attn_width(&self) -> usize {
        self.n_head * self.head_dim()
    }

    /// Hidden width of the MLP (parameter tokens for Pattention).
    pub fn mlp_hidden(&self) -> usize {
        if let Some(hidden) = self.mlp_hidden {
            return hidden;
        }
        let hidden = (self.mlp_ratio * self.d_model as f64).round() as usize;
        match self.mlp {
            MlpKind::Gelu | MlpKind::GeluTanh | MlpKind::Relu2 | MlpKind::Pattention => hidden,
            MlpKind::Swiglu => (2 * hidden / 3).div_ceil(8) * 8,
        }
    }

    /// Epsilon of the norms.
    pub fn norm_eps(&self) -> f64 {
        self.norm_eps.unwrap_or(crate::layers::DEFAULT_EPS)
    }

    /// Pattention's score scale τ.
    pub fn pattention_tau(&self) -> f64 {
        self.pattention_tau
            .unwrap_or_else(|| (self.mlp_hidden() as f64).sqrt())
    }

    /// The block each layer runs (0-based); `0, 1, .., n_layer - 1` without sharing. Call
    /// [`ModelConfig::validate`] first: an invalid sharing config gives an unspecified plan.
    pub fn block_plan(&self) -> Vec<usize> {
        let n = self.n_layer;
        let Some(sharing) = &self.sharing else {
            return (0..n).collect();
        };
        if let Some(plan) = &sharing.plan {
            return plan.clone();
        }
        let blocks = sharing.blocks.unwrap_or(n).clamp(1, n.max(1));
        match sharing.pattern {
            SharingPattern::Cycle => (0..n).map(|i| i % blocks).collect(),
            SharingPattern::Repeat => (0..n).map(|i| i * blocks / n.max(1)).collect(),
        }
    }

    /// Number of distinct blocks (weight sets).
    pub fn n_blocks(&self) -> usize {
        self.block_plan().iter().max().map_or(0, |m| m + 1)
    }

    /// The LoRA config when `target` is adapted, `None` otherwise (the head only when untied).
    pub fn lora_for(&self, target: LoraTarget) -> Option<&LoraConfig> {
        self.lora.as_ref().filter(|l| {
            l.targets.contains(&target) && (target != LoraTarget::Head || !self.tied_embeddings)
        })
    }

    /// Every adapted linear layer as `(path, in, out)`, e.g. `("h.0.attn.c_proj", A, D)`, for
    /// each distinct block in order and then `lm_head`; empty without `lora`.
    pub fn lora_linears(&self) -> Vec<(String, usize, usize)> {
        use crate::schema::{BlockLayer, Location};
        let per_block: Vec<(BlockLayer, usize, usize)> = BlockLayer::ALL
            .into_iter()
            .filter_map(|layer| {
                self.lora_for(layer.lora_target()?)?;
                let (i, o) = layer.linear_dims(self)?;
                Some((layer, i, o))
            })
            .collect();
        let mut out: Vec<(String, usize, usize)> = (0..self.n_blocks())
            .flat_map(|block| {
                per_block
                    .iter()
                    .map(move |&(layer, i, o)| (Location::Block { block, layer }.path(), i, o))
            })
            .collect();
        if self.lora_for(LoraTarget::Head).is_some() {
            out.push((Location::Head.path(), self.d_model, self.vocab_size));
        }
        out
    }

    /// True when a DWA follows block `i` (0-based).
    pub fn dwa_after(&self, i: usize) -> bool {
        self.dwa.is_some_and(|d| d.after(i))
    }

    /// Checks every field; `file` names the source in error messages.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: &dyn ToString| {
            Err(Error::config(
                file,
                format!("model.{field}"),
                expected,
                found.to_string(),
            ))
        };
        if self.vocab_size == 0 {
            return err(
                "vocab_size",
                "a vocabulary size >= 1 (or set by the tokenizer)",
                &0,
            );
        }
        if self.precision == Precision::Bf16Autocast && !strata_kernels::CPP {
            return err(
                "precision",
                "\"f32\" or \"bf16\" (\"bf16_autocast\" needs strata-kernels' `cpp` feature, \
                 which this build lacks)",
                &"\"bf16_autocast\"",
            );
        }
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_WIDTH),
            ("n_layer", self.n_layer, MAX_LAYERS),
            ("n_head", self.n_head, MAX_WIDTH),
            ("d_model", self.d_model, MAX_WIDTH),
            ("head_dim", self.head_dim.unwrap_or(0), MAX_WIDTH),
            ("block_size", self.block_size, MAX_WIDTH),
            ("mlp_hidden", self.mlp_hidden.unwrap_or(0), MAX_WIDTH),
        ];
        if let Some((field, value, max)) = sizes.into_iter().find(|(_, v, max)| v > max) {
            return err(field, &format!("at most {max}"), &value);
        }
        if self.n_layer == 0 {
            return err("n_layer", "at least 1 block", &self.n_layer);
        }
        if self.n_head == 0 {
            return err("n_head", "at least 1 head", &self.n_head);
        }
        if self.d_model == 0 {
            return err("d_model", "a positive width", &self.d_model);
        }
        match self.head_dim {
            Some(0) => return err("head_dim", "a positive head width", &0),
            None if !self.d_model.is_multiple_of(self.n_head) => {
                return err(
                    "d_model",
                    &format!(
                        "a positive multiple of n_head = {} (or an explicit head_dim)",
                        self.n_head
                    ),
                    &self.d_model,
                );
            }
            _ => {}
        }
        if self.positions == PositionKind::Rotary && !self.head_dim().is_multiple_of(2) {
            return err(
                "d_model",
                "an even head width (head_dim, or d_model / n_head) for rotary positions",
                &self.d_model,
            );
        }
        if self.block_size == 0 {
            return err("block_size", "at least 1 token", &self.block_size);
        }
        if self.mlp_hidden == Some(0) {
            return err("mlp_hidden", "at least 1 hidden unit", &0);
        }
        let ratio_width = self.mlp_ratio * self.d_model as f64;
        if !(self.mlp_ratio > 0.0 && ratio_width <= MAX_WIDTH as f64) || self.mlp_hidden() == 0 {
            return err(
                "mlp_ratio",
                &format!("a positive ratio giving 1 to {MAX_WIDTH} hidden units"),
                &self.mlp_ratio,
            );
        }
        if let Some(eps) = self.norm_eps
            && !(eps > 0.0 && eps.is_finite())
        {
            return err("norm_eps", "a positive epsilon", &eps);
        }
        if let Some(tau) = self.pattention_tau
            && !(tau > 0.0 && tau.is_finite())
        {
            return err("pattention_tau", "a positive scale", &tau);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err("dropout", "a probability in [0, 1)", &self.dropout);
        }
        if self.zero_init_head && self.tied_embeddings {
            return err(
                "zero_init_head",
                "false unless tied_embeddings = false (a tied head is the token embedding)",
                &true,
            );
        }
        if let Some(cap) = self.logit_softcap
            && !(cap > 0.0 && cap.is_finite())
        {
            return err("logit_softcap", "a positive finite cap", &cap);
        }
        if let Some(sharing) = &self.sharing {
            self.validate_sharing(sharing, file)?;
        }
        if let Some(lora) = &self.lora {
            if lora.rank == 0 {
                return err("lora.rank", "a rank >= 1", &0);
            }
            if !lora.scale.is_finite() {
                return err("lora.scale", "a finite scale", &lora.scale);
            }
            if lora.targets.is_empty() {
                return err(
                    "lora.targets",
                    "at least one of \"attn\", \"attnproj\", \"mlp\", \"mlpproj\", \"head\"",
                    &"[]",
                );
            }
            if lora.targets.contains(&LoraTarget::Head) && self.tied_embeddings {
                return err(
                    "lora.targets",
                    "\"head\" only with tied_embeddings = false (a tied head is the embedding)",
                    &format!("{:?}", lora.targets),
                );
            }
            if let Some((name, i, o)) = self
                .lora_linears()
                .into_iter()
                .find(|(_, i, o)| lora.rank > *i.min(o))
            {
                return err(
                    "lora.rank",
                    &format!("at most min(in, out) = {} of {name} ({i} -> {o})", i.min(o)),
                    &lora.rank,
                );
            }
        }
        if let Some(dwa) = self.dwa {
            if dwa.dilation == 0 {
                return err("dwa.dilation", "k >= 1", &dwa.dilation);
            }
            if dwa.period == 0 {
                return err("dwa.period", "p >= 1", &dwa.period);
            }
        }
        self.depth
            .validate(file, self.n_layer, self.d_model, self.dwa.is_some())?;
        Ok(())
    }

    /// Checks a sharing config against `n_layer`.
    fn validate_sharing(&self, sharing: &SharingConfig, file: &str) -> Result<()> {
        let n = self.n_layer;
        let err = |field: &str, expected: String, found: String| {
            Err(Error::config(
                file,
                format!("model.sharing.{field}"),
                expected,
                found,
            ))
        };
        if let Some(plan) = &sharing.plan {
            if plan.len() != n {
                return err(
                    "plan",
                    format!("one block index per layer (n_layer = {n})"),
                    format!("{} entries", plan.len()),
                );
            }
            let blocks = plan.iter().max().map_or(0, |m| m + 1);
            if let Some(unused) = (0..blocks).find(|b| !plan.contains(b)) {
                return err(
                    "plan",
                    format!("every block from 0 to {} used at least once", blocks - 1),
                    format!("{plan:?} (block {unused} unused)"),
                );
            }
            return Ok(());
        }
        let Some(blocks) = sharing.blocks else {
            return err(
                "blocks",
                "the number of distinct blocks (or a `plan`)".to_owned(),
                "nothing".to_owned(),
            );
        };
        if blocks == 0 || blocks > n {
            return err(
                "blocks",
                format!("1 to n_layer = {n} blocks"),
                blocks.to_string(),
            );
        }
        if sharing.pattern == SharingPattern::Repeat && !n.is_multiple_of(blocks) {
            return err(
                "blocks",
                format!("a divisor of n_layer = {n} for pattern = \"repeat\""),
                blocks.to_string(),
            );
        }
        Ok(())
    }

    /// Names the first field in which `self` and `other` differ, if any.
    pub fn first_difference(&self, other: &ModelConfig) -> Option<String> {
        let mine = serde_json_like(self);
        let theirs = serde_json_like(other);
        mine.iter()
            .zip(theirs.iter())
            .find(|(a, b)| a != b)
            .map(|((field, a), (_, b))| format!("model.{field}: {a} vs {b}"))
    }

    /// A short label such as `baseline`, `denseformer-4x5` or `baseline-shared-2`.
    pub fn variant_name(&self) -> String {
        let base = match self.dwa {
            None => "baseline".to_owned(),
            Some(d) => format!("denseformer-{}x{}", d.dilation, d.period),
        };
        let base = match self.depth.label() {
            label if label.is_empty() => base,
            label if self.dwa.is_none() => label,
            label => format!("{base}-{label}"),
        };
        match &self.sharing {
            Some(_) => format!("{base}-shared-{}", self.n_blocks()),
            None => base,
        }
    }
}

/// The config as (field, value) pairs in declaration order, for diffs.
fn serde_json_like(c: &ModelConfig) -> Vec<(&'static str, String)> {
    vec![
        ("vocab_size", c.vocab_size.to_string()),
        ("n_layer", c.n_layer.to_string()),
        ("n_head", c.n_head.to_string()),
        ("d_model", c.d_model.to_string()),
        ("head_dim", c.head_dim().to_string()),
        ("block_size", c.block_size.to_string()),
        ("mlp", format!("{:?}", c.mlp)),
        ("mlp_hidden", c.mlp_hidden().to_string()),
        ("norm", format!("{:?}", c.norm)),
        ("norm_eps", c.norm_eps().to_string()),
        ("positions", format!("{:?}", c.positions)),
        ("bias", c.bias.to_string()),
        ("tied_embeddings", c.tied_embeddings.to_string()),
        ("qk_norm", c.qk_norm.to_string()),
        ("zero_init_projections", c.zero_init_projections.to_string()),
        ("zero_init_head", c.zero_init_head.to_string()),
        ("logit_softcap", format!("{:?}", c.logit_softcap)),
        (
            "pattention_tau",
            format!(
                "{:?}",
                (c.mlp == MlpKind::Pattention).then(|| c.pattention_tau())
            ),
        ),
        ("dwa", format!("{:?}", c.dwa)),
        ("depth", format!("{:?}", c.depth)),
        ("sharing", format!("{:?}", c.block_plan())),
        ("lora", format!("{:?}", c.lora)),
    ]
}
