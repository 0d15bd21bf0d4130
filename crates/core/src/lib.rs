//! strata-core: decoder-only transformers and DenseFormer.
//!
//! [`ModelConfig`] describes an architecture (TOML/serde); [`Gpt`] builds it on a tch
//! `VarStore` path and implements `nn::ModuleT`. With `dwa` set, a DWA layer after block
//! `i` replaces the block output by a learned weighted average of the embedding output and
//! every block output so far (DenseFormer k×p), computed by `strata-kernels`.
//!
//! ```
//! use strata_core::{Gpt, ModelConfig};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let config: ModelConfig = toml::from_str(
//!     "vocab_size = 65\nn_layer = 2\nn_head = 4\nd_model = 32\nblock_size = 16\n\
//!      [dwa]\ndilation = 1\nperiod = 1",
//! )?;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = Gpt::new(&vs.root(), &config)?;
//! let idx = Tensor::randint(65, [2, 16], (Kind::Int64, Device::Cpu));
//! let logits = model.forward(&idx, false)?;
//! assert_eq!(logits.size(), [2, 16, 65]);
//! assert!(model.param_count().total > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

pub mod attn_res;
mod block;
mod builder;
pub mod config;
pub mod depth;
mod depth_config;
pub mod dwa;
pub mod flops;
pub mod hyper;
pub mod kv_cache;
pub mod laurel;
pub mod layers;
mod model;
pub mod mudd;
mod sampling;
pub mod schema;
pub mod value_residual;

pub use block::Block;
pub use builder::ModelConfigBuilder;
pub use config::{
    DepthConfig, DwaConfig, HyperConfig, LaurelConfig, LaurelKind, LoraConfig, LoraTarget, MlpKind,
    ModelConfig, NormKind, PositionKind, SharingConfig, SharingPattern,
};
pub use depth::DepthStack;
pub use kv_cache::KvCache;
pub use model::{Gpt, ParamCount};
pub use sampling::SampleOptions;
pub use schema::{ParamSpec, Role};
pub use strata_kernels::Implementation;
pub use value_residual::ValueMix;
