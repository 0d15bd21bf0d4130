//! [`TensorExt`]: shape checks and comparisons on `tch::Tensor`.

use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Shape checks and comparisons the strata crates share. The checked operations themselves are
/// tch's `f_` methods: library crates may not call their panicking twins (`clippy.toml`).
pub trait TensorExt {
    /// Fails unless the shape matches `expected`, where `None` accepts any size.
    fn expect_shape(&self, op: &str, expected: &[Option<i64>]) -> Result<()>;
    /// Copies the elements, flattened, into a `Vec<f64>` on the CPU.
    fn to_f64_vec(&self) -> Result<Vec<f64>>;
    /// Largest absolute element-wise difference to `other` (shapes must match).
    fn max_abs_diff(&self, other: &Tensor) -> Result<f64>;
    /// Largest absolute difference divided by the largest absolute value of `other`.
    fn max_rel_diff(&self, other: &Tensor) -> Result<f64>;
    /// True when every element is finite.
    fn all_finite(&self) -> bool;
}

/// Formats a shape pattern, `_` standing for any size.
fn pattern(expected: &[Option<i64>]) -> String {
    let parts: Vec<String> = expected
        .iter()
        .map(|d| d.map_or_else(|| "_".to_owned(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

impl TensorExt for Tensor {
    fn expect_shape(&self, op: &str, expected: &[Option<i64>]) -> Result<()> {
        let got = self.size();
        let fits = got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .all(|(g, e)| e.is_none_or(|e| e == *g));
        if fits {
            Ok(())
        } else {
            Err(Error::Shape {
                op: op.to_owned(),
                expected: pattern(expected),
                got: format!("{got:?}"),
            })
        }
    }

    fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let flat = self
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?
            .f_reshape([-1])?;
        Ok(Vec::<f64>::try_from(&flat)?)
    }

    fn max_abs_diff(&self, other: &Tensor) -> Result<f64> {
        if self.size() != other.size() {
            return Err(Error::Shape {
                op: "max_abs_diff".to_owned(),
                expected: format!("{:?}", other.size()),
                got: format!("{:?}", self.size()),
            });
        }
        if self.numel() == 0 {
            return Ok(0.0);
        }
        let diff = self
            .f_to_kind(Kind::Double)?
            .f_sub(&other.f_to_kind(Kind::Double)?)?
            .f_abs()?;
        Ok(diff.f_max()?.f_double_value(&[])?)
    }

    fn max_rel_diff(&self, other: &Tensor) -> Result<f64> {
        let abs = self.max_abs_diff(other)?;
        if other.numel() == 0 {
            return Ok(0.0);
        }
        let scale = other
            .f_to_kind(Kind::Double)?
            .f_abs()?
            .f_max()?
            .f_double_value(&[])?;
        Ok(if scale == 0.0 { abs } else { abs / scale })
    }

    fn all_finite(&self) -> bool {
        self.numel() == 0
            || self
                .f_isfinite()
                .and_then(|t| t.f_all())
                .and_then(bool::try_from)
                .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_shape_accepts_wildcards_and_names_the_mismatch() {
        let t = Tensor::zeros([2, 3, 4], (Kind::Float, tch::Device::Cpu));
        t.expect_shape("op", &[Some(2), None, Some(4)]).unwrap();
        let err = t.expect_shape("attn", &[Some(2), Some(4)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "attn: expected shape [2, 4], got [2, 3, 4]"
        );
    }

    #[test]
    fn diffs_and_finiteness() {
        let a = Tensor::from_slice(&[1.0f32, -2.0, 4.0]);
        let b = Tensor::from_slice(&[1.5f32, -2.0, 4.0]);
        assert_eq!(a.max_abs_diff(&b).unwrap(), 0.5);
        assert_eq!(a.max_rel_diff(&b).unwrap(), 0.5 / 4.0);
        assert!(a.all_finite());
        assert!(!Tensor::from_slice(&[1.0f32, f32::NAN]).all_finite());
        assert!(a.max_abs_diff(&Tensor::from_slice(&[1.0f32])).is_err());
    }
}
