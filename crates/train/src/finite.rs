//! Finiteness checks: the NaN and infinities of a diverged run never reach a checkpoint, a
//! metrics line, an evaluation or a sample.

use std::path::Path;
use strata_tensor::{Error, Result};
use tch::{Tensor, nn};

/// The name of the first tensor (in the given order) holding a NaN or an infinity, or `None`
/// when every element of every tensor is finite.
///
/// One fused check: each tensor's all-finite flag is reduced on its device, the flags are
/// stacked and reduced once more, and a single value is read back; only when something is
/// non-finite are the flags read to name the culprit.
pub fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<Option<String>> {
    let mut names = Vec::new();
    let mut flags: Vec<Tensor> = Vec::new();
    for (name, tensor) in tensors {
        if !tensor.f_is_floating_point()? || tensor.numel() == 0 {
            continue;
        }
        let flag = tensor.f_isfinite()?.f_all()?;
        // A no-op unless tensors live on several devices.
        let device = flags.first().map_or(flag.device(), Tensor::device);
        flags.push(flag.f_to_device(device)?);
        names.push(name);
    }
    if flags.is_empty() {
        return Ok(None);
    }
    let flags = Tensor::f_stack(&flags, 0)?;
    if bool::try_from(flags.f_all()?)? {
        return Ok(None);
    }
    let flags = Vec::<bool>::try_from(&flags.f_to_device(tch::Device::Cpu)?)?;
    Ok(flags
        .iter()
        .position(|finite| !finite)
        .map(|i| names[i].to_owned()))
}

/// The variables of `vs` sorted by name, so that checks name the same tensor every time.
pub fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
}

/// Fails, naming the checkpoint `source` and the first offending tensor, when any of its
/// `weights` is NaN or infinite: a diverged run's checkpoint is of no use for evaluation or
/// sampling, and resuming it would only continue the divergence.
pub fn ensure_finite_weights(weights: &[(String, Tensor)], source: &Path) -> Result<()> {
    match first_non_finite(weights.iter().map(|(n, t)| (n.as_str(), t)))? {
        None => Ok(()),
        Some(name) => Err(Error::checkpoint(
            source,
            format!(
                "tensor `{name}` holds NaN or infinite values (the run had diverged when it \
                 was saved); refusing to use it"
            ),
        )),
    }
}

/// Fails when a loss `what` of the checkpoint `source` (e.g. `val loss`) is NaN or infinite.
pub fn ensure_finite_loss(value: f64, what: &str, source: &Path) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::checkpoint(
            source,
            format!("{what} is {value}: the model's outputs are not finite"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The reference: element by element, in Rust.
    fn naive_first_non_finite(tensors: &[(String, Tensor)]) -> Option<String> {
        tensors
            .iter()
            .find(|(_, t)| {
                let values = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1));
                values.unwrap().iter().any(|v| !v.is_finite())
            })
            .map(|(n, _)| n.clone())
    }

    /// Tensors of several shapes and precisions, named in order.
    fn tensors(seed: i64) -> Vec<(String, Tensor)> {
        tch::manual_seed(seed);
        let shapes: [&[i64]; 5] = [&[3, 4], &[7], &[], &[2, 3, 5], &[0, 4]];
        let kinds = [
            Kind::Float,
            Kind::Double,
            Kind::BFloat16,
            Kind::Float,
            Kind::Half,
        ];
        shapes
            .iter()
            .zip(kinds)
            .enumerate()
            .map(|(i, (shape, kind))| {
                let t = Tensor::randn(*shape, (kind, Device::Cpu)) * 1e3;
                (format!("t{i}"), t)
            })
            .collect()
    }

    #[test]
    fn names_the_first_tensor_with_nan_or_infinity_like_an_element_loop() {
        let finite = tensors(0);
        let view = |ts: &[(String, Tensor)]| -> Option<String> {
            first_non_finite(ts.iter().map(|(n, t)| (n.as_str(), t))).unwrap()
        };
        assert_eq!(view(&finite), None);
        assert_eq!(naive_first_non_finite(&finite), None);
        let mut cases = 0;
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for poisoned in [vec![3], vec![0, 3], vec![1], vec![2]] {
                for (index, element) in [(0usize, 5i64), (1, 6), (3, 29)] {
                    let ts = tensors(cases);
                    cases += 1;
                    for &p in &poisoned {
                        let position = if p == index { element } else { 0 };
                        let _ = ts[p].1.flatten(0, -1).get(position).fill_(bad);
                    }
                    let expected = naive_first_non_finite(&ts);
                    assert!(expected.is_some());
                    assert_eq!(view(&ts), expected, "{bad} in {poisoned:?}");
                }
            }
        }
        // Integer tensors cannot hold NaN and are skipped; no tensors at all are finite.
        let ints = [("ids".to_owned(), Tensor::from_slice(&[1i64, 2]))];
        assert_eq!(view(&ints), None);
        assert_eq!(view(&[]), None);
    }

    #[test]
    fn refuses_non_finite_weights_naming_the_checkpoint_and_tensor() {
        let ts = tensors(1);
        let _ = ts[1].1.get(2).fill_(f64::NAN);
        let source = Path::new("runs/x/checkpoints/step-000010");
        let err = ensure_finite_weights(&ts, source).unwrap_err().to_string();
        assert!(
            err.contains("step-000010") && err.contains("tensor `t1`"),
            "{err}"
        );
        assert!(ensure_finite_weights(&tensors(2), source).is_ok());
        assert!(ensure_finite_loss(f64::NAN, "val loss", source).is_err());
        assert_eq!(ensure_finite_loss(2.5, "val loss", source).unwrap(), 2.5);
    }
}
