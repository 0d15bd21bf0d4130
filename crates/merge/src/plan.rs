//! Layer plans: which source layer each layer of a new model copies (or shares), and the
//! expansion of a trained model's tensors by a plan.
//!
//! Spellings ([`LayerPlanSpec`]): `"1-1-2-2"` or `[1, 1, 2, 2]` (source layers counted from
//! 1, as in the literature; in the text form `I` inserts a block that starts as the identity,
//! LLaMA Pro style: a copy of the block before it with zeroed output projections), `slices = [[0, 2], [1, 3]]` (0-based half-open ranges, as
//! mergekit's `layer_range`), and `solar = { drop = m }` (SOLAR's depth up-scaling: two copies
//! of an n-layer model, the first without its last m layers, the second without its first m).
//!
//! **DenseFormer sources.** A new DWA after new layer `i` copies from source layer `s =
//! plan[i]`: each source weight on stack entry `j` goes to the latest entry of the new stack,
//! among those the new DWA reads, that holds source entry `j`'s output (the embedding is entry
//! 0 in both). Weights with no such entry are dropped, and layers whose source has no DWA get
//! the identity initialisation. With the identity plan this reproduces the source exactly;
//! `dwa = "identity"` instead starts every DWA of the new model at the identity.

use crate::methods::State;
use serde::{Deserialize, Serialize};
use strata_core::schema::{self, Location, Slot};
use strata_core::{ModelConfig, SharingConfig};
use strata_kernels::Selection;
use strata_tensor::{Error, Result, TensorExt};
use tch::{Kind, Tensor};

/// One layer of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanEntry {
    /// A copy (or, tied, a share) of source layer `n` (0-based).
    Source(usize),
    /// A new block that starts as the identity: a copy of the nearest earlier copied block
    /// (or the first one) with its attention and MLP output projections zeroed.
    Identity,
}

/// A plan: what every layer of the new model starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// One entry per new layer.
    pub entries: Vec<PlanEntry>,
}

/// A plan as written in a config: exactly one of `plan`, `slices`, `solar`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerPlanSpec {
    /// In a merge config without a merge method: the model to expand (default: `base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<std::path::PathBuf>,
    /// Source layers counted from 1: `"1-1-2-2"` or `[1, 1, 2, 2]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanList>,
    /// 0-based half-open ranges of source layers, concatenated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<Vec<[usize; 2]>>,
    /// SOLAR depth up-scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solar: Option<Solar>,
    /// Repeated layers share one block (weight-shared depth) instead of getting copies.
    #[serde(default)]
    pub tied: bool,
    /// How the new model's DWA weights are built.
    #[serde(default)]
    pub dwa: DwaInit,
}

/// `"1-1-2-2"` or `[1, 1, 2, 2]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlanList {
    /// Dash-separated layer numbers from 1.
    Text(String),
    /// Layer numbers from 1.
    Numbers(Vec<usize>),
}

/// SOLAR's depth up-scaling parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Solar {
    /// Layers dropped from the end of the first copy and the start of the second.
    pub drop: usize,
}

/// How the DWA weights of an expanded DenseFormer are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DwaInit {
    /// Carry each source weight to the matching entry of the new stack (module docs).
    #[default]
    Map,
    /// Start every DWA at the identity (1 on the current output).
    Identity,
}

impl LayerPlan {
    /// Parses `"1-1-2-2"` (layers counted from 1; `I` for an identity block).
    pub fn parse(text: &str) -> Result<Self> {
        let entries = text
            .split('-')
            .map(|part| match part.trim() {
                "I" | "i" => Ok(PlanEntry::Identity),
                number => match number.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(PlanEntry::Source(n - 1)),
                    _ => Err(Error::Invalid(format!(
                        "layer plan `{text}`: expected layer numbers from 1 or `I` separated by \
                         `-` (e.g. 1-1-2-2 or 1-I-2-I), found `{part}`"
                    ))),
                },
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { entries })
    }

    /// A plan copying the given 0-based source layers.
    pub fn from_sources(sources: impl IntoIterator<Item = usize>) -> Self {
        Self {
            entries: sources.into_iter().map(PlanEntry::Source).collect(),
        }
    }

    /// Concatenated 0-based half-open ranges.
    pub fn from_slices(slices: &[[usize; 2]]) -> Result<Self> {
        let mut sources = Vec::new();
        for &[start, end] in slices {
            if start >= end {
                return Err(Error::Invalid(format!(
                    "layer slice [{start}, {end}]: expected a half-open range with start < end"
                )));
            }
            sources.extend(start..end);
        }
        Ok(Self::from_sources(sources))
    }

    /// SOLAR depth up-scaling of an `n`-layer model dropping `m` layers at the seam.
    pub fn solar(n: usize, m: usize) -> Result<Self> {
        if m >= n {
            return Err(Error::Invalid(format!(
                "solar: drop = {m} must be smaller than the source's {n} layers"
            )));
        }
        Ok(Self::from_sources((0..n - m).chain(m..n)))
    }

    /// The plan a spec describes for a source of `source_layers` layers, checked against it.
    pub fn from_spec(spec: &LayerPlanSpec, source_layers: usize) -> Result<Self> {
        let given = [
            spec.plan.is_some(),
            spec.slices.is_some(),
            spec.solar.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(Error::Invalid(
                "layers: expected exactly one of `plan`, `slices` or `solar`".to_owned(),
            ));
        }
        let plan = match (&spec.plan, &spec.slices, spec.solar) {
            (Some(PlanList::Text(text)), _, _) => Self::parse(text)?,
            (Some(PlanList::Numbers(numbers)), _, _) => {
                if numbers.contains(&0) {
                    return Err(Error::Invalid(format!(
                        "layer plan {numbers:?}: layers are counted from 1"
                    )));
                }
                Self::from_sources(numbers.iter().map(|n| n - 1))
            }
            (_, Some(slices), _) => Self::from_slices(slices)?,
            (_, _, Some(solar)) => Self::solar(source_layers, solar.drop)?,
            _ => unreachable!("exactly one spelling is present"),
        };
        plan.check(source_layers)?;
        Ok(plan)
    }

    /// Fails when the plan copies no layer or names a layer the source does not have.
    pub fn check(&self, source_layers: usize) -> Result<()> {
        if !self
            .entries
            .iter()
            .any(|e| matches!(e, PlanEntry::Source(_)))
        {
            return Err(Error::Invalid(
                "layer plan: expected at least one source layer".to_owned(),
            ));
        }
        let out_of_range = self.entries.iter().enumerate().find_map(|(i, e)| match e {
            PlanEntry::Source(l) if *l >= source_layers => Some((i, *l)),
            _ => None,
        });
        if let Some((position, layer)) = out_of_range {
            return Err(Error::Invalid(format!(
                "layer plan: new layer {} takes source layer {} but the source has {source_layers} \
                 layers (1 to {source_layers})",
                position + 1,
                layer + 1
            )));
        }
        Ok(())
    }
}

/// A model built by a plan: its config and tensors.
pub struct Expanded {
    /// The new model's config.
    pub config: ModelConfig,
    /// The new model's tensors.
    pub state: State,
}

/// Builds the model `plan` describes from a trained `source` (config and tensors): copied
/// blocks, or blocks shared between the layers that repeat one source block when `tied`.
pub fn expand(
    config: &ModelConfig,
    source: &State,
    plan: &LayerPlan,
    tied: bool,
    dwa: DwaInit,
) -> Result<Expanded> {
    plan.check(config.n_layer)?;
    if !config.depth.is_off() {
        return Err(Error::Invalid(format!(
            "a layer plan cannot expand a model with depth methods (model.depth: {}): no rule \
             places their per-layer tensors yet",
            config.depth.label()
        )));
    }
    let origins = block_origins(config, plan);
    let (new_blocks, sharing) = if tied {
        let mut distinct: Vec<BlockOrigin> = Vec::new();
        let layer_plan: Vec<usize> = origins
            .iter()
            .map(
                |o| match distinct.iter().position(|d| d == o && !o.identity) {
                    Some(i) => i,
                    None => {
                        distinct.push(*o);
                        distinct.len() - 1
                    }
                },
            )
            .collect();
        let identity = layer_plan.iter().enumerate().all(|(i, b)| i == *b);
        let sharing = (!identity).then(|| SharingConfig {
            plan: Some(layer_plan),
            ..Default::default()
        });
        (distinct, sharing)
    } else {
        (origins, None)
    };
    let mut new_config = config.clone();
    new_config.n_layer = plan.entries.len();
    new_config.sharing = sharing;
    new_config.validate("expanded model")?;

    let mut state = State::new();
    let parsed = |name: &str| -> Result<(Location, Slot)> {
        schema::parse(name).ok_or_else(|| {
            Error::Invalid(format!(
                "the source model has a tensor `{name}` that no strata model has; a layer plan \
                 cannot place it"
            ))
        })
    };
    for (name, tensor) in source {
        if !matches!(
            parsed(name)?.0,
            Location::Block { .. } | Location::Dwa { .. }
        ) {
            state.insert(name.clone(), tensor.f_detach_copy()?);
        }
    }
    for (new, origin) in new_blocks.iter().enumerate() {
        let old = origin.block;
        let mut found = false;
        for (name, tensor) in source {
            let Location::Block { block, layer } = parsed(name)?.0 else {
                continue;
            };
            if block != old {
                continue;
            }
            let slot = parsed(name)?.1;
            let mut copy = tensor.f_detach_copy()?;
            // A LoRA adapter's A may stay: with B zero it adds nothing, and B still learns.
            if origin.identity && layer.is_output_projection() && slot != Slot::LoraA {
                let _ = copy.f_zero_()?;
            }
            state.insert(Location::Block { block: new, layer }.name(slot), copy);
            found = true;
        }
        if !found {
            return Err(Error::Invalid(format!(
                "the source model has no tensors for block {old} (`h.{old}.*`)"
            )));
        }
    }
    if config.dwa.is_some() {
        add_dwa_weights(config, source, &new_config, plan, dwa, &mut state)?;
    }
    Ok(Expanded {
        config: new_config,
        state,
    })
}

/// Where a block of the new model comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockOrigin {
    /// The source block (weight set) it copies.
    block: usize,
    /// True for an inserted identity block (output projections zeroed).
    identity: bool,
}

/// The origin of each new layer's block: its source layer's block, or for an identity entry
/// the block of the nearest earlier source entry (the first source entry if none is earlier).
fn block_origins(config: &ModelConfig, plan: &LayerPlan) -> Vec<BlockOrigin> {
    let source_blocks = config.block_plan();
    let first = plan.entries.iter().find_map(|e| match e {
        PlanEntry::Source(l) => Some(*l),
        PlanEntry::Identity => None,
    });
    // Validated: a plan has a source layer (0 only for a plan of identities alone).
    let mut previous = first.unwrap_or(0);
    plan.entries
        .iter()
        .map(|entry| match entry {
            PlanEntry::Source(l) => {
                previous = *l;
                BlockOrigin {
                    block: source_blocks[*l],
                    identity: false,
                }
            }
            PlanEntry::Identity => BlockOrigin {
                block: source_blocks[previous],
                identity: true,
            },
        })
        .collect()
}

/// The source stack entry held by each entry of the new stack (entry 0: the embedding);
/// `None` for identity blocks, whose outputs the source never had.
fn source_entries(plan: &LayerPlan) -> Vec<Option<usize>> {
    std::iter::once(Some(0))
        .chain(plan.entries.iter().map(|e| match e {
            PlanEntry::Source(s) => Some(s + 1),
            PlanEntry::Identity => None,
        }))
        .collect()
}

/// Adds `dwa.<i>.alpha` for every DWA of the new model (module docs).
fn add_dwa_weights(
    config: &ModelConfig,
    source: &State,
    new_config: &ModelConfig,
    plan: &LayerPlan,
    init: DwaInit,
    state: &mut State,
) -> Result<()> {
    let dilation = new_config.dwa.map_or(1, |d| d.dilation);
    let held = source_entries(plan);
    let kind = source
        .iter()
        .find(|(name, _)| matches!(schema::parse(name), Some((Location::Dwa { .. }, _))))
        .map_or(Kind::Float, |(_, t)| t.kind());
    for i in 0..new_config.n_layer {
        if !new_config.dwa_after(i) {
            continue;
        }
        let selected: Vec<usize> = Selection::dilated(i + 1, dilation)?.indices().collect();
        let mut alpha = vec![0.0f64; selected.len()];
        // The DWA of the source layer this layer copies, when it had one and is carried over.
        let carried = match (init, plan.entries[i]) {
            (DwaInit::Map, PlanEntry::Source(s)) if config.dwa_after(s) => source
                .get(&Location::Dwa { after: s }.name(Slot::Alpha))
                .map(|weights| (s, weights)),
            _ => None,
        };
        match carried {
            Some((s, weights)) => {
                let values = weights.to_f64_vec()?;
                for (j, w) in Selection::dilated(s + 1, dilation)?.indices().zip(values) {
                    let target = selected.iter().rposition(|&m| held[m] == Some(j));
                    match target {
                        Some(slot) => alpha[slot] += w,
                        None => tracing::debug!(
                            layer = i,
                            source_entry = j,
                            "DWA weight has no matching entry in the new stack; dropped"
                        ),
                    }
                }
            }
            None => {
                if let Some(current) = alpha.last_mut() {
                    *current = 1.0; // a DWA reads its current output last
                }
            }
        }
        state.insert(
            Location::Dwa { after: i }.name(Slot::Alpha),
            Tensor::f_from_slice(&alpha)?.f_to_kind(kind)?,
        );
    }
    Ok(())
}
