//! The building blocks of a transformer: linear, norm, attention, MLP and rotary layers.

mod attention;
mod call;
mod linear;
mod mlp;
mod norm;
mod rotary;

pub use attention::CausalSelfAttention;
pub use call::LayerCall;
pub use linear::Linear;
pub use mlp::Mlp;
pub use norm::{DEFAULT_EPS, Norm};
pub use rotary::Rotary;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use strata_tensor::Result;
use tch::nn::Init;
use tch::{Device, Kind, Tensor};

/// Normal initialisation with standard deviation `std` (GPT-2's scheme).
pub(crate) fn normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// Normal values (standard deviation `std`, f32 on the CPU) for a tensor that only some
/// variants have (a LoRA `A`, ...), so that adding a variant never shifts the draws of the
/// tensors it shares with the baseline. They come from their own PCG generator, not from
/// libtorch's: it is keyed by the tensor's `name` and by the first values of `anchor`, a
/// shared tensor drawn just before from libtorch's seeded generator (so the key is a function
/// of the seed).
pub(crate) fn variant_normal(
    anchor: &Tensor,
    name: &str,
    shape: &[i64],
    std: f64,
) -> Result<Tensor> {
    let first = anchor
        .f_flatten(0, -1)?
        .f_narrow(0, 0, anchor.numel().min(8) as i64)?
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?;
    let mut key = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    for v in Vec::<f32>::try_from(&first).unwrap_or_default() {
        key = (key ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = rand_pcg::Pcg64::seed_from_u64(key);
    let count = shape.iter().product::<i64>().max(0) as usize;
    let values: Vec<f32> = match Normal::new(0.0f32, std as f32) {
        Ok(normal) => (0..count).map(|_| normal.sample(&mut rng)).collect(),
        Err(_) => vec![0.0; count],
    };
    Ok(Tensor::f_from_slice(&values)?.f_view(shape)?)
}

/// `t` in the kind and on the device of the variables under `path`.
pub(crate) fn own_kind(t: &Tensor, path: &tch::nn::Path) -> Result<Tensor> {
    Ok(t.f_to_kind(path.kind())?.f_to_device(path.device())?)
}

/// Fills a parameter with `value` in place, outside autograd.
pub(crate) fn fill(param: &Tensor, value: f64) -> Result<()> {
    tch::no_grad(|| param.shallow_clone().f_fill_(value).map(drop))?;
    Ok(())
}

/// Sets entry `index` of a parameter vector to `value` in place, outside autograd.
pub(crate) fn set_entry(param: &Tensor, index: i64, value: f64) -> Result<()> {
    tch::no_grad(|| param.f_get(index)?.f_fill_(value).map(drop))?;
    Ok(())
}
