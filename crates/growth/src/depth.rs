//! Depth methods switched on mid-run: DenseFormer's DWA and the `[model.depth]` methods
//! added to a model that has none (the DenseFormer paper's "DWA late", and the retrofit of a
//! trained checkpoint).
//!
//! Every old tensor is kept as it is; the new methods' tensors take the values the grown
//! model's own initialisation gives them (built once, under the growth's seed), and their
//! moments start at zero. DWA, LAuReL, (m)HC, attention residuals and MUDD start as the model
//! without them (their tests in strata-core say to what tolerance); the value residual starts
//! at its paper's mix instead, so that growth changes the function.

use crate::Snapshot;
use strata_core::schema::{self, Role};
use strata_core::{DepthConfig, DwaConfig, Gpt, ModelConfig};
use strata_merge::State;
use strata_tensor::{Error, Result};
use tch::{Device, Tensor, nn};

/// Why depth methods cannot be added to a model ([`refusal`]); each caller words it for its
/// own context (a growth schedule, a retrofit's checkpoint and config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The model has depth methods already (its variant name).
    AlreadyHas(String),
    /// The addition adds nothing.
    NothingToAdd,
}

/// Why `dwa` and `depth` cannot be added to `config`, if they cannot: only a model without
/// depth methods takes them, and only an addition of at least one method.
pub fn refusal(
    config: &ModelConfig,
    dwa: Option<DwaConfig>,
    depth: &DepthConfig,
) -> Option<Refusal> {
    if config.dwa.is_some() || !config.depth.is_off() {
        Some(Refusal::AlreadyHas(config.variant_name()))
    } else if dwa.is_none() && depth.is_off() {
        Some(Refusal::NothingToAdd)
    } else {
        None
    }
}

/// The config of `config` with `dwa` and `depth` added; refuses what [`refusal`] refuses.
pub fn config(
    config: &ModelConfig,
    dwa: Option<DwaConfig>,
    depth: &DepthConfig,
) -> Result<ModelConfig> {
    match refusal(config, dwa, depth) {
        Some(Refusal::AlreadyHas(variant)) => Err(Error::Invalid(format!(
            "growth add_depth: adds depth methods to a model without them, and this one already \
             has {variant} (model.dwa / model.depth)"
        ))),
        Some(Refusal::NothingToAdd) => Err(Error::Invalid(
            "growth add_depth: expected a method to add (`dwa = { dilation = 1, period = 1 }` \
             or `depth = { mudd = true }`), found none"
                .to_owned(),
        )),
        None => {
            let mut grown = config.clone();
            grown.dwa = dwa;
            grown.depth = depth.clone();
            Ok(grown)
        }
    }
}

/// True for the tensors a depth method adds (its roles in the parameter schema).
pub fn is_depth_method_tensor(role: Role) -> bool {
    matches!(
        role,
        Role::DwaWeight | Role::DepthScalar | Role::DepthMatrix
    )
}

/// Adds the methods of `config` (from [`config`]) to `snapshot`: old tensors kept, new ones
/// at the grown model's init (on the device of the old ones), their moments zero.
pub fn add(snapshot: &Snapshot, config: ModelConfig) -> Result<Snapshot> {
    let device = snapshot
        .params
        .values()
        .next()
        .map_or(Device::Cpu, Tensor::device);
    let fresh = {
        let vs = nn::VarStore::new(device);
        let _model = Gpt::new(&vs.root(), &config)?;
        strata_merge::state_of(&vs)?
    };
    let mut params = State::new();
    let mut added = Vec::new();
    for spec in schema::schema(&config) {
        let name = spec.name();
        let (from, place) = if is_depth_method_tensor(spec.role) {
            added.push(name.clone());
            (&fresh, "the grown model's init")
        } else {
            (&snapshot.params, "the snapshot")
        };
        let tensor = from.get(&name).ok_or_else(|| missing(&name, place))?;
        params.insert(name, tensor.shallow_clone());
    }
    if let Some(extra) = snapshot.params.keys().find(|n| !params.contains_key(*n)) {
        return Err(Error::Invalid(format!(
            "growth add_depth: the snapshot's tensor `{extra}` is not in the grown model ({})",
            config.variant_name()
        )));
    }
    let moments = snapshot
        .moments
        .as_ref()
        .map(|m| -> Result<crate::Moments> {
            let copy = |state: &State| -> State {
                state
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect()
            };
            let mut m = crate::Moments {
                exp_avg: copy(&m.exp_avg),
                exp_avg_sq: copy(&m.exp_avg_sq),
            };
            for name in &added {
                let zeros = params[name].f_zeros_like()?;
                m.exp_avg.insert(name.clone(), zeros.shallow_clone());
                m.exp_avg_sq.insert(name.clone(), zeros);
            }
            Ok(m)
        });
    Ok(Snapshot {
        config,
        params,
        moments: moments.transpose()?,
    })
}

/// The error for a tensor the grown model needs and `place` lacks.
fn missing(name: &str, place: &str) -> Error {
    Error::Invalid(format!(
        "growth add_depth: `{name}` is missing from {place}"
    ))
}
