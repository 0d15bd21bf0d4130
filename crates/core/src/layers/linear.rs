//! A linear layer whose product runs in the configured compute dtype, with an optional LoRA
//! adapter.

use crate::config::LoraConfig;
use strata_tensor::{Precision, Result};
use tch::{Kind, Tensor, nn};

/// A low-rank adapter `scale · B · A` added to a linear layer's weight.
#[derive(Debug)]
pub struct LoraAdapter {
    /// Down projection `A` `[rank, in]` (`<linear>.lora_a`).
    pub a: Tensor,
    /// Up projection `B` `[out, rank]` (`<linear>.lora_b`), zero at initialisation.
    pub b: Tensor,
    /// Fixed multiplier of `B · A`.
    pub scale: f64,
}

/// `y = x · Wᵀ + b (+ scale · (x · Aᵀ) · Bᵀ)` with `W` of shape `[out, in]`, stored in f32.
#[derive(Debug)]
pub struct Linear {
    /// Weight `[out, in]` (the base weight `W0` of an adapted layer).
    pub weight: Tensor,
    /// Optional bias `[out]`.
    pub bias: Option<Tensor>,
    /// Optional LoRA adapter.
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Creates `path.weight` (normal with `std`) and, if `bias`, `path.bias` (zeros); with
    /// `lora`, also `path.lora_a` (normal with std `1/sqrt(in)`, from its own generator: see
    /// [`super::variant_normal`]) and `path.lora_b` (zeros), the weight and bias frozen (no
    /// gradient) when `lora.freeze_base`.
    pub fn new(
        path: nn::Path,
        inputs: usize,
        outputs: usize,
        bias: bool,
        std: f64,
        lora: Option<&LoraConfig>,
    ) -> Result<Self> {
        let (i, o) = (inputs as i64, outputs as i64);
        let freeze = lora.is_some_and(|l| l.freeze_base);
        let (weight, bias) = if freeze {
            // Registered as non-trainable variables: listed by `VarStore::variables` (so
            // checkpoints keep them) but without gradient and outside `trainable_variables`.
            let weight = nn::f_init(super::normal(std), &[o, i], path.device(), Kind::Float)?
                .f_to_kind(path.kind())?;
            let weight = path.add("weight", weight, false);
            let bias = bias
                .then(|| path.f_zeros_no_train("bias", &[o]))
                .transpose()?;
            (weight, bias)
        } else {
            let weight = path.f_var("weight", &[o, i], super::normal(std))?;
            (
                weight,
                bias.then(|| path.f_zeros("bias", &[o])).transpose()?,
            )
        };
        let lora = lora.map(|l| -> Result<LoraAdapter> {
            let r = l.rank as i64;
            let a = super::variant_normal(
                &weight,
                &path.path("lora_a"),
                &[r, i],
                1.0 / (inputs as f64).sqrt(),
            )?;
            Ok(LoraAdapter {
                a: path.f_var_copy("lora_a", &super::own_kind(&a, &path)?)?,
                b: path.f_zeros("lora_b", &[o, r])?,
                scale: l.scale,
            })
        });
        Ok(Self {
            weight,
            bias,
            lora: lora.transpose()?,
        })
    }

    /// Every parameter tensor of the layer: weight, bias, then `A` and `B` of the adapter.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.weight];
        out.extend(&self.bias);
        if let Some(lora) = &self.lora {
            out.push(&lora.a);
            out.push(&lora.b);
        }
        out
    }

    /// Applies the layer; the result is f32 whatever the compute dtype.
    pub fn forward(&self, x: &Tensor, precision: Precision) -> Result<Tensor> {
        self.forward_with(x, None, precision)
    }

    /// Output features `start..start + len` of the layer alone (the product with those rows
    /// of the weight, bias and LoRA `B`), f32.
    pub fn forward_rows(
        &self,
        x: &Tensor,
        start: i64,
        len: i64,
        precision: Precision,
    ) -> Result<Tensor> {
        self.forward_with(x, Some((start, len)), precision)
    }

    /// The product over all output features, or over `rows` `(start, len)` of them.
    fn forward_with(
        &self,
        x: &Tensor,
        rows: Option<(i64, i64)>,
        precision: Precision,
    ) -> Result<Tensor> {
        let pick = |t: &Tensor| -> Result<Tensor> {
            match rows {
                Some((start, len)) => precision.cast(&t.f_narrow(0, start, len)?),
                None => precision.cast(t),
            }
        };
        let weight = pick(&self.weight)?;
        let bias = self.bias.as_ref().map(pick).transpose()?;
        let x = precision.cast(x)?;
        let mut y = x.f_linear(&weight, bias.as_ref())?;
        if let Some(lora) = &self.lora {
            let down = x.f_linear::<Tensor>(&precision.cast(&lora.a)?, None)?;
            let up = down.f_linear::<Tensor>(&pick(&lora.b)?, None)?;
            y = y.f_add(&up.f_mul_scalar(lora.scale)?)?;
        }
        Ok(if y.kind() == Kind::Float {
            y
        } else {
            y.f_to_kind(Kind::Float)?
        })
    }
}
