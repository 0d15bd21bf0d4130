//! strata-core: decoder-only transformers and DenseFormer.
//!
//! [`ModelConfig`] describes an architecture (TOML/serde); [`Gpt`] builds it on a tch
//! `VarStore` path and implements `nn::ModuleT`. With `dwa` set, a DWA layer after block
//! `i` replaces the block output by a learned weighted average of the embedding output and
//! every block output so far (DenseFormer k×p), computed by `strata-kernels`.

mod block;
pub mod config;
pub mod dwa;
pub mod layers;
mod model;
mod sampling;

pub use block::Block;
pub use config::{DwaConfig, MlpKind, ModelConfig, NormKind, PositionKind};
pub use model::{Gpt, ParamCount};
pub use sampling::SampleOptions;
