//! [`DepthStack`]: the depth methods around a sequence of layers, usable in any tch model.
//!
//! A depth stack runs `n_layer` layers that the caller supplies (a closure gets the layer
//! index and its input and returns the layer's output) and does everything between them:
//! it stores the outputs a DWA will read (in `strata_kernels::LayerStack`, one buffer with
//! its own autograd), owns the DWA weights (`<path>.<layer>.alpha`, identity at init) and
//! replaces the stream by each DWA's average. Without DWA it is a plain loop. It also owns the
//! other depth methods of `[model.depth]` (see [`DepthStack::with_methods`]): the value
//! residual ([`crate::value_residual`], handed to each layer as a [`ValueMix`]) and LAuReL
//! ([`crate::laurel`], applied to each layer's output before a DWA stores it),
//! hyper-connections ([`crate::hyper`], n streams around the layers) and attention residuals
//! ([`crate::attn_res`], run by [`DepthStack::forward_sublayers`]) and MUDD ([`crate::mudd`],
//! run by [`DepthStack::forward_multiway`]). `Gpt` runs its
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

use crate::attn_res::{AttnRes, BlockSum, DepthValues};
use crate::config::{DepthConfig, DwaConfig};
use crate::dwa::{self, Dwa};
use crate::hyper::{self, HyperConnection};
use crate::laurel::Laurel;
use crate::mudd::{LayerInput, Mudd};
use crate::value_residual::{self, ValueMix};
use strata_kernels::{Implementation, LayerStack};
use strata_tensor::{Error, Result};
use tch::{Tensor, nn};

/// The layers' orchestration: stored outputs, DWA weights, the `[model.depth]` methods' weights
/// and their order.
#[derive(Debug)]
pub struct DepthStack {
    n_layer: usize,
    /// The DWA after each layer (empty without DWA; `None` where the period skips a layer).
    dwas: Vec<Option<Dwa>>,
    /// Which stack entries some DWA reads (the others are never stored).
    reads: Vec<bool>,
    /// The value residual's `(λ₁, λ₂)` of each layer (`None` for the first); empty when off.
    value_residual: Vec<Option<Tensor>>,
    /// LAuReL of each layer; empty when off.
    laurel: Vec<Laurel>,
    /// The hyper-connection around each layer; empty when off.
    hyper: Vec<HyperConnection>,
    /// The attention residuals' queries, when on.
    attn_res: Option<AttnRes>,
    /// The MUDD connection after each layer; empty when off.
    mudd: Vec<Mudd>,
    /// How the DWAs' weighted sums run (`Auto`: chosen per call for the inputs).
    kernel: Implementation,
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
            value_residual: Vec::new(),
            laurel: Vec::new(),
            hyper: Vec::new(),
            attn_res: None,
            mudd: Vec::new(),
            kernel: Implementation::Auto,
        })
    }

    /// How the DWAs' weighted sums run.
    pub fn kernel(&self) -> Implementation {
        self.kernel
    }

    /// Runs the DWAs' weighted sums with `kernel` from now on (`Auto` by default; another to
    /// compare paths or to benchmark one).
    pub fn set_kernel(&mut self, kernel: Implementation) {
        self.kernel = kernel;
    }

    /// A stack of `n_layer` layers of width `d_model` with DWA (`root.dwa.<i>.alpha`, as in
    /// [`DepthStack::new`]) and the methods of `depth`: value residual weights
    /// `root.vres.<i>.lambda` for layers 1.., LAuReL weights `root.laurel.<i>.*` and
    /// hyper-connection weights `root.hyper.<i>.*`, attention residuals' queries
    /// `root.attnres.<k>.query` and MUDD weights `root.mudd.<i>.*`.
    /// `anchor`, a tensor drawn from the seeded generator before, keys LAuReL-LR's and MUDD's
    /// own draws
    /// (no other tensor's draw moves). Checks `depth` first (errors name `model.depth.*`).
    pub fn with_methods(
        root: &nn::Path,
        n_layer: usize,
        d_model: usize,
        dwa: Option<DwaConfig>,
        depth: &DepthConfig,
        anchor: &Tensor,
    ) -> Result<Self> {
        depth.validate("depth stack", n_layer, d_model, dwa.is_some())?;
        let mut stack = Self::new(root / "dwa", n_layer, dwa)?;
        if depth.value_residual {
            let path = root / "vres";
            stack.value_residual = (0..n_layer)
                .map(|i| {
                    (i > 0)
                        .then(|| value_residual::lambda(&path, i))
                        .transpose()
                })
                .collect::<Result<_>>()?;
        }
        if let Some(laurel) = depth.laurel {
            stack.laurel = (0..n_layer)
                .map(|i| Laurel::new(root / "laurel" / i, laurel, d_model, anchor))
                .collect::<Result<_>>()?;
        }
        if let Some(config) = depth.hyper {
            stack.hyper = (0..n_layer)
                .map(|i| HyperConnection::new(root / "hyper" / i, i, config, d_model))
                .collect::<Result<_>>()?;
        }
        if depth.attn_res {
            stack.attn_res = Some(AttnRes::new(
                &(root / "attnres"),
                n_layer,
                d_model,
                depth.attn_res_block_sublayers(),
            )?);
        }
        if depth.mudd {
            stack.mudd = (0..n_layer)
                .map(|i| Mudd::new(root / "mudd" / i, i, n_layer, d_model, anchor))
                .collect::<Result<_>>()?;
        }
        Ok(stack)
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// The DWA after each layer (empty without DWA).
    pub fn dwas(&self) -> &[Option<Dwa>] {
        &self.dwas
    }

    /// The value residual's `(λ₁, λ₂)` of each layer (`None` for the first; empty when off).
    pub fn value_residual(&self) -> &[Option<Tensor>] {
        &self.value_residual
    }

    /// LAuReL of each layer (empty when off).
    pub fn laurel(&self) -> &[Laurel] {
        &self.laurel
    }

    /// The hyper-connection around each layer (empty when off).
    pub fn hyper(&self) -> &[HyperConnection] {
        &self.hyper
    }

    /// Layer `i`'s view of the value residual (`first` keeps layer 0's values); the
    /// identity when the stack has none.
    fn value_mix<'a>(&'a self, i: usize, first: &'a mut Option<Tensor>) -> ValueMix<'a> {
        if self.value_residual.is_empty() {
            ValueMix::off()
        } else {
            let lambda = self.value_residual.get(i).and_then(Option::as_ref);
            ValueMix::on(lambda, first)
        }
    }

    /// The attention residuals' queries, when on.
    pub fn attn_res(&self) -> Option<&AttnRes> {
        self.attn_res.as_ref()
    }

    /// The MUDD connection after each layer (empty when off).
    pub fn mudd(&self) -> &[Mudd] {
        &self.mudd
    }

    /// Runs the layers with MUDD connections ([`crate::mudd`]): `layer(i, input, values)`
    /// returns layer `i`'s output from its input, one stream for the first layer and MUDD's
    /// query, key, value and residual ways for the others; the value residual, if on, reaches
    /// the attention through `values`. Returns the last connection's single way.
    pub fn forward_multiway(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &LayerInput, &mut ValueMix) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.mudd.is_empty() {
            return Err(Error::Invalid(
                "depth stack: forward_multiway needs MUDD connections (model.depth.mudd)"
                    .to_owned(),
            ));
        }
        let track_grad = strata_kernels::grad_mode_enabled();
        let mut stack = LayerStack::per_token(&x, self.n_layer + 1, track_grad)?;
        let mut input = LayerInput::One(x);
        let mut first_values = None;
        for (i, mudd) in self.mudd.iter().enumerate() {
            let mut values = self.value_mix(i, &mut first_values);
            let out = layer(i, &input, &mut values)?;
            stack.push(&out)?;
            let mixes = stack.token_weighted_sum(&mudd.weights(&out)?)?;
            input = LayerInput::from_mixes(&mixes)?;
        }
        match input {
            LayerInput::One(x) => Ok(x),
            LayerInput::Ways { .. } => Err(Error::Invalid(
                "depth stack: the last MUDD connection made several ways".to_owned(),
            )),
        }
    }

    /// Runs the layers as attention residuals ([`crate::attn_res`]): `attention(i, input,
    /// values)` and `mlp(i, input)` return block `i`'s attention and MLP branches without the
    /// residual add, and every sublayer (and the final output) reads a softmax over depth of
    /// the embedding `x` and the branches so far. The value residual, if on, reaches the
    /// attention branches through `values`.
    pub fn forward_sublayers(
        &self,
        x: Tensor,
        mut attention: impl FnMut(usize, &Tensor, &mut ValueMix) -> Result<Tensor>,
        mut mlp: impl FnMut(usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let Some(attn_res) = &self.attn_res else {
            return Err(Error::Invalid(
                "depth stack: forward_sublayers needs attention residuals (model.depth.attn_res)"
                    .to_owned(),
            ));
        };
        let width = attn_res.width();
        let mut seen = DepthValues::default();
        seen.push(x, width)?;
        let mut block = BlockSum::new(attn_res.block_sublayers());
        let mut first_values = None;
        for i in 0..self.n_layer {
            let mut values = self.value_mix(i, &mut first_values);
            let input = attn_res.read(2 * i, &seen, block.partial())?;
            block.add(attention(i, &input, &mut values)?, &mut seen, width)?;
            let input = attn_res.read(2 * i + 1, &seen, block.partial())?;
            block.add(mlp(i, &input)?, &mut seen, width)?;
        }
        attn_res.read(2 * self.n_layer, &seen, block.partial())
    }

    /// Runs the layers on `x`: `layer(i, input)` returns layer `i`'s output, and after it the
    /// DWA (if any) replaces the stream by its average. While autograd records (outside
    /// `tch::no_grad`), the stored outputs are differentiable whether or not `x` requires a
    /// gradient (a frozen embedding still trains the layers). A stack with a value residual
    /// needs [`DepthStack::forward_mixing`].
    pub fn forward(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if !self.value_residual.is_empty() {
            return Err(Error::Invalid(
                "depth stack: a value residual needs layers that take its ValueMix \
                 (DepthStack::forward_mixing)"
                    .to_owned(),
            ));
        }
        self.forward_mixing(x, |i, x, _| layer(i, x))
    }

    /// [`DepthStack::forward`] for layers with attention: `layer(i, input, values)` hands
    /// its attention values to `values` ([`ValueMix::apply`]) and uses what comes back (the
    /// value residual's mix; the values themselves when the stack has none). LAuReL, if on,
    /// then augments the layer's output.
    pub fn forward_mixing(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &Tensor, &mut ValueMix) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.attn_res.is_some() {
            return Err(Error::Invalid(
                "depth stack: attention residuals run attention and MLP branches separately \
                 (DepthStack::forward_sublayers)"
                    .to_owned(),
            ));
        }
        if !self.mudd.is_empty() {
            return Err(Error::Invalid(
                "depth stack: MUDD hands each layer separate query, key, value and residual \
                 inputs (DepthStack::forward_multiway)"
                    .to_owned(),
            ));
        }
        let mut first_values = None;
        let mut run = |i: usize, x: &Tensor| -> Result<Tensor> {
            let mut values = self.value_mix(i, &mut first_values);
            let out = layer(i, x, &mut values)?;
            match self.laurel.get(i) {
                Some(laurel) => laurel.forward(x, &out),
                None => Ok(out),
            }
        };
        if let Some(hc) = self.hyper.first() {
            let streams = hyper::expand(&x, hc.streams())?;
            let streams = self
                .hyper
                .iter()
                .enumerate()
                .try_fold(streams, |h, (i, hc)| hc.forward(&h, |input| run(i, input)))?;
            return hyper::collapse(&streams);
        }
        if self.dwas.is_empty() {
            return (0..self.n_layer).try_fold(x, |x, i| run(i, &x));
        }
        let track_grad = strata_kernels::grad_mode_enabled();
        let mut stack = LayerStack::reading(&x, &self.reads, track_grad, self.kernel)?;
        let mut x = x;
        for (i, dwa) in self.dwas.iter().enumerate() {
            let out = run(i, &x)?;
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
