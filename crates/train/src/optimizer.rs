//! The run's optimizer: parameters grouped by their role in the parameter schema, each group
//! on AdamW with its own learning rate, or, with `train.optimizer.kind = "muon"`, the hidden
//! matrices on [`Muon`]. Gradient clipping is global over every group.
//!
//! Every group's learning rate follows the run's schedule: at step `s` a group with peak
//! rate `peak` uses `peak · schedule(s) / train.learning_rate`; a group without its own rate
//! uses `schedule(s)` itself. With the defaults (AdamW, no group rates) this is the single
//! AdamW over every parameter that strata always had, bit for bit.

use crate::muon::{Muon, MuonConfig};
use crate::optim::{self, AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use strata_core::ModelConfig;
use strata_core::schema::{self, Role};
use strata_tensor::{Error, Result};
use tch::Tensor;

/// Which optimizer takes the hidden matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW for every parameter.
    #[default]
    Adamw,
    /// Muon for the hidden matrices, AdamW for everything else.
    Muon,
}

/// A group of parameters that share an optimizer and a learning rate, assigned by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamGroup {
    /// The 2-D matrices inside the blocks (attention, MLP, parameter tokens):
    /// [`Role::is_hidden_matrix`].
    Hidden,
    /// Token and position embeddings.
    Embedding,
    /// The untied output head.
    Head,
    /// Norm gains and biases.
    Scalar,
    /// The weights of depth connections: DWA weights and every `[model.depth]` method's
    /// tensors (scalars and their small matrices).
    Depth,
    /// LoRA adapters `A` and `B`.
    Adapter,
}

impl ParamGroup {
    /// Every group.
    pub const ALL: [ParamGroup; 6] = [
        ParamGroup::Hidden,
        ParamGroup::Embedding,
        ParamGroup::Head,
        ParamGroup::Scalar,
        ParamGroup::Depth,
        ParamGroup::Adapter,
    ];

    /// The group of a tensor with `role`.
    pub fn of(role: Role) -> Self {
        match role {
            r if r.is_hidden_matrix() => ParamGroup::Hidden,
            r if r.is_embedding() => ParamGroup::Embedding,
            Role::Head => ParamGroup::Head,
            Role::LoraA | Role::LoraB => ParamGroup::Adapter,
            Role::DwaWeight | Role::DepthScalar | Role::DepthMatrix => ParamGroup::Depth,
            _ => ParamGroup::Scalar,
        }
    }

    /// The config field holding this group's learning rate, e.g. `head_lr`.
    pub fn lr_field(self) -> &'static str {
        match self {
            ParamGroup::Hidden => "hidden_lr",
            ParamGroup::Embedding => "embedding_lr",
            ParamGroup::Head => "head_lr",
            ParamGroup::Scalar => "scalar_lr",
            ParamGroup::Depth => "depth_lr",
            ParamGroup::Adapter => "adapter_lr",
        }
    }
}

/// `[train.optimizer]`: the optimizer of each parameter group and the groups' learning rates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `"adamw"` (default) or `"muon"` (the hidden matrices on Muon).
    #[serde(default)]
    pub kind: OptimizerKind,
    /// Muon: peak learning rate of the hidden matrices (required with `kind = "muon"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muon_lr: Option<f64>,
    /// Muon: momentum μ.
    #[serde(default = "default_momentum")]
    pub muon_momentum: f64,
    /// Muon: Nesterov momentum.
    #[serde(default = "default_true")]
    pub muon_nesterov: bool,
    /// Muon: Newton-Schulz iterations.
    #[serde(default = "default_ns_steps")]
    pub muon_ns_steps: usize,
    /// Muon: decoupled weight decay of the hidden matrices.
    #[serde(default)]
    pub muon_weight_decay: f64,
    /// AdamW: peak learning rate of the hidden matrices with `kind = "adamw"` (absent:
    /// `train.learning_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_lr: Option<f64>,
    /// AdamW: peak learning rate of the token and position embeddings (absent:
    /// `train.learning_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_lr: Option<f64>,
    /// AdamW: peak learning rate of the untied head (absent: `train.learning_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_lr: Option<f64>,
    /// AdamW: peak learning rate of norm gains and biases, and of depth connections without a
    /// `depth_lr` (absent: `train.learning_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar_lr: Option<f64>,
    /// AdamW: peak learning rate of depth connections, DWA weights and every
    /// `[model.depth]` method's tensors (absent: `scalar_lr`, else `train.learning_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_lr: Option<f64>,
    /// AdamW: peak learning rate of LoRA adapters (absent: `train.learning_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_lr: Option<f64>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adamw,
            muon_lr: None,
            muon_momentum: default_momentum(),
            muon_nesterov: true,
            muon_ns_steps: default_ns_steps(),
            muon_weight_decay: 0.0,
            hidden_lr: None,
            embedding_lr: None,
            head_lr: None,
            scalar_lr: None,
            depth_lr: None,
            adapter_lr: None,
        }
    }
}

/// Default Muon momentum (modded-nanogpt's 0.95).
fn default_momentum() -> f64 {
    0.95
}
/// Default Newton-Schulz iterations.
fn default_ns_steps() -> usize {
    5
}
/// Serde default `true`.
fn default_true() -> bool {
    true
}

/// Most Newton-Schulz iterations a config may ask for (5 is the design point).
pub const MAX_NS_STEPS: usize = 100;

impl OptimizerConfig {
    /// The peak learning rate set for `group` under this config, `None` when the group
    /// follows `train.learning_rate`.
    pub fn group_lr(&self, group: ParamGroup) -> Option<f64> {
        match group {
            ParamGroup::Hidden if self.kind == OptimizerKind::Muon => self.muon_lr,
            ParamGroup::Hidden => self.hidden_lr,
            ParamGroup::Embedding => self.embedding_lr,
            ParamGroup::Head => self.head_lr,
            ParamGroup::Scalar => self.scalar_lr,
            ParamGroup::Depth => self.depth_lr.or(self.scalar_lr),
            ParamGroup::Adapter => self.adapter_lr,
        }
    }

    /// Multiplies every group rate that is set by `factor`.
    pub fn scale_rates(&mut self, factor: f64) {
        for lr in [
            &mut self.muon_lr,
            &mut self.hidden_lr,
            &mut self.embedding_lr,
            &mut self.head_lr,
            &mut self.scalar_lr,
            &mut self.depth_lr,
            &mut self.adapter_lr,
        ]
        .into_iter()
        .flatten()
        {
            *lr *= factor;
        }
    }

    /// Muon's settings.
    pub fn muon(&self) -> MuonConfig {
        MuonConfig {
            momentum: self.muon_momentum,
            nesterov: self.muon_nesterov,
            ns_steps: self.muon_ns_steps,
            weight_decay: self.muon_weight_decay,
        }
    }

    /// Checks every field; errors name `file` and `train.optimizer.<field>`.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: &dyn ToString| {
            Err(Error::config(
                file,
                format!("train.optimizer.{field}"),
                expected,
                found.to_string(),
            ))
        };
        let muon = self.kind == OptimizerKind::Muon;
        match (muon, self.muon_lr, self.hidden_lr) {
            (true, None, _) => {
                return err(
                    "muon_lr",
                    "the hidden matrices' peak learning rate: kind = \"muon\" puts them on Muon, \
                     which has no default rate (without one the group has no optimizer)",
                    &"nothing",
                );
            }
            (true, _, Some(lr)) => {
                return err(
                    "hidden_lr",
                    "no value with kind = \"muon\" (the hidden matrices use muon_lr)",
                    &lr,
                );
            }
            (false, Some(lr), _) => {
                return err("muon_lr", "no value unless kind = \"muon\"", &lr);
            }
            _ => {}
        }
        let rates = [
            ("muon_lr", self.muon_lr),
            ("hidden_lr", self.hidden_lr),
            ("embedding_lr", self.embedding_lr),
            ("head_lr", self.head_lr),
            ("scalar_lr", self.scalar_lr),
            ("depth_lr", self.depth_lr),
            ("adapter_lr", self.adapter_lr),
        ];
        for (field, lr) in rates {
            if let Some(lr) = lr
                && !(lr > 0.0 && lr.is_finite())
            {
                return err(
                    field,
                    "a positive finite learning rate (a group at 0 would not be trained: freeze \
                     it instead, e.g. model.lora.freeze_base)",
                    &lr,
                );
            }
        }
        if !(0.0..1.0).contains(&self.muon_momentum) {
            return err("muon_momentum", "a number in [0, 1)", &self.muon_momentum);
        }
        if !(1..=MAX_NS_STEPS).contains(&self.muon_ns_steps) {
            return err(
                "muon_ns_steps",
                &format!("1 to {MAX_NS_STEPS} Newton-Schulz iterations"),
                &self.muon_ns_steps,
            );
        }
        if !(self.muon_weight_decay >= 0.0 && self.muon_weight_decay.is_finite()) {
            return err(
                "muon_weight_decay",
                "a finite number >= 0",
                &self.muon_weight_decay,
            );
        }
        Ok(())
    }
}

/// The group of every parameter of a model with `config`, by name, from its schema.
pub fn param_groups(config: &ModelConfig) -> BTreeMap<String, ParamGroup> {
    schema::schema(config)
        .into_iter()
        .map(|spec| (spec.name(), ParamGroup::of(spec.role)))
        .collect()
}

/// One AdamW group: its peak learning rate (`None`: the schedule's rate) and optimizer.
struct AdamGroup {
    peak: Option<f64>,
    adamw: AdamW,
}

/// The optimizer of a run: AdamW groups and, with `kind = "muon"`, Muon.
pub struct Optimizer {
    adamw: Vec<AdamGroup>,
    muon: Option<(f64, Muon)>,
    base_lr: f64,
}

impl Optimizer {
    /// Groups `params` (name, tensor) of a model with `model` by role and builds each
    /// group's optimizer with the settings of `settings`, `adamw` and the peak rate
    /// `base_lr` (`train.learning_rate`); a parameter the schema does not know is refused.
    pub fn new(
        params: Vec<(String, Tensor)>,
        model: &ModelConfig,
        settings: &OptimizerConfig,
        adamw: AdamWConfig,
        base_lr: f64,
    ) -> Result<Self> {
        let grouped = settings.kind == OptimizerKind::Muon
            || ParamGroup::ALL
                .iter()
                .any(|&g| settings.group_lr(g).is_some());
        if !grouped {
            return Ok(Self {
                adamw: vec![AdamGroup {
                    peak: None,
                    adamw: AdamW::new(params, adamw)?,
                }],
                muon: None,
                base_lr,
            });
        }
        let groups = param_groups(model);
        let mut by_group: BTreeMap<ParamGroup, Vec<(String, Tensor)>> = BTreeMap::new();
        for (name, tensor) in params {
            let Some(&group) = groups.get(&name) else {
                return Err(Error::Invalid(format!(
                    "parameter `{name}` is not in the parameter schema of the model ({}), so \
                     it has no optimizer group",
                    model.variant_name()
                )));
            };
            by_group.entry(group).or_default().push((name, tensor));
        }
        let mut muon = None;
        let mut adam_groups = Vec::new();
        for (group, params) in by_group {
            let peak = settings.group_lr(group);
            if group == ParamGroup::Hidden && settings.kind == OptimizerKind::Muon {
                let lr = peak.ok_or_else(|| {
                    Error::Invalid(
                        "train.optimizer.muon_lr: kind = \"muon\" needs the hidden matrices' \
                         learning rate"
                            .to_owned(),
                    )
                })?;
                muon = Some((lr, Muon::new(params, settings.muon())?));
            } else {
                adam_groups.push(AdamGroup {
                    peak,
                    adamw: AdamW::new(params, adamw)?,
                });
            }
        }
        Ok(Self {
            adamw: adam_groups,
            muon,
            base_lr,
        })
    }

    /// Every optimised parameter.
    fn params(&self) -> impl Iterator<Item = &Tensor> {
        let adam = self.adamw.iter().flat_map(|g| g.adamw.params());
        adam.chain(self.muon.iter().flat_map(|(_, m)| m.params()))
    }

    /// Number of steps taken.
    pub fn steps_taken(&self) -> u64 {
        match (self.adamw.first(), &self.muon) {
            (Some(g), _) => g.adamw.steps_taken(),
            (None, Some((_, muon))) => muon.steps_taken(),
            (None, None) => 0,
        }
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for param in self.params() {
            param.shallow_clone().zero_grad();
        }
    }

    /// Scales every group's gradients together so that their global L2 norm is at most
    /// `max_norm`; returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor> {
        optim::clip_grad_norm(self.params(), max_norm)
    }

    /// One step of every group, with the schedule's learning rate `lr` (see the module
    /// documentation for each group's own rate).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let factor = lr / self.base_lr;
        for group in &mut self.adamw {
            group
                .adamw
                .step(group.peak.map_or(lr, |peak| peak * factor))?;
        }
        if let Some((peak, muon)) = &mut self.muon {
            muon.step(*peak * factor)?;
        }
        Ok(())
    }

    /// Every group's state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`,
    /// `muon_momentum.<name>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .adamw
            .iter()
            .flat_map(|g| g.adamw.state_tensors())
            .collect();
        if let Some((_, muon)) = &self.muon {
            out.extend(muon.state_tensors());
        }
        out
    }

    /// Every group's moments by parameter name (Muon's momentum as a first moment), what
    /// growth operators carry.
    pub fn moments(&self) -> Result<strata_growth::Moments> {
        let mut all = strata_growth::Moments::default();
        let parts = self.adamw.iter().map(|g| g.adamw.moments());
        let muon = self.muon.iter().map(|(_, m)| m.moments());
        for part in parts.chain(muon) {
            let part = part?;
            all.exp_avg.extend(part.exp_avg);
            all.exp_avg_sq.extend(part.exp_avg_sq);
        }
        Ok(all)
    }

    /// Restores every group's moments (as [`Optimizer::moments`] returns them) and the step
    /// count; `source` names where they came from in errors.
    pub fn load_moments(
        &mut self,
        moments: &strata_growth::Moments,
        steps: u64,
        source: &Path,
    ) -> Result<()> {
        for group in &mut self.adamw {
            group.adamw.load_moments(moments, steps, source)?;
        }
        if let Some((_, muon)) = &mut self.muon {
            muon.load_moments(moments, steps, source)?;
        }
        Ok(())
    }

    /// Restores the state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &[(String, Tensor)],
        steps: u64,
        source: &Path,
    ) -> Result<()> {
        for group in &mut self.adamw {
            group.adamw.load_state(tensors, steps, source)?;
        }
        if let Some((_, muon)) = &mut self.muon {
            muon.load_state(tensors, steps, source)?;
        }
        Ok(())
    }

    /// The group of every optimised parameter and whether Muon takes it, by name.
    pub fn assignment(&self) -> HashMap<String, bool> {
        let mut out = HashMap::new();
        for group in &self.adamw {
            for name in group.adamw.names() {
                out.insert(name.to_owned(), false);
            }
        }
        if let Some((_, muon)) = &self.muon {
            for name in muon.names() {
                out.insert(name.to_owned(), true);
            }
        }
        out
    }
}
