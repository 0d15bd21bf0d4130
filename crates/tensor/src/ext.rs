//! [`TensorExt`]: checked shape operations and comparisons on `tch::Tensor`.

use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Checked operations that every strata crate uses instead of panicking tch calls.
pub trait TensorExt {
    /// The tensor's shape.
    fn dims(&self) -> Vec<i64>;
    /// Fails unless the shape matches `expected`, where `None` accepts any size.
    fn expect_shape(&self, op: &str, expected: &[Option<i64>]) -> Result<()>;
    /// Matrix product that reports mismatched shapes as [`Error::Shape`].
    fn checked_matmul(&self, other: &Tensor, op: &str) -> Result<Tensor>;
    /// Copies the elements, flattened, into a `Vec<f64>` on the CPU.
    fn to_f64_vec(&self) -> Result<Vec<f64>>;
    /// Largest absolute element-wise difference to `other` (shapes must match).
    fn max_abs_diff(&self, other: &Tensor) -> Result<f64>;
    /// Largest absolute difference divided by the largest absolute value of `other`.
    fn max_rel_diff(&self, other: &Tensor) -> Result<f64>;
    /// True when every element is finite.
    fn all_finite(&self) -> bool;
    /// Bytes occupied by the elements.
    fn byte_size(&self) -> usize;
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
    fn dims(&self) -> Vec<i64> {
        self.size()
    }

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

    fn checked_matmul(&self, other: &Tensor, op: &str) -> Result<Tensor> {
        let (a, b) = (self.size(), other.size());
        let inner_fits = match (a.last(), b.len()) {
            (Some(k), 1) => *k == b[0],
            (Some(k), n) if n >= 2 => *k == b[n - 2],
            _ => false,
        };
        if !inner_fits {
            return Err(Error::Shape {
                op: op.to_owned(),
                expected: format!("inner dimensions to agree ({a:?} x {b:?})"),
                got: format!("{a:?} x {b:?}"),
            });
        }
        Ok(self.f_matmul(other)?)
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

    fn byte_size(&self) -> usize {
        self.numel() * self.kind().elt_size_in_bytes()
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
    fn checked_matmul_matches_a_naive_loop_and_rejects_bad_shapes() {
        let a = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([2, 3]);
        let b = Tensor::from_slice(&[7.0f64, 8.0, 9.0, 10.0, 11.0, 12.0]).reshape([3, 2]);
        let got = a.checked_matmul(&b, "test").unwrap().to_f64_vec().unwrap();
        let (av, bv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        for i in 0..2 {
            for j in 0..2 {
                let want: f64 = (0..3).map(|k| av[i * 3 + k] * bv[k * 2 + j]).sum();
                assert_eq!(got[i * 2 + j], want);
            }
        }
        assert!(matches!(
            a.checked_matmul(&a, "x"),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn diffs_finiteness_and_sizes() {
        let a = Tensor::from_slice(&[1.0f32, -2.0, 4.0]);
        let b = Tensor::from_slice(&[1.5f32, -2.0, 4.0]);
        assert_eq!(a.max_abs_diff(&b).unwrap(), 0.5);
        assert_eq!(a.max_rel_diff(&b).unwrap(), 0.5 / 4.0);
        assert!(a.all_finite());
        assert!(!Tensor::from_slice(&[1.0f32, f32::NAN]).all_finite());
        assert_eq!(a.byte_size(), 12);
        assert!(a.max_abs_diff(&Tensor::from_slice(&[1.0f32])).is_err());
    }
}
