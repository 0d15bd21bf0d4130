//! AdamW with decoupled weight decay on matrices only, gradient clipping, and a state that
//! round-trips through checkpoints bit for bit.

use crate::adamw_cpu::{self, StepScalars};
use serde::{Deserialize, Serialize};
use strata_tensor::{Error, Result};
use tch::Tensor;

/// AdamW hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters with 2 or more dimensions.
    pub weight_decay: f64,
}

/// One optimised parameter and its moments.
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW as in PyTorch (`torch.optim.AdamW`, non-amsgrad).
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    /// Optimises `params` (name, tensor) — sorted by name so the order is reproducible.
    pub fn new(mut params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                Ok(Slot {
                    decay: param.dim() >= 2,
                    exp_avg: param.f_zeros_like()?,
                    exp_avg_sq: param.f_zeros_like()?,
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

    /// Number of steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Names of the optimised parameters, in update order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Names of the parameters that receive weight decay.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            slot.param.zero_grad();
        }
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping (a 0-d tensor, so no device synchronisation is forced).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor> {
        clip_grad_norm(self.params(), max_norm)
    }

    /// The parameters, for gradient clipping and zeroing across optimizers.
    pub(crate) fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.slots.iter().map(|s| &s.param)
    }

    /// One AdamW update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        let grads = self
            .slots
            .iter()
            .map(|s| s.param.f_grad())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut fused = Vec::with_capacity(self.slots.len());
        tch::no_grad(|| -> Result<()> {
            for (slot, grad) in self.slots.iter_mut().zip(&grads) {
                if !grad.defined() {
                    continue;
                }
                let decay_factor = if slot.decay && c.weight_decay != 0.0 {
                    1.0 - lr * c.weight_decay
                } else {
                    1.0
                };
                if adamw_cpu::eligible(&[&slot.param, grad, &slot.exp_avg, &slot.exp_avg_sq]) {
                    let scalars = StepScalars {
                        decay_factor: decay_factor as f32,
                        one_minus_beta1: (1.0 - c.beta1) as f32,
                        beta2: c.beta2 as f32,
                        one_minus_beta2: (1.0 - c.beta2) as f32,
                        bias2_sqrt: bias2_sqrt as f32,
                        eps: c.eps as f32,
                        step_size: step_size as f32,
                    };
                    fused.push((&slot.param, grad, &slot.exp_avg, &slot.exp_avg_sq, scalars));
                    continue;
                }
                if decay_factor != 1.0 {
                    let _ = slot.param.f_mul_scalar_(decay_factor)?;
                }
                let _ = slot.exp_avg.f_lerp_(grad, 1.0 - c.beta1)?;
                let _ = slot.exp_avg_sq.f_mul_scalar_(c.beta2)?;
                let _ = slot
                    .exp_avg_sq
                    .f_addcmul_(grad, &grad.f_mul_scalar(1.0 - c.beta2)?)?;
                let denom = slot
                    .exp_avg_sq
                    .f_sqrt()?
                    .f_div_scalar(bias2_sqrt)?
                    .f_add_scalar(c.eps)?;
                let update = slot.exp_avg.f_div(&denom)?.f_mul_scalar(step_size)?;
                let _ = slot.param.f_sub_(&update)?;
            }
            Ok(())
        })?;
        adamw_cpu::adamw_update(&fused);
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        named_state(self.slots.iter().flat_map(|s| {
            [
                ("exp_avg", s.name.as_str(), &s.exp_avg),
                ("exp_avg_sq", s.name.as_str(), &s.exp_avg_sq),
            ]
        }))
    }

    /// The moments by parameter name, detached copies (what growth operators carry).
    pub fn moments(&self) -> Result<strata_growth::Moments> {
        let mut moments = strata_growth::Moments::default();
        for s in &self.slots {
            moments
                .exp_avg
                .insert(s.name.clone(), s.exp_avg.f_detach_copy()?);
            moments
                .exp_avg_sq
                .insert(s.name.clone(), s.exp_avg_sq.f_detach_copy()?);
        }
        Ok(moments)
    }

    /// Restores moments given by parameter name (as [`AdamW::moments`] returns them) and the
    /// step count; `source` names where they came from in errors.
    pub fn load_moments(
        &mut self,
        moments: &strata_growth::Moments,
        steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        let prefixed = |prefix: &str, state: &strata_merge::State| {
            state
                .iter()
                .map(|(name, t)| (format!("{prefix}.{name}"), t.shallow_clone()))
                .collect::<Vec<_>>()
        };
        let mut tensors = prefixed("exp_avg", &moments.exp_avg);
        tensors.extend(prefixed("exp_avg_sq", &moments.exp_avg_sq));
        self.load_state(&tensors, steps, source)
    }

    /// Restores the moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &[(String, Tensor)],
        steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        let buffers = self.slots.iter_mut().flat_map(|s| {
            [
                ("exp_avg", s.name.as_str(), &mut s.exp_avg),
                ("exp_avg_sq", s.name.as_str(), &mut s.exp_avg_sq),
            ]
        });
        restore_named_state(tensors, buffers, source, "")?;
        self.step = steps;
        Ok(())
    }
}

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm`
/// (0: no clipping); returns the norm before clipping (a 0-d tensor, so no device
/// synchronisation is forced). An error when no parameter has a gradient.
pub(crate) fn clip_grad_norm<'a>(
    params: impl Iterator<Item = &'a Tensor>,
    max_norm: f64,
) -> Result<Tensor> {
    let grads: Vec<Tensor> = params
        .map(Tensor::f_grad)
        .collect::<std::result::Result<Vec<_>, _>>()?
        .into_iter()
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return Err(Error::Invalid(
            "clip_grad_norm: no gradients (call backward first)".to_owned(),
        ));
    }
    let refs: Vec<&Tensor> = grads.iter().collect();
    if adamw_cpu::eligible(&refs) {
        let total = adamw_cpu::sum_squares(&grads).sqrt();
        let coef = max_norm / (total + 1e-6);
        if max_norm > 0.0 && coef < 1.0 {
            adamw_cpu::scale(&grads, coef as f32);
        }
        return Ok(Tensor::from(total));
    }
    let norms = grads
        .iter()
        .map(Tensor::f_norm)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
    if max_norm > 0.0 {
        let coef = total
            .f_add_scalar(1e-6)?
            .f_reciprocal()?
            .f_mul_scalar(max_norm)?
            .f_clamp_max(1.0)?;
        tch::no_grad(|| -> Result<()> {
            for mut g in grads {
                let _ = g.f_mul_(&coef)?;
            }
            Ok(())
        })?;
    }
    Ok(total)
}

/// An optimizer's per-parameter buffers `(prefix, parameter name, buffer)` as the checkpoint's
/// named tensors, `<prefix>.<name>`.
pub(crate) fn named_state<'a>(
    buffers: impl Iterator<Item = (&'static str, &'a str, &'a Tensor)>,
) -> Vec<(String, Tensor)> {
    buffers
        .map(|(prefix, name, t)| (format!("{prefix}.{name}"), t.shallow_clone()))
        .collect()
}

/// Restores every buffer `(prefix, parameter name, buffer)` from the tensor `<prefix>.<name>`
/// of `tensors` (saved by [`named_state`]); `hint` ends the error for a missing one.
pub(crate) fn restore_named_state<'a>(
    tensors: &[(String, Tensor)],
    buffers: impl Iterator<Item = (&'static str, &'a str, &'a mut Tensor)>,
    source: &std::path::Path,
    hint: &str,
) -> Result<()> {
    for (prefix, name, target) in buffers {
        restore_state_tensor(tensors, &format!("{prefix}.{name}"), target, source, hint)?;
    }
    Ok(())
}

/// Copies the saved optimizer tensor `key` of `tensors` into `target` (converted to its kind);
/// `hint` ends the error when the checkpoint lacks it, and a shape mismatch is refused.
fn restore_state_tensor(
    tensors: &[(String, Tensor)],
    key: &str,
    target: &mut Tensor,
    source: &std::path::Path,
    hint: &str,
) -> Result<()> {
    let saved = tensors
        .iter()
        .find(|(n, _)| n == key)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::checkpoint(source, format!("optimizer state lacks `{key}`{hint}")))?;
    if saved.size() != target.size() {
        return Err(Error::checkpoint(
            source,
            format!(
                "optimizer tensor `{key}` has shape {:?}, the model needs {:?}",
                saved.size(),
                target.size()
            ),
        ));
    }
    let kind = target.kind();
    tch::no_grad(|| target.f_copy_(&saved.f_to_kind(kind)?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::TensorExt;
    use tch::Kind;

    /// Scalar AdamW written out by hand, in f64.
    fn adamw_reference(p0: f64, grads: &[f64], lr: f64, c: AdamWConfig, decay: bool) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            if decay {
                p *= 1.0 - lr * c.weight_decay;
            }
            m = c.beta1 * m + (1.0 - c.beta1) * g;
            v = c.beta2 * v + (1.0 - c.beta2) * g * g;
            let mhat = m / (1.0 - c.beta1.powi(t));
            let denom = v.sqrt() / (1.0 - c.beta2.powi(t)).sqrt() + c.eps;
            p -= lr * mhat / denom;
        }
        p
    }

    #[test]
    fn matches_a_hand_written_scalar_adamw_and_decays_only_matrices() {
        let c = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let matrix = Tensor::from_slice(&[0.5f64, -1.0, 2.0, 0.25])
            .reshape([2, 2])
            .set_requires_grad(true);
        let vector = Tensor::from_slice(&[0.5f64, -1.0]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("w".into(), matrix.shallow_clone()),
                ("b".into(), vector.shallow_clone()),
            ],
            c,
        )
        .unwrap();
        assert_eq!(opt.decayed(), vec!["w"]);
        let grads = [
            [0.3, -0.2, 0.1, 0.7],
            [-0.5, 0.4, 0.2, 0.1],
            [0.05, 0.05, -0.3, 0.2],
        ];
        for g in &grads {
            opt.zero_grad();
            let loss = (&matrix * Tensor::from_slice(g).reshape([2, 2])).sum(Kind::Double)
                + (&vector * Tensor::from_slice(&g[..2])).sum(Kind::Double);
            loss.backward();
            opt.step(1e-2).unwrap();
        }
        let got_m = Vec::<f64>::try_from(matrix.reshape([-1])).unwrap();
        let got_v = Vec::<f64>::try_from(&vector).unwrap();
        let p0 = [0.5, -1.0, 2.0, 0.25];
        for i in 0..4 {
            let gs: Vec<f64> = grads.iter().map(|g| g[i]).collect();
            assert!((got_m[i] - adamw_reference(p0[i], &gs, 1e-2, c, true)).abs() < 1e-12);
            if i < 2 {
                assert!((got_v[i] - adamw_reference(p0[i], &gs, 1e-2, c, false)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_original() {
        let c = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let a = Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let b = Tensor::zeros([1], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            c,
        )
        .unwrap();
        ((&a * Tensor::from_slice(&[3.0f64, 0.0])).sum(Kind::Double)
            + (&b * 4.0).sum(Kind::Double))
        .backward();
        let norm = opt.clip_grad_norm(1.0).unwrap().double_value(&[]);
        assert!((norm - 5.0).abs() < 1e-12);
        let clipped =
            (a.grad().square().sum(Kind::Double) + b.grad().square().sum(Kind::Double)).sqrt();
        assert!((clipped.double_value(&[]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn fused_f32_cpu_path_matches_the_f64_tensor_path_with_clipping_and_decay() {
        let c = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        // 150 x 160 = 24,000 elements: more than one parallel chunk.
        let init = Tensor::randn([150, 160], (Kind::Double, tch::Device::Cpu));
        let bias_init = Tensor::randn([160], (Kind::Double, tch::Device::Cpu));
        let make = |kind: Kind| {
            let w = init.to_kind(kind).copy().set_requires_grad(true);
            let b = bias_init.to_kind(kind).copy().set_requires_grad(true);
            let opt = AdamW::new(
                vec![
                    ("w".into(), w.shallow_clone()),
                    ("b".into(), b.shallow_clone()),
                ],
                c,
            )
            .unwrap();
            (w, b, opt)
        };
        let (w32, b32, mut fast) = make(Kind::Float);
        let (w64, b64, mut reference) = make(Kind::Double);
        for step in 0..6 {
            let gw =
                Tensor::randn([150, 160], (Kind::Double, tch::Device::Cpu)) * (step + 1) as f64;
            let gb = Tensor::randn([160], (Kind::Double, tch::Device::Cpu));
            for (w, b, opt) in [(&w32, &b32, &mut fast), (&w64, &b64, &mut reference)] {
                opt.zero_grad();
                let kind = w.kind();
                ((w * gw.to_kind(kind)).sum(Kind::Double)
                    + (b * gb.to_kind(kind)).sum(Kind::Double))
                .backward();
                // Large gradients: clipping is active on every step.
                let norm = opt.clip_grad_norm(1.0).unwrap().double_value(&[]);
                assert!(norm > 1.0);
                opt.step(1e-2).unwrap();
            }
        }
        for (a, b) in [(&w32, &w64), (&b32, &b64)] {
            let diff = a.to_kind(Kind::Double).max_abs_diff(b).unwrap();
            assert!(
                diff < 1e-5,
                "fused f32 path drifted from the f64 path by {diff}"
            );
        }
        let moved = w64.max_abs_diff(&init).unwrap();
        assert!(moved > 1e-3, "the parameters did not move");
    }
}
