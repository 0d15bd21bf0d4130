//! Dtype policy: parameters and optimizer state stay f32; matrix products run in the compute
//! dtype (f32 or bf16), with norms, softmax statistics and the loss accumulated in f32.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The dtype matrix products run in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products in bf16 against f32 master weights.
    Bf16,
}

impl Precision {
    /// The libtorch kind used for compute.
    pub fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
        }
    }

    /// Casts `t` to the compute dtype; a no-op (no copy) when it already has it.
    pub fn cast(self, t: &Tensor) -> Tensor {
        if t.kind() == self.kind() {
            t.shallow_clone()
        } else {
            t.to_kind(self.kind())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_cast_rounds_and_f32_is_identity() {
        let x = Tensor::from_slice(&[1.0f32, 1.0 + 1.0 / 512.0, 3.0]);
        let same = Precision::F32.cast(&x);
        assert_eq!(same.data_ptr(), x.data_ptr());
        let low = Precision::Bf16.cast(&x);
        assert_eq!(low.kind(), Kind::BFloat16);
        // bf16 keeps 8 significant bits: 1 + 2^-9 rounds to 1.
        let back: Vec<f32> = Vec::try_from(low.to_kind(Kind::Float)).unwrap();
        assert_eq!(back, vec![1.0, 1.0, 3.0]);
    }
}
