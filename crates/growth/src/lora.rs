//! LoRA rank growth and ReLoRA's merge-and-restart.
//!
//! An adapted linear computes `x · (W0 + s · B · A)ᵀ` with `A` (`X.lora_a`, `[r, in]`) and
//! `B` (`X.lora_b`, `[out, r]`), and a fixed scale `s` (not `alpha / r`).
//!
//! - Rank growth appends rows to `A` (drawn like a fresh `A`, normal with std `1/sqrt(in)`)
//!   and zero columns to `B`: `B · A` gains `0 · A_new`, so the function is kept, while the new
//!   columns of `B` get gradients through the random new rows of `A` from the first step. The
//!   old moments are kept, the new entries start at zero.
//! - ReLoRA's restart folds `s · B · A` into `W0` (in f64, stored in the weight's dtype),
//!   re-draws `A` and zeroes `B`: again the function is kept. The adapters' moments restart
//!   from zero, every other moment is kept; the learning-rate re-warm is the trainer's.
//!
//! Random draws use libtorch's global generator, which [`crate::GrowthOp::apply`] seeds; the
//! parameters are visited in name order, so a seed fixes the result.

use crate::axis::AxisMap;
use crate::widen::{Fresh, Rule, transform};
use crate::{Moments, Snapshot, not_larger};
use std::collections::{BTreeMap, BTreeSet};
use strata_core::schema::{self, ParamSpec, Slot};
use strata_core::{LoraConfig, ModelConfig};
use strata_merge::State;
use strata_tensor::{Error, Result};
use tch::{Kind, Tensor};

/// The tensors of a LoRA model that growth treats apart, by name, from the parameter
/// schema: each adapter tensor (`A` or `B`) with the linear it adapts, and each adapted
/// linear's base weight.
struct Adapters {
    /// `h.0.attn.c_attn.lora_a` -> (`h.0.attn.c_attn`, [`Slot::LoraA`]), and `B` likewise.
    tensors: BTreeMap<String, (String, Slot)>,
    /// `h.0.attn.c_attn.weight` -> `h.0.attn.c_attn`, for every adapted linear.
    weights: BTreeMap<String, String>,
}

impl Adapters {
    /// The adapters among a model's parameter schema `specs` (none without `model.lora`).
    fn of(specs: &[ParamSpec]) -> Self {
        let tensors: BTreeMap<String, (String, Slot)> = specs
            .iter()
            .filter(|s| matches!(s.slot, Slot::LoraA | Slot::LoraB))
            .map(|s| (s.name(), (s.location.path(), s.slot)))
            .collect();
        let linears: BTreeSet<&String> = tensors.values().map(|(linear, _)| linear).collect();
        let weights = specs
            .iter()
            .filter(|s| s.slot == Slot::Weight && linears.contains(&s.location.path()))
            .map(|s| (s.name(), s.location.path()))
            .collect();
        Self { tensors, weights }
    }

    /// The adapter slot of tensor `name`, if it is one.
    fn slot(&self, name: &str) -> Option<Slot> {
        self.tensors.get(name).map(|(_, slot)| *slot)
    }

    /// The name of `linear`'s adapter tensor in `slot`.
    fn name(&self, linear: &str, slot: Slot) -> Option<&String> {
        self.tensors
            .iter()
            .find(|(_, (l, s))| l == linear && *s == slot)
            .map(|(name, _)| name)
    }
}

/// The config with every adapter of rank `rank`.
pub fn rank_config(config: &ModelConfig, rank: usize) -> Result<ModelConfig> {
    const OP: &str = "grow_lora_rank";
    let current = lora_of(config, OP)?.rank;
    if rank <= current {
        return Err(not_larger(OP, "lora.rank", current, rank));
    }
    if let Some((name, i, o)) = config
        .lora_linears()
        .into_iter()
        .find(|(_, i, o)| rank > *i.min(o))
    {
        return Err(Error::Invalid(format!(
            "growth {OP}: lora.rank must be at most the rank of every adapted matrix, but \
             {name}: min(in, out) = {} ({i} -> {o}), got {rank}",
            i.min(o)
        )));
    }
    let mut grown = config.clone();
    if let Some(lora) = grown.lora.as_mut() {
        lora.rank = rank;
    }
    Ok(grown)
}

/// Grows every adapter to the rank of `config` (the grown config): new rows of `A` drawn like
/// a fresh `A`, new columns of `B` zero; new moment entries zero, old ones kept.
pub fn grow_rank(snapshot: &Snapshot, config: ModelConfig) -> Result<Snapshot> {
    const OP: &str = "grow_lora_rank";
    let old = lora_of(&snapshot.config, OP)?.rank;
    let new = lora_of(&config, OP)?.rank;
    if new < old {
        return Err(not_larger(OP, "lora.rank", old, new));
    }
    let adapters = adapted(snapshot, OP)?;
    for (name, t) in &snapshot.params {
        match adapters.slot(name) {
            Some(Slot::LoraA) => adapter_dims(name, t, 0, old).map(drop)?,
            Some(_) => adapter_dims(name, t, 1, old).map(drop)?,
            None => {}
        }
    }
    // New rows of A are drawn like a fresh A (std 1/sqrt(in)); new columns of B are zero.
    let inputs: BTreeMap<String, usize> = config
        .lora_linears()
        .into_iter()
        .map(|(linear, inputs, _)| (linear, inputs))
        .collect();
    let extend = AxisMap::extend(old, new - old);
    transform(OP, snapshot, config, 0.0, |location, slot| match slot {
        Slot::LoraA => {
            let std = 1.0 / (inputs.get(&location.path()).copied().unwrap_or(1) as f64).sqrt();
            vec![Rule::new(0, &extend, Fresh::Normal(std))]
        }
        Slot::LoraB => vec![Rule::new(1, &extend, Fresh::Zero)],
        _ => Vec::new(),
    })
}

/// The same config (a restart changes no shape); an error without `model.lora`.
pub fn restart_config(config: &ModelConfig) -> Result<ModelConfig> {
    lora_of(config, "relora_restart")?;
    Ok(config.clone())
}

/// ReLoRA's merge-and-restart: every adapted `X.weight += scale · B · A` (computed in f64),
/// `A` re-drawn, `B` zero; the adapters' moments zero, every other moment kept.
pub fn restart(snapshot: &Snapshot, config: ModelConfig) -> Result<Snapshot> {
    const OP: &str = "relora_restart";
    let lora = lora_of(&config, OP)?;
    let rank = lora.rank;
    if lora_of(&snapshot.config, OP)?.rank != rank {
        return Err(Error::Invalid(format!(
            "growth {OP}: the restarted config must keep lora.rank = {}, got {rank}",
            lora_of(&snapshot.config, OP)?.rank
        )));
    }
    let scale = lora.scale;
    let adapters = adapted(snapshot, OP)?;
    let mut params = State::new();
    for (name, t) in &snapshot.params {
        let value = if let Some(linear) = adapters.weights.get(name) {
            let tensor = |slot| -> Result<(&String, &Tensor)> {
                let key = adapters.name(linear, slot).ok_or_else(|| {
                    Error::Invalid(format!("growth {OP}: {linear} has no {slot:?} adapter"))
                })?;
                Ok((key, &snapshot.params[key]))
            };
            let ((a_name, a), (b_name, b)) = (tensor(Slot::LoraA)?, tensor(Slot::LoraB)?);
            adapter_dims(a_name, a, 0, rank)?;
            adapter_dims(b_name, b, 1, rank)?;
            let delta = b
                .f_to_kind(Kind::Double)?
                .f_matmul(&a.f_to_kind(Kind::Double)?)?;
            if delta.size() != t.size() {
                return Err(Error::Shape {
                    op: format!("growth {OP}: folding {b_name} · {a_name} into {name}"),
                    expected: format!("{:?}", t.size()),
                    got: format!("{:?}", delta.size()),
                });
            }
            t.f_to_kind(Kind::Double)?
                .f_add(&delta.f_mul_scalar(scale)?)?
                .f_to_kind(t.kind())?
                .f_detach()?
        } else {
            match adapters.slot(name) {
                Some(Slot::LoraA) => {
                    let (_, inputs) = adapter_dims(name, t, 0, rank)?;
                    fresh_a(rank as i64, inputs, t)?
                }
                Some(_) => {
                    adapter_dims(name, t, 1, rank)?;
                    Tensor::f_zeros_like(t)?
                }
                None => t.f_detach_copy()?,
            }
        };
        params.insert(name.clone(), value);
    }
    let moments = map_moments(snapshot.moments.as_ref(), |name, m| {
        Ok(match adapters.slot(name) {
            Some(_) => Tensor::f_zeros_like(m)?,
            None => m.f_detach_copy()?,
        })
    })?;
    Ok(Snapshot {
        config,
        params,
        moments,
    })
}

/// The LoRA section of `config`, or the error of `op` without one.
fn lora_of<'a>(config: &'a ModelConfig, op: &str) -> Result<&'a LoraConfig> {
    config.lora.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "growth {op}: expected a model with LoRA adapters (a [model.lora] section), found \
             none"
        ))
    })
}

/// The adapters of the snapshot's config, checked: each adapted linear has its weight, `A`
/// and `B` in the snapshot, and no snapshot tensor lies outside the parameter schema (a stray
/// adapter of a linear that `model.lora.targets` does not name, say).
fn adapted(snapshot: &Snapshot, op: &str) -> Result<Adapters> {
    let specs = schema::schema(&snapshot.config);
    let adapters = Adapters::of(&specs);
    let needed = adapters
        .tensors
        .iter()
        .map(|(name, (linear, _))| (name, linear));
    let bases = adapters.weights.iter();
    for (name, linear) in needed.chain(bases) {
        if !snapshot.params.contains_key(name) {
            return Err(Error::Invalid(format!(
                "growth {op}: expected parameter {name} (model.lora adapts {linear}), found none"
            )));
        }
    }
    let known: BTreeSet<String> = specs.iter().map(|s| s.name()).collect();
    if let Some(stray) = snapshot.params.keys().find(|name| !known.contains(*name)) {
        return Err(Error::Invalid(format!(
            "growth {op}: parameter {stray} is not in the model's parameter schema (an adapter \
             of a linear that model.lora.targets does not name?)"
        )));
    }
    Ok(adapters)
}

/// `[out, in]` of adapter tensor `name` after checking that it is 2-D with `rank` along
/// `axis` (0 for `A`, 1 for `B`).
fn adapter_dims(name: &str, t: &Tensor, axis: usize, rank: usize) -> Result<(i64, i64)> {
    let size = t.size();
    if size.len() != 2 || size[axis] != rank as i64 {
        let expected = if axis == 0 {
            format!("[{rank}, in]")
        } else {
            format!("[out, {rank}]")
        };
        return Err(Error::Shape {
            op: format!("LoRA adapter {name}"),
            expected,
            got: format!("{size:?}"),
        });
    }
    Ok((size[0], size[1]))
}

/// `rows` new rows of `A` for `inputs` inputs, drawn like a fresh `A` (normal, std
/// `1/sqrt(in)`), in the dtype and on the device of `like`.
fn fresh_a(rows: i64, inputs: i64, like: &Tensor) -> Result<Tensor> {
    let std = 1.0 / (inputs as f64).sqrt();
    Ok(Tensor::f_randn([rows, inputs], (like.kind(), like.device()))?.f_mul_scalar(std)?)
}

/// Both moments, each entry mapped by `f(name, moment)`.
fn map_moments(
    moments: Option<&Moments>,
    f: impl Fn(&str, &Tensor) -> Result<Tensor>,
) -> Result<Option<Moments>> {
    let Some(moments) = moments else {
        return Ok(None);
    };
    let map = |state: &State| -> Result<State> {
        state
            .iter()
            .map(|(name, m)| Ok((name.clone(), f(name, m)?)))
            .collect()
    };
    Ok(Some(Moments {
        exp_avg: map(&moments.exp_avg)?,
        exp_avg_sq: map(&moments.exp_avg_sq)?,
    }))
}
