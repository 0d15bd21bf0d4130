//! [`LayerStack`]: the embedding output and every block output of one forward pass.

use crate::{Implementation, Selection, weighted_sum, weighted_sum_list};
use strata_tensor::{Error, Result};
use tch::Tensor;

/// Storage for the layer outputs a DenseFormer averages over.
///
/// Without autograd (evaluation, generation) the outputs are copied into one preallocated
/// buffer `[capacity, ...]` and read back as strided views. While autograd records, writing
/// into a shared buffer would invalidate the views saved for the backward pass, so the
/// outputs are kept as the live tensors of the graph instead.
pub struct LayerStack {
    storage: Storage,
    len: usize,
    capacity: usize,
}

/// Where the layer outputs live.
enum Storage {
    /// One preallocated buffer, written in place.
    Buffer(Tensor),
    /// The autograd graph's own tensors.
    Live(Vec<Tensor>),
}

impl LayerStack {
    /// A stack for `capacity` outputs shaped like `first`, holding `first` as layer 0.
    /// `track_grad` selects live storage (true) or the preallocated buffer (false).
    pub fn new(first: &Tensor, capacity: usize, track_grad: bool) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::Invalid(
                "layer stack capacity must be at least 1".to_owned(),
            ));
        }
        let storage = if track_grad {
            Storage::Live(Vec::with_capacity(capacity))
        } else {
            let mut shape = vec![capacity as i64];
            shape.extend(first.size());
            Storage::Buffer(Tensor::empty(shape, (first.kind(), first.device())))
        };
        let mut stack = Self {
            storage,
            len: 0,
            capacity,
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

    /// Appends a layer output.
    pub fn push(&mut self, x: &Tensor) -> Result<()> {
        if self.len == self.capacity {
            return Err(Error::Invalid(format!(
                "layer stack is full ({} outputs)",
                self.capacity
            )));
        }
        match &mut self.storage {
            Storage::Buffer(buffer) => {
                buffer.get(self.len as i64).f_copy_(x)?;
            }
            Storage::Live(list) => list.push(x.shallow_clone()),
        }
        self.len += 1;
        Ok(())
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
        match &self.storage {
            Storage::Buffer(buffer) => {
                let filled = buffer.narrow(0, 0, self.len as i64);
                weighted_sum(&filled, weights, selection, Implementation::Auto)
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
