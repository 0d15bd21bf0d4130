//! Muon (Jordan et al. 2024, the modded-nanogpt speedrun's optimizer) for 2-D hidden matrices:
//! Nesterov momentum, the update orthogonalised by a quintic Newton-Schulz iteration, scaled
//! by `sqrt(max(1, rows / cols))`, with decoupled weight decay.

use serde::{Deserialize, Serialize};
use strata_tensor::{Error, Result};
use tch::Tensor;

/// The coefficients `(a, b, c)` of Muon's quintic Newton-Schulz step
/// `X ← a·X + b·(X·Xᵀ)·X + c·(X·Xᵀ)²·X`, chosen to push every singular value of a
/// Frobenius-normalised matrix into roughly [0.7, 1.2] within five steps.
pub const NS_COEFFICIENTS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Added to the Frobenius norm before normalising (modded-nanogpt's 1e-7).
const NS_EPS: f64 = 1e-7;

/// Muon hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MuonConfig {
    /// Momentum μ of the gradient average.
    pub momentum: f64,
    /// Nesterov momentum: orthogonalise `(1 - μ)·g + μ·buf` rather than `buf`.
    pub nesterov: bool,
    /// Newton-Schulz iterations.
    pub ns_steps: usize,
    /// Decoupled weight decay: `p ← p · (1 - lr · weight_decay)` before the update.
    pub weight_decay: f64,
}

/// The approximately orthogonal factor `U·Vᵀ` of `g = U·S·Vᵀ` (2-D), by `steps` quintic
/// Newton-Schulz iterations with [`NS_COEFFICIENTS`] on `g / (‖g‖_F + 1e-7)`, computed on the
/// transpose when `g` has more rows than columns (so that `X·Xᵀ` is the smaller Gram matrix).
/// The result has `g`'s shape and dtype.
pub fn newton_schulz(g: &Tensor, steps: usize) -> Result<Tensor> {
    let size = g.size();
    if size.len() != 2 {
        return Err(Error::Shape {
            op: "newton_schulz".to_owned(),
            expected: "a 2-D matrix".to_owned(),
            got: format!("shape {size:?}"),
        });
    }
    let tall = size[0] > size[1];
    let mut x = if tall { g.f_tr()? } else { g.shallow_clone() };
    let norm = x.f_norm()?.f_add_scalar(NS_EPS)?;
    x = x.f_div(&norm)?;
    let (a, b, c) = NS_COEFFICIENTS;
    for _ in 0..steps {
        let gram = x.f_matmul(&x.f_tr()?)?;
        let poly = gram
            .f_mul_scalar(b)?
            .f_add(&gram.f_matmul(&gram)?.f_mul_scalar(c)?)?;
        x = x.f_mul_scalar(a)?.f_add(&poly.f_matmul(&x)?)?;
    }
    Ok(if tall { x.f_tr()?.f_contiguous()? } else { x })
}

/// One optimised matrix and its momentum buffer.
struct Slot {
    name: String,
    param: Tensor,
    momentum: Tensor,
}

/// Muon over a set of 2-D matrices.
pub struct Muon {
    config: MuonConfig,
    slots: Vec<Slot>,
    step: u64,
}

/// Prefix of the momentum buffers' names in checkpoints (`muon_momentum.<param>`).
pub const STATE_PREFIX: &str = "muon_momentum";

impl Muon {
    /// Optimises `params` (name, tensor), sorted by name so the order is reproducible; a
    /// parameter that is not a 2-D matrix is refused, naming it.
    pub fn new(mut params: Vec<(String, Tensor)>, config: MuonConfig) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((name, t)) = params.iter().find(|(_, t)| t.dim() != 2) {
            return Err(Error::Invalid(format!(
                "Muon orthogonalises 2-D matrices only, but `{name}` has shape {:?}; leave it \
                 to AdamW (see train.optimizer in docs/training.md)",
                t.size()
            )));
        }
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                Ok(Slot {
                    momentum: param.f_zeros_like()?,
                    name,
                    param,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            slots,
            step: 0,
        })
    }

    /// Names of the optimised matrices, in update order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Number of steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The parameters, for gradient clipping and zeroing.
    pub(crate) fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.slots.iter().map(|s| &s.param)
    }

    /// One Muon update with learning rate `lr` (parameters without a gradient are skipped).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        tch::no_grad(|| -> Result<()> {
            for slot in &mut self.slots {
                let grad = slot.param.f_grad()?;
                if !grad.defined() {
                    continue;
                }
                let _ = slot.momentum.f_lerp_(&grad, 1.0 - c.momentum)?;
                let update = if c.nesterov {
                    grad.f_lerp(&slot.momentum, c.momentum)?
                } else {
                    slot.momentum.shallow_clone()
                };
                let size = slot.param.size();
                let scale = (size[0] as f64 / size[1] as f64).max(1.0).sqrt();
                let ortho = newton_schulz(&update, c.ns_steps)?;
                if c.weight_decay != 0.0 {
                    let _ = slot.param.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
                }
                let _ = slot.param.f_sub_(&ortho.f_mul_scalar(lr * scale)?)?;
            }
            Ok(())
        })
    }

    /// The momentum buffers as named tensors (`muon_momentum.<name>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        crate::optim::named_state(
            self.slots
                .iter()
                .map(|s| (STATE_PREFIX, s.name.as_str(), &s.momentum)),
        )
    }

    /// The momentum buffers by parameter name as first moments (what growth operators
    /// carry: a gradient average, mapped like AdamW's `exp_avg`), with zero second moments
    /// (Muon keeps none), detached copies.
    pub fn moments(&self) -> Result<strata_growth::Moments> {
        let mut moments = strata_growth::Moments::default();
        for s in &self.slots {
            moments
                .exp_avg
                .insert(s.name.clone(), s.momentum.f_detach_copy()?);
            moments
                .exp_avg_sq
                .insert(s.name.clone(), s.momentum.f_zeros_like()?);
        }
        Ok(moments)
    }

    /// Restores the momentum buffers from first moments given by parameter name (as
    /// [`Muon::moments`] returns them) and the step count; `source` names their origin.
    pub fn load_moments(
        &mut self,
        moments: &strata_growth::Moments,
        steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .slots
            .iter()
            .filter_map(|s| {
                let t = moments.exp_avg.get(&s.name)?;
                Some((format!("{STATE_PREFIX}.{}", s.name), t.shallow_clone()))
            })
            .collect();
        self.load_state(&tensors, steps, source)
    }

    /// Restores the momentum buffers and the step count saved by [`Muon::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &[(String, Tensor)],
        steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        crate::optim::restore_named_state(
            tensors,
            self.slots
                .iter_mut()
                .map(|s| (STATE_PREFIX, s.name.as_str(), &mut s.momentum)),
            source,
            " (was the run trained with train.optimizer.kind = \"muon\"?)",
        )?;
        self.step = steps;
        Ok(())
    }
}
