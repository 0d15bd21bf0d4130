//! [`DepthStack`]: the depth methods around a sequence of layers, usable in any tch model.
//!
//! A depth stack runs `n_layer` layers that the caller supplies (a closure gets the layer
//! index and its input and returns the layer's output) and does everything between them:
//! it stores the outputs a DWA will read (in `strata_kernels::LayerStack`, one buffer with
//! its own autograd), owns the DWA weights (`<path>.<layer>.alpha`, identity at init) and
//! replaces the stream by each DWA's average. Without DWA it is a plain loop. `Gpt` runs its
//! blocks through one, and so can a model that is not a strata model:
//!
//! ```
//! use strata_core::{DwaConfig, depth::DepthStack};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let layers: Vec<nn::Linear> = (0..4)
//!     .map(|i| nn::linear(vs.root() / "layer" / i, 8, 8, Default::default()))
//!     .collect();
//! let dwa = DwaConfig { dilation: 1, period: 1 };
//! let depth = DepthStack::new(vs.root() / "dwa", layers.len(), Some(dwa))?;
//! let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
//! let y = depth.forward(x, |i, x| Ok(x + x.apply(&layers[i]).relu()))?;
//! assert_eq!(y.size(), [2, 8]);
//! # Ok::<(), strata_tensor::Error>(())
//! ```

use crate::config::DwaConfig;
use crate::dwa::{self, Dwa};
use strata_kernels::LayerStack;
use strata_tensor::{Error, Result};
use tch::{Tensor, nn};

/// The layers' orchestration: stored outputs, DWA weights and their order.
#[derive(Debug)]
pub struct DepthStack {
    n_layer: usize,
    /// The DWA after each layer (empty without DWA; `None` where the period skips a layer).
    dwas: Vec<Option<Dwa>>,
    /// Which stack entries some DWA reads (the others are never stored).
    reads: Vec<bool>,
}

impl DepthStack {
    /// A stack of `n_layer` layers; with `dwa`, a DWA after every `period`-th layer, its
    /// weights `path.<layer>.alpha` at the identity (so the stack computes exactly what the
    /// plain loop computes). Draws no random numbers.
    pub fn new(path: nn::Path, n_layer: usize, dwa: Option<DwaConfig>) -> Result<Self> {
        if n_layer == 0 {
            return Err(Error::Invalid(
                "depth stack: expected at least 1 layer, got 0".to_owned(),
            ));
        }
        let dwas: Vec<Option<Dwa>> = match dwa {
            None => Vec::new(),
            Some(config) => (0..n_layer)
                .map(|i| {
                    config
                        .after(i)
                        .then(|| Dwa::identity(&path / i, i, config.dilation))
                        .transpose()
                })
                .collect::<Result<_>>()?,
        };
        let mut reads = vec![false; n_layer + 1];
        for d in dwas.iter().flatten() {
            for j in d.selection.indices() {
                reads[j] = true;
            }
        }
        Ok(Self {
            n_layer,
            dwas,
            reads,
        })
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// The DWA after each layer (empty without DWA).
    pub fn dwas(&self) -> &[Option<Dwa>] {
        &self.dwas
    }

    /// Runs the layers on `x`: `layer(i, input)` returns layer `i`'s output, and after it the
    /// DWA (if any) replaces the stream by its average. While autograd records (outside
    /// `tch::no_grad`), the stored outputs are differentiable whether or not `x` requires a
    /// gradient (a frozen embedding still trains the layers).
    pub fn forward(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.dwas.is_empty() {
            return (0..self.n_layer).try_fold(x, |x, i| layer(i, &x));
        }
        let track_grad = strata_kernels::grad_mode_enabled();
        let mut stack = LayerStack::reading(&x, &self.reads, track_grad)?;
        let mut x = x;
        for (i, dwa) in self.dwas.iter().enumerate() {
            let out = layer(i, &x)?;
            stack.push(&out)?;
            x = match dwa {
                Some(dwa) => dwa.forward(&stack)?,
                None => out,
            };
        }
        Ok(x)
    }

    /// The DWA weights as a dense matrix (see [`dwa::weight_matrix`]).
    pub fn weight_matrix(&self) -> Result<Vec<Vec<Option<f64>>>> {
        dwa::weight_matrix(&self.dwas, self.n_layer)
    }
}
