//! Net2WiderNet for transformers: more MLP units, more attention heads, a wider residual
//! stream, each keeping the function exactly.
//!
//! - **MLP units** (GELU, SwiGLU): a new unit copies a random old one (its incoming rows of
//!   `c_fc`, and of `w_up` for SwiGLU), and the copies share the old outgoing column of
//!   `c_proj`. Exact: copies compute identical activations.
//! - **Heads**: a new head copies a random old head (its query, key and value rows), and the
//!   copies share its columns of the output projection. Exact: heads attend independently.
//!   The head width is kept, so the config records `head_dim` explicitly.
//! - **Residual stream** `d → d'`. When `d'` is a multiple `m·d`, every channel is copied
//!   `m` times (embeddings, norm gains and biases, and the rows of every projection that
//!   writes to the stream). Every matrix that reads the stream gets its input columns split
//!   by `m`. LayerNorm and RMSNorm see the same mean, variance and root mean square, so this
//!   is exact for both. With tied embeddings the output head reads the copies too, so the
//!   final norm's gain and bias are divided by `m`. Any other `d'` is exact for RMSNorm
//!   only. The new channels start at zero (embeddings and writing rows zero, reading columns
//!   small random), and the norm gains are scaled by `sqrt(d/d')` to undo the smaller root
//!   mean square; the norms' epsilon is scaled by `d/d'` with it, so this too is exact.
//!   With `widen_heads` the heads widen with the stream instead (see `head_maps`); rotary
//!   positions refuse, since their frequencies depend on the head width. LayerNorm's mean would shift, so LayerNorm refuses such a `d'`. Attention
//!   and MLP widths are kept.
//!
//! `noise` adds symmetry-breaking noise to the split weights that sums to zero over the
//! copies of each unit, so the grown model computes the same function with it. Without
//! noise, copies get identical gradients and stay identical.

use crate::axis::{AxisMap, Origin, random_sources};
use crate::{Moments, Snapshot, not_larger};
use std::collections::BTreeMap;
use strata_core::schema::{self, BlockLayer, Location, Slot};
use strata_core::{MlpKind, ModelConfig, NormKind, PositionKind};
use strata_merge::State;
use strata_tensor::{Error, Result};
use tch::Tensor;

/// Values for the fresh entries of a grown axis.
#[derive(Clone, Debug)]
pub(crate) enum Fresh {
    /// Zeros.
    Zero,
    /// Normal with this standard deviation.
    Normal(f64),
    /// A constant.
    Const(f64),
    /// Normal with a standard deviation per index of the grown axis (0: zero).
    PerIndex(Vec<f64>),
}

/// How one axis of one tensor grows.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// The tensor axis.
    pub axis: i64,
    /// Where each new index comes from.
    pub map: AxisMap,
    /// Values of fresh entries.
    pub fresh: Fresh,
    /// Add zero-sum symmetry-breaking noise here (split weights only).
    pub noisy: bool,
}

impl Rule {
    /// A rule without noise.
    pub fn new(axis: i64, map: &AxisMap, fresh: Fresh) -> Self {
        Self {
            axis,
            map: map.clone(),
            fresh,
            noisy: false,
        }
    }

    /// The same rule with noise.
    pub fn noisy(mut self) -> Self {
        self.noisy = true;
        self
    }
}

/// Applies `rules_for(location, slot)` to every parameter and moment of `snapshot`; growth
/// `op` refuses a tensor that is not in the schema of the snapshot's config (it has no rule
/// for it).
pub(crate) fn transform(
    op: &str,
    snapshot: &Snapshot,
    config: ModelConfig,
    noise: f64,
    rules_for: impl Fn(Location, Slot) -> Vec<Rule>,
) -> Result<Snapshot> {
    let specs: BTreeMap<String, schema::ParamSpec> = schema::schema(&snapshot.config)
        .into_iter()
        .map(|spec| (spec.name(), spec))
        .collect();
    let mut params = State::new();
    let mut rules_by_name = BTreeMap::new();
    for (name, tensor) in &snapshot.params {
        let Some(spec) = specs.get(name) else {
            return Err(Error::Invalid(format!(
                "growth {op}: tensor {name} is not a parameter of the model being grown \
                 ({} layers, {}), so no growth rule covers it",
                snapshot.config.n_layer,
                snapshot.config.variant_name()
            )));
        };
        if spec.shape != tensor.size() {
            return Err(Error::Shape {
                op: format!("growth {op}: parameter {name}"),
                expected: format!("{:?}", spec.shape),
                got: format!("{:?}", tensor.size()),
            });
        }
        let rules = rules_for(spec.location, spec.slot);
        let mut t = tensor.f_detach_copy()?;
        for rule in &rules {
            let mut shape = t.size();
            shape[rule.axis as usize] = rule.map.len() as i64;
            let fresh = match rule.fresh {
                Fresh::Zero => None,
                Fresh::Normal(std) => Some(
                    Tensor::f_randn(shape.as_slice(), (tensor.kind(), tensor.device()))?
                        .f_mul_scalar(std)?,
                ),
                Fresh::Const(c) => Some(Tensor::f_full(
                    shape.as_slice(),
                    c,
                    (tensor.kind(), tensor.device()),
                )?),
                Fresh::PerIndex(ref stds) => {
                    let mut view = vec![1i64; shape.len()];
                    view[rule.axis as usize] = stds.len() as i64;
                    let stds = Tensor::f_from_slice(stds)?
                        .f_to_kind(tensor.kind())?
                        .f_to_device(tensor.device())?
                        .f_view(view.as_slice())?;
                    Some(
                        Tensor::f_randn(shape.as_slice(), (tensor.kind(), tensor.device()))?
                            .f_mul(&stds)?,
                    )
                }
            };
            let std = if rule.noisy && noise > 0.0 {
                t.f_std(true)?.f_double_value(&[])?
            } else {
                0.0
            };
            t = rule.map.param(&t, rule.axis, fresh.as_ref())?;
            if std > 0.0 {
                let n = rule
                    .map
                    .zero_sum_noise(&shape, rule.axis as usize, noise * std)?;
                t = t.f_add(&n.f_to_kind(t.kind())?.f_to_device(t.device())?)?;
            }
        }
        params.insert(name.clone(), t);
        rules_by_name.insert(name.clone(), rules);
    }
    let moments = match &snapshot.moments {
        None => None,
        Some(m) => {
            let grow = |state: &State, power: i32| -> Result<State> {
                state
                    .iter()
                    .map(|(name, t)| {
                        let mut t = t.f_detach_copy()?;
                        for rule in rules_by_name.get(name).into_iter().flatten() {
                            t = rule.map.moment(&t, rule.axis, power)?;
                        }
                        Ok((name.clone(), t))
                    })
                    .collect()
            };
            Some(Moments {
                exp_avg: grow(&m.exp_avg, 1)?,
                exp_avg_sq: grow(&m.exp_avg_sq, 2)?,
            })
        }
    };
    Ok(Snapshot {
        config,
        params,
        moments,
    })
}

/// Rules for a linear layer's tensor in `slot` when its output axis grows by `out` and/or
/// its input axis by `input`.
pub(crate) fn linear_rules(slot: Slot, out: Option<Rule>, input: Option<Rule>) -> Vec<Rule> {
    let on = |rule: Option<Rule>, axis: i64| {
        rule.map(|mut r| {
            r.axis = axis;
            r
        })
    };
    match slot {
        Slot::Weight => on(out, 0).into_iter().chain(on(input, 1)).collect(),
        Slot::Bias | Slot::LoraB => on(out, 0).into_iter().collect(),
        Slot::LoraA => on(input, 1).into_iter().collect(),
        // Not linear-layer slots (depth-method models are refused before any rule).
        _ => Vec::new(),
    }
}

/// Config of the MLP widened to `hidden` units.
pub fn mlp_config(config: &ModelConfig, hidden: usize) -> Result<ModelConfig> {
    if config.mlp == MlpKind::Pattention {
        return Err(Error::Invalid(
            "growth widen_mlp: a Pattention MLP grows by parameter tokens (op = \
             \"grow_param_tokens\"); copying tokens would change its normalisation"
                .to_owned(),
        ));
    }
    let current = config.mlp_hidden();
    if hidden <= current {
        return Err(not_larger("widen_mlp", "hidden", current, hidden));
    }
    let mut grown = config.clone();
    grown.mlp_hidden = Some(hidden);
    Ok(grown)
}

/// Widens every MLP to `config.mlp_hidden()` units (module docs).
pub fn mlp(snapshot: &Snapshot, config: ModelConfig, noise: f64) -> Result<Snapshot> {
    let (old, new) = (snapshot.config.mlp_hidden(), config.mlp_hidden());
    let maps: Vec<AxisMap> = (0..snapshot.config.n_blocks())
        .map(|_| Ok(AxisMap::duplicate(old, &random_sources(old, new - old)?)))
        .collect::<Result<_>>()?;
    transform("widen_mlp", snapshot, config, noise, |location, slot| {
        let Location::Block { block, layer } = location else {
            return Vec::new();
        };
        let dup = &maps[block];
        match layer {
            BlockLayer::MlpIn | BlockLayer::MlpUp => {
                linear_rules(slot, Some(Rule::new(0, dup, Fresh::Zero)), None)
            }
            BlockLayer::MlpOut => linear_rules(
                slot,
                None,
                Some(Rule::new(1, &dup.split(), Fresh::Zero).noisy()),
            ),
            BlockLayer::Ln1 | BlockLayer::AttnQkv | BlockLayer::AttnOut | BlockLayer::Ln2 => {
                Vec::new()
            }
        }
    })
}

/// Config with `n_head` heads of the current width.
pub fn heads_config(config: &ModelConfig, n_head: usize) -> Result<ModelConfig> {
    if n_head <= config.n_head {
        return Err(not_larger("add_heads", "n_head", config.n_head, n_head));
    }
    let mut grown = config.clone();
    grown.head_dim = Some(config.head_dim());
    grown.n_head = n_head;
    Ok(grown)
}

/// Adds heads to every attention layer (module docs).
pub fn heads(snapshot: &Snapshot, config: ModelConfig, noise: f64) -> Result<Snapshot> {
    let (old, new) = (snapshot.config.n_head, config.n_head);
    let hd = config.head_dim();
    let old_width = old * hd;
    let maps: Vec<(AxisMap, AxisMap)> = (0..snapshot.config.n_blocks())
        .map(|_| {
            let heads = random_sources(old, new - old)?;
            let units = |part: usize| {
                heads
                    .iter()
                    .flat_map(move |&h| (0..hd).map(move |j| part * old_width + h * hd + j))
            };
            let qkv: Vec<usize> = (0..3).flat_map(units).collect();
            let out: Vec<usize> = units(0).collect();
            Ok((
                AxisMap::duplicate(3 * old_width, &qkv),
                AxisMap::duplicate(old_width, &out).split(),
            ))
        })
        .collect::<Result<_>>()?;
    transform("add_heads", snapshot, config, noise, |location, slot| {
        let Location::Block { block, layer } = location else {
            return Vec::new();
        };
        let (qkv, out) = &maps[block];
        match layer {
            BlockLayer::AttnQkv => linear_rules(slot, Some(Rule::new(0, qkv, Fresh::Zero)), None),
            BlockLayer::AttnOut => {
                linear_rules(slot, None, Some(Rule::new(1, out, Fresh::Zero).noisy()))
            }
            BlockLayer::Ln1
            | BlockLayer::Ln2
            | BlockLayer::MlpIn
            | BlockLayer::MlpUp
            | BlockLayer::MlpOut => Vec::new(),
        }
    })
}

/// Config with a residual stream of `d_model` channels, the MLP width kept and the heads
/// kept or (`widen_heads`) widened with the stream.
pub fn residual_config(
    config: &ModelConfig,
    d_model: usize,
    widen_heads: bool,
) -> Result<ModelConfig> {
    let d = config.d_model;
    if d_model <= d {
        return Err(not_larger("widen_residual", "d_model", d, d_model));
    }
    if !d_model.is_multiple_of(d) && config.norm == NormKind::Layernorm {
        return Err(Error::Invalid(format!(
            "growth widen_residual: d_model = {d_model} is not a multiple of the current {d}; \
             with LayerNorm only whole multiples keep the function (new channels would shift \
             its mean), so ask for {} or {}, or use norm = \"rmsnorm\"",
            2 * d,
            3 * d
        )));
    }
    let mut grown = config.clone();
    grown.d_model = d_model;
    grown.head_dim = Some(config.head_dim());
    if widen_heads {
        grown.head_dim = Some(widened_head_dim(config, d_model)?);
    }
    grown.mlp_hidden = Some(config.mlp_hidden());
    if config.mlp == MlpKind::Pattention {
        grown.pattention_tau = Some(config.pattention_tau());
    }
    if !d_model.is_multiple_of(d) {
        // New zero channels shrink the mean square by d/d'; so must the epsilon.
        grown.norm_eps = Some(config.norm_eps() * d as f64 / d_model as f64);
    }
    Ok(grown)
}

/// The head width when heads widen with the stream to `d_model`.
fn widened_head_dim(config: &ModelConfig, d_model: usize) -> Result<usize> {
    let refuse = |why: String| Err(Error::Invalid(format!("growth widen_residual: {why}")));
    if config.positions == PositionKind::Rotary {
        return refuse(
            "widen_heads with rotary positions would change every rotation frequency; keep the \
             heads (widen_heads = false) or add heads"
                .to_owned(),
        );
    }
    if config.qk_norm {
        return refuse(
            "widen_heads with model.qk_norm would change every head's normalised queries and \
             keys; keep the heads (widen_heads = false) or add heads"
                .to_owned(),
        );
    }
    if config.attn_width() != config.d_model {
        return refuse(format!(
            "widen_heads needs heads that span the stream (n_head * head_dim = {} is not \
             d_model = {})",
            config.attn_width(),
            config.d_model
        ));
    }
    if !d_model.is_multiple_of(config.n_head) {
        return refuse(format!(
            "widen_heads: n_head = {} does not divide the new width d_model = {d_model}",
            config.n_head
        ));
    }
    Ok(d_model / config.n_head)
}

/// Row maps of `c_attn` and column maps of `c_proj` when every head widens from `hd` to
/// `hd_new` dimensions. A whole multiple `m` copies each dimension `m` times, with queries
/// scaled by `1/sqrt(m)`: the dot products grow `m`-fold and the attention's `1/sqrt(width)`
/// shrinks by `sqrt(m)`. Otherwise new dimensions are fresh: queries random, keys zero
/// (scores unchanged), values random with zero output columns, and old queries scaled by
/// `sqrt(hd_new / hd)` for the smaller `1/sqrt(width)`.
fn head_maps(n_head: usize, hd: usize, hd_new: usize) -> ((AxisMap, Fresh), (AxisMap, Fresh)) {
    let width = n_head * hd;
    let copies = hd_new.is_multiple_of(hd);
    let m = (hd_new / hd) as f64;
    let (mut qkv, mut qkv_std, mut out, mut out_std) = (vec![], vec![], vec![], vec![]);
    for part in 0..3 {
        for h in 0..n_head {
            for j in 0..hd_new {
                let from = part * width + h * hd + j % hd;
                let query = part == 0;
                if copies || j < hd {
                    let scale = match (query, copies) {
                        (false, _) => 1.0,
                        (true, true) => 1.0 / m.sqrt(),
                        (true, false) => (hd_new as f64 / hd as f64).sqrt(),
                    };
                    qkv.push(Origin::Copy { from, scale });
                    qkv_std.push(0.0);
                } else {
                    qkv.push(Origin::Fresh);
                    qkv_std.push(if part == 1 { 0.0 } else { 0.02 });
                }
                if part == 0 {
                    out.push(if copies || j < hd {
                        Origin::Copy {
                            from: from % width,
                            scale: 1.0,
                        }
                    } else {
                        Origin::Fresh
                    });
                    out_std.push(0.0);
                }
            }
        }
    }
    let out_map = AxisMap {
        origins: out,
        old_len: width,
    };
    (
        (
            AxisMap {
                origins: qkv,
                old_len: 3 * width,
            },
            Fresh::PerIndex(qkv_std),
        ),
        (
            if copies { out_map.split() } else { out_map },
            Fresh::PerIndex(out_std),
        ),
    )
}

/// Widens the residual stream (module docs).
pub fn residual(snapshot: &Snapshot, config: ModelConfig, noise: f64) -> Result<Snapshot> {
    let old = &snapshot.config;
    let (d, d_new) = (old.d_model, config.d_model);
    let tied = old.tied_embeddings;
    // (writers, readers, norm gains, final norm) rules for the stream axis.
    let (write, read, gain, final_gain, final_bias) = if d_new.is_multiple_of(d) {
        let m = (d_new / d) as f64;
        let sources: Vec<usize> = (0..d_new).map(|i| i % d).collect();
        let dup = AxisMap::duplicate(d, &sources);
        let final_scale = if tied { 1.0 / m } else { 1.0 };
        (
            Rule::new(0, &dup, Fresh::Zero),
            Rule::new(0, &dup.split(), Fresh::Zero).noisy(),
            Rule::new(0, &dup, Fresh::Zero),
            Rule::new(0, &dup.scaled(final_scale), Fresh::Zero),
            Rule::new(0, &dup.scaled(final_scale), Fresh::Zero),
        )
    } else {
        let c = (d as f64 / d_new as f64).sqrt();
        let extend = AxisMap::extend(d, d_new - d);
        let gain = Rule::new(0, &extend.scaled(c), Fresh::Const(c));
        (
            Rule::new(0, &extend, Fresh::Zero),
            Rule::new(0, &extend, Fresh::Normal(0.02)),
            gain.clone(),
            gain,
            Rule::new(0, &extend, Fresh::Zero),
        )
    };
    let on = |rule: &Rule, axis: i64| {
        let mut r = rule.clone();
        r.axis = axis;
        r
    };
    let heads = (config.head_dim() != old.head_dim())
        .then(|| head_maps(old.n_head, old.head_dim(), config.head_dim()));
    transform(
        "widen_residual",
        snapshot,
        config,
        noise,
        |location, slot| match location {
            Location::TokenEmbedding | Location::PositionEmbedding => vec![on(&write, 1)],
            Location::FinalNorm if slot == Slot::Weight => vec![final_gain.clone()],
            Location::FinalNorm => vec![final_bias.clone()],
            Location::Head => linear_rules(slot, None, Some(read.clone())),
            // Depth-method models are refused before any rule (`refuse_depth_methods`).
            Location::Dwa { .. }
            | Location::ValueResidual { .. }
            | Location::Laurel { .. }
            | Location::Hyper { .. }
            | Location::AttnRes { .. }
            | Location::Mudd { .. } => Vec::new(),
            Location::Block { layer, .. } => match layer {
                BlockLayer::Ln1 | BlockLayer::Ln2 if slot == Slot::Weight => vec![gain.clone()],
                BlockLayer::Ln1 | BlockLayer::Ln2 => vec![write.clone()],
                BlockLayer::AttnQkv => {
                    let rows = heads
                        .as_ref()
                        .map(|((map, fresh), _)| Rule::new(0, map, fresh.clone()));
                    linear_rules(slot, rows, Some(read.clone()))
                }
                BlockLayer::AttnOut => {
                    let columns = heads
                        .as_ref()
                        .map(|(_, (map, fresh))| Rule::new(1, map, fresh.clone()).noisy());
                    linear_rules(slot, Some(write.clone()), columns)
                }
                BlockLayer::MlpIn | BlockLayer::MlpUp => {
                    linear_rules(slot, None, Some(read.clone()))
                }
                BlockLayer::MlpOut => linear_rules(slot, Some(write.clone()), None),
            },
        },
    )
}
