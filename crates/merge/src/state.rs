//! A model's tensors as a [`State`].

use crate::methods::State;
use strata_tensor::Result;
use tch::nn;

/// Detached copies of every variable of `vs`, by name.
pub fn state_of(vs: &nn::VarStore) -> Result<State> {
    vs.variables()
        .into_iter()
        .map(|(name, t)| Ok((name, t.f_detach_copy()?)))
        .collect()
}

/// Detached copies of named tensors (e.g. a checkpoint's) as a [`State`].
pub fn state_from(tensors: &[(String, tch::Tensor)]) -> Result<State> {
    tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.f_detach_copy()?)))
        .collect()
}
