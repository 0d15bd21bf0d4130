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
    /// libtorch's autocast (as `torch.autocast(dtype=torch.bfloat16)`): every op on its
    /// lower-precision list (linear layers, matrix products, attention) in bf16, the rest
    /// (norms, softmax statistics, the loss) in f32, against f32 master weights.
    #[serde(rename = "bf16_autocast")]
    Bf16Autocast,
}

impl Precision {
    /// The libtorch kind explicit casts use (f32 under autocast, which casts by itself).
    pub fn kind(self) -> Kind {
        match self {
            Self::F32 | Self::Bf16Autocast => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
        }
    }

    /// Whether the forward pass runs in a libtorch autocast region.
    pub fn autocast(self) -> bool {
        self == Self::Bf16Autocast
    }

    /// Casts `t` to the compute dtype; a no-op (no copy) when it already has it.
    pub fn cast(self, t: &Tensor) -> crate::Result<Tensor> {
        if t.kind() == self.kind() {
            Ok(t.shallow_clone())
        } else {
            Ok(t.f_to_kind(self.kind())?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_cast_rounds_and_f32_is_identity() {
        let x = Tensor::from_slice(&[1.0f32, 1.0 + 1.0 / 512.0, 3.0]);
        let same = Precision::F32.cast(&x).unwrap();
        assert_eq!(same.data_ptr(), x.data_ptr());
        let low = Precision::Bf16.cast(&x).unwrap();
        assert_eq!(low.kind(), Kind::BFloat16);
        // bf16 keeps 8 significant bits: 1 + 2^-9 rounds to 1.
        let back: Vec<f32> = Vec::try_from(low.to_kind(Kind::Float)).unwrap();
        assert_eq!(back, vec![1.0, 1.0, 3.0]);
    }
}
