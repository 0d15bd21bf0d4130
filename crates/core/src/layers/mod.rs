//! The building blocks of a transformer: linear, norm, attention, MLP and rotary layers.

mod attention;
mod linear;
mod mlp;
mod norm;
mod rotary;

pub use attention::CausalSelfAttention;
pub use linear::Linear;
pub use mlp::Mlp;
pub use norm::{DEFAULT_EPS, Norm};
pub use rotary::Rotary;

use tch::nn::Init;

/// Normal initialisation with standard deviation `std` (GPT-2's scheme).
pub(crate) fn normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}
