//! DenseFormer's depth-weighted averages (DWA).
//!
//! Index 0 of the layer stack is the embedding output and index `i + 1` the output of layer
//! `i`. The DWA after layer `i` (present when `(i + 1) % p == 0`) returns
//! `Σ_j α_j · x_j` over the stored outputs `j <= i + 1` with `j ≡ i + 1 (mod k)`; the result
//! feeds layer `i + 1`, while the stack keeps raw layer outputs. Each `α` starts as the
//! one-hot vector on the current output, so a fresh DenseFormer equals the baseline.
//! [`crate::depth::DepthStack`] owns the DWAs of a model and runs them.

use strata_kernels::{LayerStack, Selection};
use strata_tensor::{Result, TensorExt};
use tch::{Tensor, nn};

/// One DWA: its weights and the stack indices they apply to.
#[derive(Debug)]
pub struct Dwa {
    /// Weights `[selection.count]`, parameter `dwa.<layer>.alpha`.
    pub alpha: Tensor,
    /// Stack indices the weights apply to.
    pub selection: Selection,
}

impl Dwa {
    /// The DWA after layer `after` with dilation `dilation`, its weights `path.alpha` at the
    /// identity (one-hot on the current output; no random draw).
    pub fn identity(path: nn::Path, after: usize, dilation: usize) -> Result<Self> {
        let selection = Selection::dilated(after + 1, dilation)?;
        let alpha = path.f_zeros("alpha", &[selection.count as i64])?;
        crate::layers::set_entry(&alpha, selection.count as i64 - 1, 1.0)?;
        Ok(Self { alpha, selection })
    }

    /// Averages the stored outputs.
    pub fn forward(&self, stack: &LayerStack) -> Result<Tensor> {
        stack.weighted_sum(&self.alpha, &self.selection)
    }
}

/// The DWA weights as a dense matrix: row `i` for the DWA after layer `i` (all layers listed),
/// column `j` for stack index `j`; `None` where no weight connects them.
pub fn weight_matrix(dwas: &[Option<Dwa>], n_layer: usize) -> Result<Vec<Vec<Option<f64>>>> {
    let mut rows = vec![vec![None; n_layer + 1]; n_layer];
    for (row, dwa) in rows.iter_mut().zip(dwas) {
        if let Some(dwa) = dwa {
            let values = dwa.alpha.to_f64_vec()?;
            for (j, v) in dwa.selection.indices().zip(values) {
                row[j] = Some(v);
            }
        }
    }
    Ok(rows)
}
