//! [`LayerStack`]: the embedding output and every block output of one forward pass.

use crate::{Implementation, Selection, ffi, weighted_sum, weighted_sum_list};
use strata_tensor::{Error, Result};
use tch::Tensor;

/// Storage for the layer outputs a DenseFormer averages over.
///
/// The outputs are copied into one preallocated buffer `[capacity, ...]` and every weighted
/// sum reads a strided view of it. Without autograd (evaluation, generation) the sum is the
/// no-grad kernel for the device. While autograd records, plain libtorch ops cannot
/// differentiate through a buffer written after it was read, so pushes and sums go through
/// the C++ autograd functions in `csrc/stack_autograd.cpp`: the CPU kernel (a matrix product
/// off the CPU) forward, one rank-1 update into a shared gradient buffer backward. Made with
/// [`Implementation::Reference`], or in a build without the `cpp` feature, a recording stack
/// keeps the live tensors instead and sums them with the reference loop; a stack that does
/// not record sums its buffer with the implementation it was made with.
pub struct LayerStack {
    storage: Storage,
    len: usize,
    capacity: usize,
    /// Which slots some weighted sum will read (`None`: all); the others are not stored.
    reads: Option<Vec<bool>>,
    /// The weighted sum's implementation (see [`LayerStack`]).
    implementation: Implementation,
}

/// Where the layer outputs live.
enum Storage {
    /// One preallocated buffer, written in place, no autograd.
    Buffer(Tensor),
    /// One preallocated buffer under the C++ autograd functions.
    Chain {
        /// The outputs `[capacity, ...]`.
        values: Tensor,
        /// Their gradients, allocated by the first backward step that needs them.
        grads: Tensor,
        /// The token of the last push; every sum depends on it.
        token: Option<Tensor>,
        /// True once a pushed output required gradients (the chain is in the graph).
        recording: bool,
    },
    /// The autograd graph's own tensors (the reference path).
    Live(Vec<Tensor>),
}

impl LayerStack {
    /// A stack for `capacity` outputs shaped like `first`, holding `first` as layer 0.
    /// `track_grad`: autograd records through the stack; `implementation`: how its weighted
    /// sums run (see [`LayerStack`]; `Auto` unless comparing paths).
    pub fn new(
        first: &Tensor,
        capacity: usize,
        track_grad: bool,
        implementation: Implementation,
    ) -> Result<Self> {
        Self::build(first, capacity, track_grad, None, implementation)
    }

    /// Like [`LayerStack::new`] for `reads.len()` outputs, storing only the slots `j` with
    /// `reads[j]`: the outputs no weighted sum reads (DenseFormer with dilation and period)
    /// are neither copied nor given a gradient slot.
    pub fn reading(
        first: &Tensor,
        reads: &[bool],
        track_grad: bool,
        implementation: Implementation,
    ) -> Result<Self> {
        Self::build(
            first,
            reads.len(),
            track_grad,
            Some(reads.to_vec()),
            implementation,
        )
    }

    /// A stack for `capacity` outputs shaped like `first` (holding it as layer 0) whose
    /// [`LayerStack::token_weighted_sum`] takes a weight per position: while autograd records
    /// it keeps the live tensors (libtorch differentiates the sums), otherwise one buffer.
    pub fn per_token(first: &Tensor, capacity: usize, track_grad: bool) -> Result<Self> {
        Self::build(first, capacity, track_grad, None, Implementation::Reference)
    }

    /// The constructors' common body.
    fn build(
        first: &Tensor,
        capacity: usize,
        track_grad: bool,
        reads: Option<Vec<bool>>,
        implementation: Implementation,
    ) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::Invalid(
                "layer stack capacity must be at least 1".to_owned(),
            ));
        }
        let mut shape = vec![capacity as i64];
        shape.extend(first.size());
        let options = (first.kind(), first.device());
        let storage = match (track_grad, implementation) {
            (true, Implementation::Reference) => Storage::Live(Vec::with_capacity(capacity)),
            (true, _) if !ffi::AUTOGRAD_CHAIN => Storage::Live(Vec::with_capacity(capacity)),
            (true, _) => Storage::Chain {
                values: Tensor::f_empty(shape, options)?,
                grads: Tensor::f_empty([0], options)?,
                token: None,
                recording: false,
            },
            (false, _) => Storage::Buffer(Tensor::f_empty(shape, options)?),
        };
        let mut stack = Self {
            storage,
            len: 0,
            capacity,
            reads,
            implementation,
        };
        stack.push(first)?;
        Ok(stack)
    }

    /// Number of stored outputs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored (never after construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when slot `j` is stored.
    fn stores(&self, j: usize) -> bool {
        self.reads.as_ref().is_none_or(|r| r[j])
    }

    /// Appends a layer output.
    pub fn push(&mut self, x: &Tensor) -> Result<()> {
        if self.len == self.capacity {
            return Err(Error::Invalid(format!(
                "layer stack is full ({} outputs)",
                self.capacity
            )));
        }
        if !self.stores(self.len) && !matches!(self.storage, Storage::Live(_)) {
            self.len += 1;
            return Ok(());
        }
        match &mut self.storage {
            Storage::Buffer(buffer) => {
                buffer.f_get(self.len as i64)?.f_copy_(x)?;
            }
            Storage::Chain {
                values,
                grads,
                token,
                recording,
            } => {
                let first_recorded = !*recording && x.requires_grad();
                *recording |= x.requires_grad();
                let next = ffi::push(token.as_ref(), x, values, grads, self.len, first_recorded)?;
                *token = Some(next);
            }
            Storage::Live(list) => list.push(x.shallow_clone()),
        }
        self.len += 1;
        Ok(())
    }

    /// Sums of every stored output with weights per position: `weights` `[..., C, J]` (the
    /// outputs' shape without its last axis, then `C` sums of the `J = len` outputs) gives
    /// `[..., C, D]`, sum `c` at each position being `Σⱼ weights[.., c, j] · xⱼ`, in the
    /// outputs' dtype. Needs a stack made by [`LayerStack::per_token`] (or without autograd).
    pub fn token_weighted_sum(&self, weights: &Tensor) -> Result<Tensor> {
        let values = match &self.storage {
            Storage::Buffer(buffer) => buffer.f_narrow(0, 0, self.len as i64)?.f_movedim(0, -2)?,
            Storage::Live(list) => Tensor::f_stack(list, -2)?,
            Storage::Chain { .. } => {
                return Err(Error::Invalid(
                    "layer stack: a sum with weights per position needs a stack made by \
                     LayerStack::per_token"
                        .to_owned(),
                ));
            }
        };
        let (size, shape) = (weights.size(), values.size());
        let lead = shape.len().saturating_sub(2);
        if size.len() != shape.len()
            || size[..lead] != shape[..lead]
            || size.last() != Some(&(self.len as i64))
        {
            return Err(Error::Shape {
                op: "layer stack: weights per position".to_owned(),
                expected: format!(
                    "[{}, C, {}] (the outputs' shape without its last axis, then C sums of {} \
                     outputs)",
                    shape[..lead]
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.len,
                    self.len
                ),
                got: format!("{size:?}"),
            });
        }
        let kind = values.kind();
        Ok(weights
            .f_to_kind(kind)?
            .f_matmul(&values)?
            .f_to_kind(kind)?)
    }

    /// Weighted sum of the selected stored outputs.
    pub fn weighted_sum(&self, weights: &Tensor, selection: &Selection) -> Result<Tensor> {
        if selection.last().is_some_and(|last| last >= self.len) {
            return Err(Error::Invalid(format!(
                "layer stack holds {} outputs but the selection reaches index {:?}",
                self.len,
                selection.last()
            )));
        }
        if let Some(unread) = selection.indices().find(|&j| !self.stores(j)) {
            return Err(Error::Invalid(format!(
                "layer stack: slot {unread} was declared unread, but a weighted sum selects it"
            )));
        }
        match &self.storage {
            Storage::Buffer(buffer) => {
                let filled = buffer.f_narrow(0, 0, self.len as i64)?;
                weighted_sum(&filled, weights, selection, self.implementation)
            }
            Storage::Chain {
                values,
                grads,
                token,
                ..
            } => {
                crate::weighted_sum::check_weights(weights, selection)?;
                let token = token.as_ref().ok_or_else(|| {
                    Error::Invalid("layer stack: no stored output to sum".to_owned())
                })?;
                ffi::stack_weighted_sum(weights, token, values, grads, selection)
            }
            Storage::Live(list) => {
                let chosen: Vec<Tensor> = selection
                    .indices()
                    .map(|j| list[j].shallow_clone())
                    .collect();
                weighted_sum_list(&chosen, weights)
            }
        }
    }
}
