//! strata-merge: new models from trained ones.
//!
//! - [`methods`]: merging fine-tunes of one base model tensor by tensor (linear soup, task
//!   arithmetic, TIES, DARE, SLERP);
//! - [`plan`]: layer plans (`1-1-2-2`, lists, slices, SOLAR depth up-scaling) that build a
//!   deeper (or shallower) model from a trained one, with copied or tied layers.
//!
//! Models are handled as named tensors ([`State`]); reading and writing checkpoints is the
//! train crate's and the CLI's business.

// Library code returns errors and never panics on its own: no `unwrap`/`expect` outside
// tests. A clippy lint rather than a test that scans sources: it sees method calls, not text,
// and CI's clippy run fails on it. An `expect` whose invariant makes failure impossible, on a
// value that is not a libtorch result, needs an `#[allow]` that gives the reason.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)
)]

pub mod config;
pub mod methods;
pub mod plan;
pub mod state;

pub use config::{GroupOverride, MergeConfig};
pub use methods::{MethodKind, MethodParams, State, merge_states, merge_tensor};
pub use plan::{DwaInit, Expanded, LayerPlan, LayerPlanSpec, PlanEntry, expand};
pub use state::{state_from, state_of};
