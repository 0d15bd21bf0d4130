//! Merging fine-tunes of one base model, tensor by tensor: linear soup, task arithmetic,
//! TIES, DARE and SLERP. Every method computes in f64 and returns the inputs' dtype.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_tensor::{Error, Result};
use tch::{Kind, Tensor};

/// A model as named tensors (parameter name -> tensor), e.g. `h.0.attn.c_attn.weight`.
pub type State = BTreeMap<String, Tensor>;

/// A merge method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// `Σ wᵢ θᵢ` (a model soup), optionally normalised by `Σ wᵢ`.
    Linear,
    /// `θ₀ + Σ λᵢ (θᵢ − θ₀)`.
    TaskArithmetic,
    /// TIES-Merging: trim, elect sign, disjoint mean of the deltas.
    Ties,
    /// DARE: drop delta entries at random, rescale the rest, then task arithmetic.
    Dare,
    /// Spherical interpolation between two models.
    Slerp,
}

impl MethodKind {
    /// The method's name in a merge config, e.g. `task_arithmetic`.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Linear => "linear",
            MethodKind::TaskArithmetic => "task_arithmetic",
            MethodKind::Ties => "ties",
            MethodKind::Dare => "dare",
            MethodKind::Slerp => "slerp",
        }
    }
}

/// The parameters of one method for one tensor (per-group overrides resolved by the caller).
#[derive(Clone, Debug, PartialEq)]
pub struct MethodParams {
    /// The method.
    pub method: MethodKind,
    /// One per model: the soup weights (linear) or the λᵢ (task arithmetic, TIES, DARE).
    pub weights: Vec<f64>,
    /// Linear: divide by the sum of the weights.
    pub normalize: bool,
    /// TIES: fraction of each delta's entries kept (largest magnitudes), in (0, 1].
    pub density: f64,
    /// DARE: probability of dropping each delta entry, in [0, 1).
    pub drop: f64,
    /// SLERP: position in [0, 1] between models[0] (t = 0) and models[1] (t = 1).
    pub t: f64,
    /// DARE: seed of the drop masks.
    pub seed: u64,
}

/// Merges one tensor named `name` (for error messages and DARE's seeds).
pub fn merge_tensor(
    name: &str,
    base: Option<&Tensor>,
    models: &[&Tensor],
    p: &MethodParams,
) -> Result<Tensor> {
    check(name, base, models, p)?;
    let kind = models[0].kind();
    let wide = |t: &Tensor| t.f_to_kind(Kind::Double);
    let thetas: Vec<Tensor> = models.iter().map(|t| wide(t)).collect::<Result<_, _>>()?;
    let base = base.map(wide).transpose()?;
    let needs_base = |base: Option<Tensor>| {
        base.ok_or_else(|| Error::Invalid(format!("{name}: {:?} needs a base model", p.method)))
    };
    let merged = match p.method {
        MethodKind::Linear => linear(&thetas, &p.weights, p.normalize)?,
        MethodKind::TaskArithmetic => {
            let base = needs_base(base)?;
            let deltas = deltas(&base, &thetas)?;
            weighted_deltas(&base, &deltas, &p.weights)?
        }
        MethodKind::Ties => ties(&needs_base(base)?, &thetas, &p.weights, p.density)?,
        MethodKind::Dare => {
            let base = needs_base(base)?;
            let deltas = deltas(&base, &thetas)?
                .into_iter()
                .enumerate()
                .map(|(i, d)| dare_delta(&d, p.drop, mask_seed(p.seed, name, i)))
                .collect::<Result<Vec<_>>>()?;
            weighted_deltas(&base, &deltas, &p.weights)?
        }
        MethodKind::Slerp => slerp(&thetas[0], &thetas[1], p.t)?,
    };
    Ok(merged.f_to_kind(kind)?)
}

/// Merges every tensor of `models` (and `base`), with the parameters `params_for(name)`.
pub fn merge_states(
    base: Option<&State>,
    models: &[State],
    params_for: impl Fn(&str) -> MethodParams,
) -> Result<State> {
    let Some(first) = models.first() else {
        return Err(Error::Invalid("merge: no models to merge".to_owned()));
    };
    for (i, model) in models.iter().enumerate() {
        if let Some(extra) = model.keys().find(|k| !first.contains_key(*k)) {
            return Err(Error::Invalid(format!(
                "merge: tensor `{extra}` of model {i} is missing from model 0"
            )));
        }
    }
    let mut out = State::new();
    for (name, tensor) in first {
        let mut inputs = vec![tensor];
        for (i, model) in models.iter().enumerate().skip(1) {
            inputs.push(model.get(name).ok_or_else(|| {
                Error::Invalid(format!("merge: tensor `{name}` is missing from model {i}"))
            })?);
        }
        let base_tensor = match base {
            Some(b) => Some(b.get(name).ok_or_else(|| {
                Error::Invalid(format!("merge: tensor `{name}` is missing from the base"))
            })?),
            None => None,
        };
        out.insert(
            name.clone(),
            merge_tensor(name, base_tensor, &inputs, &params_for(name))?,
        );
    }
    Ok(out)
}

/// Validates the inputs of one tensor's merge.
fn check(name: &str, base: Option<&Tensor>, models: &[&Tensor], p: &MethodParams) -> Result<()> {
    let invalid = |what: String| Err(Error::Invalid(format!("merge of tensor `{name}`: {what}")));
    let Some(first) = models.first() else {
        return invalid("no models".to_owned());
    };
    for (i, t) in models
        .iter()
        .copied()
        .enumerate()
        .chain(base.map(|b| (usize::MAX, b)))
    {
        let who = if i == usize::MAX {
            "the base".to_owned()
        } else {
            format!("model {i}")
        };
        if t.size() != first.size() {
            return Err(Error::Shape {
                op: format!("merge of tensor `{name}` ({who})"),
                expected: format!("{:?} (model 0)", first.size()),
                got: format!("{:?}", t.size()),
            });
        }
        if t.kind() != first.kind() {
            return invalid(format!(
                "{who} is {:?} but model 0 is {:?}",
                t.kind(),
                first.kind()
            ));
        }
    }
    let uses_weights = p.method != MethodKind::Slerp;
    if uses_weights && p.weights.len() != models.len() {
        return invalid(format!(
            "expected {} weights (one per model), got {}",
            models.len(),
            p.weights.len()
        ));
    }
    let needs_base = matches!(
        p.method,
        MethodKind::TaskArithmetic | MethodKind::Ties | MethodKind::Dare
    );
    if needs_base && base.is_none() {
        return invalid(format!("{:?} needs the base model", p.method));
    }
    match p.method {
        MethodKind::Slerp if models.len() != 2 => invalid(format!(
            "slerp needs exactly 2 models, got {}",
            models.len()
        )),
        MethodKind::Slerp if !(0.0..=1.0).contains(&p.t) => {
            invalid(format!("slerp position t = {} is outside [0, 1]", p.t))
        }
        MethodKind::Ties if !(p.density > 0.0 && p.density <= 1.0) => {
            invalid(format!("TIES density {} is outside (0, 1]", p.density))
        }
        MethodKind::Dare if !(0.0..1.0).contains(&p.drop) => invalid(format!(
            "DARE drop probability {} is outside [0, 1)",
            p.drop
        )),
        MethodKind::Linear if p.normalize && crate::config::sum_is_near_zero(&p.weights) => {
            invalid("linear weights sum to (nearly) 0 and cannot be normalised".to_owned())
        }
        _ => Ok(()),
    }
}

/// `Σ wᵢ θᵢ`, divided by `Σ wᵢ` when `normalize`.
fn linear(thetas: &[Tensor], weights: &[f64], normalize: bool) -> Result<Tensor> {
    let mut acc = thetas[0].f_zeros_like()?;
    for (theta, &w) in thetas.iter().zip(weights) {
        acc = acc.f_add(&theta.f_mul_scalar(w)?)?;
    }
    let total: f64 = weights.iter().sum();
    Ok(if normalize {
        acc.f_div_scalar(total)?
    } else {
        acc
    })
}

/// `θᵢ − θ₀` for every model.
fn deltas(base: &Tensor, thetas: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(thetas
        .iter()
        .map(|t| t.f_sub(base))
        .collect::<Result<_, _>>()?)
}

/// `θ₀ + Σ λᵢ δᵢ`.
fn weighted_deltas(base: &Tensor, deltas: &[Tensor], lambdas: &[f64]) -> Result<Tensor> {
    let mut acc = base.shallow_clone();
    for (delta, &l) in deltas.iter().zip(lambdas) {
        acc = acc.f_add(&delta.f_mul_scalar(l)?)?;
    }
    Ok(acc)
}

/// TIES-Merging (Yadav et al., 2023) with task weights: each delta is scaled by its λᵢ, then
/// trimmed to its `density` fraction of largest magnitudes; the sign of the summed trimmed
/// deltas is elected per entry, and the entries agreeing with it are averaged. With every
/// λᵢ = 1 this is the paper's method with its final scale 1.
fn ties(base: &Tensor, thetas: &[Tensor], lambdas: &[f64], density: f64) -> Result<Tensor> {
    let trimmed = deltas(base, thetas)?
        .into_iter()
        .zip(lambdas)
        .map(|(d, &l)| trim(&d.f_mul_scalar(l)?, density))
        .collect::<Result<Vec<_>>>()?;
    let stacked = Tensor::f_stack(&trimmed, 0)?;
    let elected = stacked
        .f_sum_dim_intlist(0, false, Kind::Double)?
        .f_sign()?;
    let agrees = stacked
        .f_sign()?
        .f_eq_tensor(&elected.f_unsqueeze(0)?)?
        .f_logical_and(&stacked.f_ne(0.0)?)?
        .f_to_kind(Kind::Double)?;
    let total = stacked
        .f_mul(&agrees)?
        .f_sum_dim_intlist(0, false, Kind::Double)?;
    let count = agrees
        .f_sum_dim_intlist(0, false, Kind::Double)?
        .f_clamp_min(1.0)?;
    Ok(base.f_add(&total.f_div(&count)?)?)
}

/// Keeps the `ceil(density · n)` entries of largest magnitude (the earliest among equal
/// magnitudes at the threshold) and zeroes the rest.
fn trim(delta: &Tensor, density: f64) -> Result<Tensor> {
    let n = delta.numel();
    let keep = ((density * n as f64).ceil() as usize).clamp(1, n.max(1));
    if n == 0 || keep >= n {
        return Ok(delta.shallow_clone());
    }
    let flat = delta.f_reshape([-1])?;
    let order = flat.f_abs()?.f_argsort_stable(true, 0, true)?;
    let kept = order.f_narrow(0, 0, keep as i64)?;
    let mask = flat.f_zeros_like()?.f_index_fill(0, &kept, 1.0)?;
    Ok(flat.f_mul(&mask)?.f_view(delta.size().as_slice())?)
}

/// A DARE delta: entries dropped with probability `drop`, survivors scaled by `1/(1 − drop)`;
/// the mask comes from a PCG generator seeded by `seed`.
fn dare_delta(delta: &Tensor, drop: f64, seed: u64) -> Result<Tensor> {
    if drop == 0.0 {
        return Ok(delta.shallow_clone());
    }
    let mut state = seed;
    let keep: Vec<f64> = (0..delta.numel())
        .map(|_| {
            if uniform(&mut state) < drop {
                0.0
            } else {
                1.0 / (1.0 - drop)
            }
        })
        .collect();
    let mask = Tensor::f_from_slice(&keep)?.f_view(delta.size().as_slice())?;
    Ok(delta.f_mul(&mask)?)
}

/// A uniform draw in [0, 1) from a SplitMix64 sequence (stable across platforms and versions).
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The seed of model `model`'s DARE mask for tensor `name` (FNV-1a over the name, mixed with
/// the user's seed and the model index).
fn mask_seed(seed: u64, name: &str, model: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name
        .bytes()
        .chain(model.to_le_bytes())
        .chain(seed.to_le_bytes())
    {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Spherical interpolation of two tensors as flat vectors: the direction moves along the
/// great circle from `a`'s to `b`'s (angle `t·Ω` from `a`, Ω the angle between them) and the
/// norm moves linearly from `|a|` to `|b|`; linear interpolation where they are (nearly)
/// colinear or one is zero.
fn slerp(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    let norm = |x: &Tensor| -> Result<f64> {
        Ok(x.f_square()?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?
            .sqrt())
    };
    let (na, nb) = (norm(a)?, norm(b)?);
    let lerp = || -> Result<Tensor> { Ok(a.f_mul_scalar(1.0 - t)?.f_add(&b.f_mul_scalar(t)?)?) };
    if na == 0.0 || nb == 0.0 {
        return lerp();
    }
    let cos = (a.f_mul(b)?.f_sum(Kind::Double)?.f_double_value(&[])? / (na * nb)).clamp(-1.0, 1.0);
    if cos.abs() > 1.0 - 1e-6 {
        return lerp();
    }
    let omega = cos.acos();
    let length = (1.0 - t) * na + t * nb;
    let wa = ((1.0 - t) * omega).sin() / omega.sin() * length / na;
    let wb = (t * omega).sin() / omega.sin() * length / nb;
    Ok(a.f_mul_scalar(wa)?.f_add(&b.f_mul_scalar(wb)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_the_largest_magnitudes_and_breaks_ties_by_position() {
        let d = Tensor::from_slice(&[0.1f64, -3.0, 2.0, -2.0, 0.5]);
        let t = trim(&d, 0.4).unwrap(); // keep ceil(2) entries
        assert_eq!(
            Vec::<f64>::try_from(&t).unwrap(),
            [0.0, -3.0, 2.0, 0.0, 0.0]
        );
        let all = trim(&d, 1.0).unwrap();
        assert!(all.equal(&d));
    }

    #[test]
    fn uniform_draws_are_spread_over_the_unit_interval() {
        let mut s = 7;
        let draws: Vec<f64> = (0..10_000).map(|_| uniform(&mut s)).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert_ne!(mask_seed(1, "a", 0), mask_seed(1, "a", 1));
        assert_ne!(mask_seed(1, "a", 0), mask_seed(2, "a", 0));
    }
}
