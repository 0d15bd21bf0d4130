//! The parameter schema: every tensor of a model, with its name, shape and role, computed
//! from a [`ModelConfig`] alone.
//!
//! [`schema`] lists the tensors in the order `Gpt::new` creates them (a test checks it
//! against the `VarStore` for every model kind). The parameter count, `Gpt::parameters`, the
//! LoRA targets and the name handling of merges and growth are derived from it, and an
//! optimizer can group tensors by [`Role`]. Names follow GPT-2 (`wte.weight`,
//! `h.3.attn.c_attn.weight`, `dwa.3.alpha`, ...); [`Location::name`] writes one and [`parse`]
//! reads one back, so no other crate spells them.

use crate::config::{LoraTarget, MlpKind, ModelConfig, NormKind, PositionKind};
use strata_kernels::Selection;

/// What a tensor does, for optimizer groups and initialisation rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The token embedding `[vocab, D]` (also the output head when tied).
    TokenEmbedding,
    /// The learned position embedding `[block_size, D]`.
    PositionEmbedding,
    /// An attention projection (query/key/value or output) `[out, in]`.
    AttentionMatrix,
    /// An MLP projection (GELU or SwiGLU) `[out, in]`.
    MlpMatrix,
    /// Pattention's key or value parameter tokens.
    ParameterTokens,
    /// The gain of a norm `[D]`.
    NormGain,
    /// A bias (of a linear layer or a LayerNorm).
    Bias,
    /// The untied output head `[vocab, D]`.
    Head,
    /// The weights of one DWA `[count]`.
    DwaWeight,
    /// Small weight vectors of a depth method (1-D, never decayed): a value residual's
    /// `(λ₁, λ₂)`, LAuReL-RW's `(α, β)`, a hyper-connection's static read, mix and write
    /// weights and dynamic scales, attention residuals' queries, MUDD's static weights.
    DepthScalar,
    /// A matrix of a depth method outside the blocks: LAuReL-LR's `A` `[r, D]` and
    /// `B` `[D, r]`, a dynamic hyper-connection's `[1 + n, D]` and `[1, D]`, MUDD's weight MLP.
    DepthMatrix,
    /// A LoRA down projection `A` `[rank, in]`.
    LoraA,
    /// A LoRA up projection `B` `[out, rank]`.
    LoraB,
}

impl Role {
    /// True for the 2-D matrices inside the blocks (attention, MLP, parameter tokens): the
    /// group a Muon-style optimizer orthogonalises; embeddings, head, gains, biases, DWA
    /// weights and adapters are the other group.
    pub fn is_hidden_matrix(self) -> bool {
        matches!(
            self,
            Role::AttentionMatrix | Role::MlpMatrix | Role::ParameterTokens
        )
    }

    /// True for the token and position embeddings (left out of Kaplan et al.'s N).
    pub fn is_embedding(self) -> bool {
        matches!(self, Role::TokenEmbedding | Role::PositionEmbedding)
    }
}

/// A layer of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockLayer {
    /// The norm before attention, `ln_1`.
    Ln1,
    /// The fused query/key/value projection, `attn.c_attn`.
    AttnQkv,
    /// The attention output projection, `attn.c_proj`.
    AttnOut,
    /// The norm before the MLP, `ln_2`.
    Ln2,
    /// The MLP input (SwiGLU: gate; Pattention: keys), `mlp.c_fc`.
    MlpIn,
    /// SwiGLU's up projection, `mlp.w_up`.
    MlpUp,
    /// The MLP output (Pattention: values), `mlp.c_proj`.
    MlpOut,
}

impl BlockLayer {
    /// Every block layer in creation order.
    pub const ALL: [BlockLayer; 7] = [
        BlockLayer::Ln1,
        BlockLayer::AttnQkv,
        BlockLayer::AttnOut,
        BlockLayer::Ln2,
        BlockLayer::MlpIn,
        BlockLayer::MlpUp,
        BlockLayer::MlpOut,
    ];

    /// The layer's path inside a block, e.g. `attn.c_attn`.
    pub fn path(self) -> &'static str {
        match self {
            BlockLayer::Ln1 => "ln_1",
            BlockLayer::AttnQkv => "attn.c_attn",
            BlockLayer::AttnOut => "attn.c_proj",
            BlockLayer::Ln2 => "ln_2",
            BlockLayer::MlpIn => "mlp.c_fc",
            BlockLayer::MlpUp => "mlp.w_up",
            BlockLayer::MlpOut => "mlp.c_proj",
        }
    }

    /// True for the two norms.
    pub fn is_norm(self) -> bool {
        matches!(self, BlockLayer::Ln1 | BlockLayer::Ln2)
    }

    /// True for the projections that write a residual branch (zeroed in an identity block).
    pub fn is_output_projection(self) -> bool {
        matches!(self, BlockLayer::AttnOut | BlockLayer::MlpOut)
    }

    /// The LoRA target that adapts this linear layer (`None` for the norms).
    pub fn lora_target(self) -> Option<LoraTarget> {
        match self {
            BlockLayer::Ln1 | BlockLayer::Ln2 => None,
            BlockLayer::AttnQkv => Some(LoraTarget::Attn),
            BlockLayer::AttnOut => Some(LoraTarget::AttnProj),
            BlockLayer::MlpIn | BlockLayer::MlpUp => Some(LoraTarget::Mlp),
            BlockLayer::MlpOut => Some(LoraTarget::MlpProj),
        }
    }

    /// `(in, out)` of this linear layer under `config`; `None` for the norms and for
    /// `w_up` outside SwiGLU.
    pub fn linear_dims(self, config: &ModelConfig) -> Option<(usize, usize)> {
        let (d, a, h) = (config.d_model, config.attn_width(), config.mlp_hidden());
        match self {
            BlockLayer::Ln1 | BlockLayer::Ln2 => None,
            BlockLayer::AttnQkv => Some((d, 3 * a)),
            BlockLayer::AttnOut => Some((a, d)),
            BlockLayer::MlpIn => Some((d, h)),
            BlockLayer::MlpUp => (config.mlp == MlpKind::Swiglu).then_some((d, h)),
            BlockLayer::MlpOut => Some((h, d)),
        }
    }

    /// True when this linear layer has biases under `config` (Pattention's tokens have none).
    fn linear_bias(self, config: &ModelConfig) -> bool {
        match self {
            BlockLayer::MlpIn | BlockLayer::MlpOut => {
                config.bias && config.mlp != MlpKind::Pattention
            }
            _ => config.bias,
        }
    }

    /// The role of this linear layer's weight.
    fn weight_role(self, config: &ModelConfig) -> Role {
        match self {
            BlockLayer::Ln1 | BlockLayer::Ln2 => Role::NormGain,
            BlockLayer::AttnQkv | BlockLayer::AttnOut => Role::AttentionMatrix,
            BlockLayer::MlpIn | BlockLayer::MlpOut if config.mlp == MlpKind::Pattention => {
                Role::ParameterTokens
            }
            BlockLayer::MlpIn | BlockLayer::MlpUp | BlockLayer::MlpOut => Role::MlpMatrix,
        }
    }
}

/// Where a tensor lives in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// `wte`.
    TokenEmbedding,
    /// `wpe`.
    PositionEmbedding,
    /// `h.<block>.<layer>`: a layer of a distinct block (weight set).
    Block {
        /// The block index.
        block: usize,
        /// The layer inside the block.
        layer: BlockLayer,
    },
    /// `dwa.<after>`: the DWA after layer `after`.
    Dwa {
        /// The layer the DWA follows.
        after: usize,
    },
    /// `vres.<layer>`: the value residual's mixing weights of layer `layer` (`>= 1`).
    ValueResidual {
        /// The layer whose values are mixed.
        layer: usize,
    },
    /// `laurel.<layer>`: LAuReL around layer `layer`.
    Laurel {
        /// The layer whose residual connection it augments.
        layer: usize,
    },
    /// `hyper.<layer>`: the hyper-connection around layer `layer`.
    Hyper {
        /// The layer it connects.
        layer: usize,
    },
    /// `attnres.<query>`: the attention residuals' pseudo-query before sublayer `query`
    /// (`2i`: block `i`'s attention, `2i + 1`: its MLP, `2L`: the final norm).
    AttnRes {
        /// The sublayer it feeds.
        query: usize,
    },
    /// `mudd.<layer>`: the MUDD connection after layer `layer`.
    Mudd {
        /// The layer it follows.
        layer: usize,
    },
    /// `ln_f`.
    FinalNorm,
    /// `lm_head`.
    Head,
}

impl Location {
    /// The layer's path, e.g. `h.3.attn.c_attn` or `dwa.2`.
    pub fn path(self) -> String {
        match self {
            Location::TokenEmbedding => "wte".to_owned(),
            Location::PositionEmbedding => "wpe".to_owned(),
            Location::Block { block, layer } => format!("h.{block}.{}", layer.path()),
            Location::Dwa { after } => format!("dwa.{after}"),
            Location::ValueResidual { layer } => format!("vres.{layer}"),
            Location::Laurel { layer } => format!("laurel.{layer}"),
            Location::Hyper { layer } => format!("hyper.{layer}"),
            Location::AttnRes { query } => format!("attnres.{query}"),
            Location::Mudd { layer } => format!("mudd.{layer}"),
            Location::FinalNorm => "ln_f".to_owned(),
            Location::Head => "lm_head".to_owned(),
        }
    }

    /// The full name of `slot` here, e.g. `h.3.attn.c_attn.weight`.
    pub fn name(self, slot: Slot) -> String {
        format!("{}.{}", self.path(), slot.suffix())
    }

    /// The block index for a block tensor.
    pub fn block(self) -> Option<usize> {
        match self {
            Location::Block { block, .. } => Some(block),
            _ => None,
        }
    }
}

/// Which tensor of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// `weight` (of an embedding, linear layer or norm).
    Weight,
    /// `bias`.
    Bias,
    /// `lora_a`, a LoRA down projection.
    LoraA,
    /// `lora_b`, a LoRA up projection.
    LoraB,
    /// `alpha`, DWA weights (and LAuReL-RW's `(α, β)`).
    Alpha,
    /// `lambda`, a value residual's mixing weights.
    Lambda,
    /// `down`, LAuReL-LR's `A`.
    Down,
    /// `up`, LAuReL-LR's `B`.
    Up,
    /// `read`, a hyper-connection's static read weights.
    Read,
    /// `mix`, a hyper-connection's static stream mixing.
    Mix,
    /// `write`, a hyper-connection's static write weights.
    Write,
    /// `dyn_alpha`, a dynamic hyper-connection's read and mixing projection.
    DynAlpha,
    /// `dyn_beta`, a dynamic hyper-connection's write projection.
    DynBeta,
    /// `scales`, a dynamic hyper-connection's `(s_α, s_β)`.
    Scales,
    /// `query`, an attention residual's pseudo-query.
    Query,
    /// `static`, a MUDD connection's static weights.
    Static,
}

impl Slot {
    /// The name suffix, e.g. `lora_a`.
    pub fn suffix(self) -> &'static str {
        match self {
            Slot::Weight => "weight",
            Slot::Bias => "bias",
            Slot::LoraA => "lora_a",
            Slot::LoraB => "lora_b",
            Slot::Alpha => "alpha",
            Slot::Lambda => "lambda",
            Slot::Down => "down",
            Slot::Up => "up",
            Slot::Read => "read",
            Slot::Mix => "mix",
            Slot::Write => "write",
            Slot::DynAlpha => "dyn_alpha",
            Slot::DynBeta => "dyn_beta",
            Slot::Scales => "scales",
            Slot::Query => "query",
            Slot::Static => "static",
        }
    }

    /// The slot with this suffix.
    fn from_suffix(suffix: &str) -> Option<Slot> {
        [
            Slot::Weight,
            Slot::Bias,
            Slot::LoraA,
            Slot::LoraB,
            Slot::Alpha,
            Slot::Lambda,
            Slot::Down,
            Slot::Up,
            Slot::Read,
            Slot::Mix,
            Slot::Write,
            Slot::DynAlpha,
            Slot::DynBeta,
            Slot::Scales,
            Slot::Query,
            Slot::Static,
        ]
        .into_iter()
        .find(|s| s.suffix() == suffix)
    }
}

/// One parameter tensor of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Where it lives.
    pub location: Location,
    /// Which tensor of that layer.
    pub slot: Slot,
    /// Its shape.
    pub shape: Vec<i64>,
    /// What it does.
    pub role: Role,
    /// False for a frozen LoRA base (`lora.freeze_base`): kept in checkpoints, no gradient.
    pub trainable: bool,
}

impl ParamSpec {
    /// The tensor's name, e.g. `h.3.attn.c_attn.weight`.
    pub fn name(&self) -> String {
        self.location.name(self.slot)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }
}

/// Reads a parameter name back into its location and slot; `None` for a name no strata
/// model has (the shape is not checked: compare with [`schema`] for that).
pub fn parse(name: &str) -> Option<(Location, Slot)> {
    let (path, suffix) = name.rsplit_once('.')?;
    let slot = Slot::from_suffix(suffix)?;
    let location = match path {
        "wte" => Location::TokenEmbedding,
        "wpe" => Location::PositionEmbedding,
        "ln_f" => Location::FinalNorm,
        "lm_head" => Location::Head,
        _ => {
            let (head, rest) = path.split_once('.')?;
            let index: usize = match rest.split_once('.') {
                Some((i, _)) => i.parse().ok()?,
                None => rest.parse().ok()?,
            };
            match head {
                "dwa" if rest == index.to_string() => Location::Dwa { after: index },
                "vres" if rest == index.to_string() => Location::ValueResidual { layer: index },
                "laurel" if rest == index.to_string() => Location::Laurel { layer: index },
                "hyper" if rest == index.to_string() => Location::Hyper { layer: index },
                "attnres" if rest == index.to_string() => Location::AttnRes { query: index },
                "mudd" if rest == index.to_string() => Location::Mudd { layer: index },
                "h" => {
                    let (_, layer) = rest.split_once('.')?;
                    let layer = BlockLayer::ALL.into_iter().find(|l| l.path() == layer)?;
                    Location::Block {
                        block: index,
                        layer,
                    }
                }
                _ => return None,
            }
        }
    };
    (location.name(slot) == name).then_some((location, slot))
}

/// Every parameter tensor of a model with `config`, in creation order: `wte`, `wpe`, each
/// distinct block (`ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.w_up`,
/// `mlp.c_proj`; per linear `weight`, `bias`, `lora_a`, `lora_b`), the DWAs, the value
/// residual weights, the LAuReL weights, the hyper-connections, the attention residuals'
/// queries, the MUDD connections, `ln_f`, `lm_head`. A tied head is the token embedding and is not listed twice.
pub fn schema(config: &ModelConfig) -> Vec<ParamSpec> {
    let (v, d) = (config.vocab_size as i64, config.d_model as i64);
    let mut out = Vec::new();
    let mut push = |location, slot, shape: Vec<i64>, role, trainable| {
        out.push(ParamSpec {
            location,
            slot,
            shape,
            role,
            trainable,
        })
    };
    push(
        Location::TokenEmbedding,
        Slot::Weight,
        vec![v, d],
        Role::TokenEmbedding,
        true,
    );
    if config.positions == PositionKind::Learned {
        push(
            Location::PositionEmbedding,
            Slot::Weight,
            vec![config.block_size as i64, d],
            Role::PositionEmbedding,
            true,
        );
    }
    let norm_bias = config.bias && config.norm == NormKind::Layernorm;
    for block in 0..config.n_blocks() {
        for layer in BlockLayer::ALL {
            let location = Location::Block { block, layer };
            if layer.is_norm() {
                push(location, Slot::Weight, vec![d], Role::NormGain, true);
                if norm_bias {
                    push(location, Slot::Bias, vec![d], Role::Bias, true);
                }
                continue;
            }
            let Some((i, o)) = layer.linear_dims(config) else {
                continue;
            };
            let lora = layer.lora_target().and_then(|t| config.lora_for(t));
            linear(
                &mut push,
                location,
                (i, o),
                layer.linear_bias(config),
                layer.weight_role(config),
                lora,
            );
        }
    }
    for after in 0..config.n_layer {
        if let (true, Some(dwa)) = (config.dwa_after(after), config.dwa)
            && let Ok(selection) = Selection::dilated(after + 1, dwa.dilation)
        {
            push(
                Location::Dwa { after },
                Slot::Alpha,
                vec![selection.count as i64],
                Role::DwaWeight,
                true,
            );
        }
    }
    if config.depth.value_residual {
        for layer in 1..config.n_layer {
            let location = Location::ValueResidual { layer };
            push(location, Slot::Lambda, vec![2], Role::DepthScalar, true);
        }
    }
    if let Some(laurel) = config.depth.laurel {
        for layer in 0..config.n_layer {
            let location = Location::Laurel { layer };
            match (laurel.kind, laurel.rank) {
                (crate::config::LaurelKind::Rw, _) => {
                    push(location, Slot::Alpha, vec![2], Role::DepthScalar, true)
                }
                (crate::config::LaurelKind::Lr, rank) => {
                    let r = rank.unwrap_or(1) as i64;
                    push(location, Slot::Down, vec![r, d], Role::DepthMatrix, true);
                    push(location, Slot::Up, vec![d, r], Role::DepthMatrix, true);
                }
            }
        }
    }
    if let Some(hyper) = config.depth.hyper {
        let n = hyper.streams as i64;
        for layer in 0..config.n_layer {
            let location = Location::Hyper { layer };
            push(location, Slot::Read, vec![n], Role::DepthScalar, true);
            push(location, Slot::Mix, vec![n * n], Role::DepthScalar, true);
            push(location, Slot::Write, vec![n], Role::DepthScalar, true);
            if hyper.dynamic {
                push(
                    location,
                    Slot::DynAlpha,
                    vec![1 + n, d],
                    Role::DepthMatrix,
                    true,
                );
                push(location, Slot::DynBeta, vec![1, d], Role::DepthMatrix, true);
                push(location, Slot::Scales, vec![2], Role::DepthScalar, true);
            }
        }
    }
    if config.depth.attn_res {
        for query in 1..=2 * config.n_layer {
            let location = Location::AttnRes { query };
            push(location, Slot::Query, vec![d], Role::DepthScalar, true);
        }
    }
    if config.depth.mudd {
        for layer in 0..config.n_layer {
            let location = Location::Mudd { layer };
            let cj = (crate::mudd::ways(layer, config.n_layer) * (layer + 2)) as i64;
            push(location, Slot::Static, vec![cj], Role::DepthScalar, true);
            push(location, Slot::Down, vec![cj, d], Role::DepthMatrix, true);
            push(location, Slot::Up, vec![cj, cj], Role::DepthMatrix, true);
        }
    }
    push(
        Location::FinalNorm,
        Slot::Weight,
        vec![d],
        Role::NormGain,
        true,
    );
    if norm_bias {
        push(Location::FinalNorm, Slot::Bias, vec![d], Role::Bias, true);
    }
    if !config.tied_embeddings {
        linear(
            &mut push,
            Location::Head,
            (config.d_model, config.vocab_size),
            false,
            Role::Head,
            config.lora_for(LoraTarget::Head),
        );
    }
    out
}

/// Pushes a linear layer's tensors: weight, bias, LoRA `A` and `B`.
fn linear(
    push: &mut impl FnMut(Location, Slot, Vec<i64>, Role, bool),
    location: Location,
    (inputs, outputs): (usize, usize),
    bias: bool,
    role: Role,
    lora: Option<&crate::config::LoraConfig>,
) {
    let (i, o) = (inputs as i64, outputs as i64);
    let base_trainable = !lora.is_some_and(|l| l.freeze_base);
    push(location, Slot::Weight, vec![o, i], role, base_trainable);
    if bias {
        push(location, Slot::Bias, vec![o], Role::Bias, base_trainable);
    }
    if let Some(lora) = lora {
        let r = lora.rank as i64;
        push(location, Slot::LoraA, vec![r, i], Role::LoraA, true);
        push(location, Slot::LoraB, vec![o, r], Role::LoraB, true);
    }
}
