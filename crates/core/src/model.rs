//! [`Gpt`]: the decoder-only transformer, baseline or DenseFormer.

use crate::block::Block;
use crate::config::{ModelConfig, PositionKind};
use crate::depth::DepthStack;
use crate::kv_cache::{KvCache, LayerKv};
use crate::layers::{LayerCall, Linear, Norm, Rotary};
use crate::schema::{self, BlockLayer, Location, ParamSpec, Slot};
use strata_tensor::{Error, Result, TensorExt};
use tch::{Device, Kind, Reduction, Tensor, nn};

/// Parameter counts of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamCount {
    /// Every parameter, a tied embedding counted once.
    pub total: usize,
    /// Without the token and position embeddings (Kaplan et al.'s N).
    pub non_embedding: usize,
}

impl ParamCount {
    /// The counts of a model with `config`, from its [`schema`](crate::schema) (no model
    /// is built).
    pub fn of(config: &ModelConfig) -> Self {
        let specs = schema::schema(config);
        let total: usize = specs.iter().map(ParamSpec::numel).sum();
        let embedding: usize = specs
            .iter()
            .filter(|s| s.role.is_embedding())
            .map(ParamSpec::numel)
            .sum();
        ParamCount {
            total,
            non_embedding: total - embedding,
        }
    }
}

/// A decoder-only transformer: embeddings, pre-norm blocks with optional DWA, final norm
/// and output head. Parameter names follow GPT-2 (`wte.weight`, `h.3.attn.c_attn.weight`,
/// `dwa.3.alpha`, ...).
#[derive(Debug)]
pub struct Gpt {
    config: ModelConfig,
    device: Device,
    /// Token embedding `[vocab, D]`.
    pub wte: Tensor,
    /// Learned position embedding `[block_size, D]`.
    pub wpe: Option<Tensor>,
    /// The distinct blocks (weight sets), `h.0`, `h.1`, ...
    pub blocks: Vec<Block>,
    /// The block each layer runs ([`ModelConfig::block_plan`]).
    pub plan: Vec<usize>,
    /// The layers' orchestration: stored outputs and the DWA after each layer.
    pub depth: DepthStack,
    /// Final norm.
    pub ln_f: Norm,
    /// Output head when embeddings are not tied.
    pub lm_head: Option<Linear>,
    rotary: Option<Rotary>,
    /// The model's own random generator for dropout ([`Gpt::with_generator`]).
    generator: Option<strata_kernels::Generator>,
}

impl Gpt {
    /// Creates a freshly initialised model under `path` after validating `config`.
    pub fn new(path: &nn::Path, config: &ModelConfig) -> Result<Self> {
        config.validate("model config")?;
        let (v, d) = (config.vocab_size as i64, config.d_model as i64);
        let std = crate::layers::normal(0.02);
        let wte = (path / "wte").f_var("weight", &[v, d], std)?;
        let wpe = (config.positions == PositionKind::Learned)
            .then(|| (path / "wpe").f_var("weight", &[config.block_size as i64, d], std))
            .transpose()?;
        let plan = config.block_plan();
        let blocks = (0..config.n_blocks())
            .map(|i| Block::new(path / "h" / i, config))
            .collect::<Result<_>>()?;
        let depth = DepthStack::with_methods(
            path,
            config.n_layer,
            config.d_model,
            config.dwa,
            &config.depth,
            &wte,
        )?;
        let ln_f = Norm::new(
            path / "ln_f",
            config.norm,
            config.d_model,
            config.bias,
            config.norm_eps(),
        )?;
        let lm_head = (!config.tied_embeddings)
            .then(|| {
                Linear::new(
                    path / "lm_head",
                    config.d_model,
                    config.vocab_size,
                    false,
                    0.02,
                    config.lora_for(crate::config::LoraTarget::Head),
                )
            })
            .transpose()?;
        if let (true, Some(head)) = (config.zero_init_head, &lm_head) {
            crate::layers::fill(&head.weight, 0.0)?;
        }
        let rotary = (config.positions == PositionKind::Rotary)
            .then(|| Rotary::new(config.block_size, config.head_dim(), path.device()))
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            device: path.device(),
            wte,
            wpe,
            blocks,
            plan,
            depth,
            ln_f,
            lm_head,
            rotary,
            generator: None,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model with its DWAs' weighted sums run by `kernel` (`Auto` unless comparing
    /// paths; see [`DepthStack::set_kernel`]).
    pub fn with_kernel(mut self, kernel: strata_kernels::Implementation) -> Self {
        self.depth.set_kernel(kernel);
        self
    }

    /// The model with its own random generator: dropout on CPU tensors draws from it, not
    /// from libtorch's process-wide default generator, so models in several threads draw at
    /// once and reproducibly ([`Gpt::generator`] reseeds it).
    pub fn with_generator(mut self, generator: strata_kernels::Generator) -> Self {
        self.generator = Some(generator);
        self
    }

    /// The model's own random generator, if it has one.
    pub fn generator(&self) -> Option<&strata_kernels::Generator> {
        self.generator.as_ref()
    }

    /// The generator the model's dropout draws from: its own where that draws the model's
    /// tensors (the CPU); `None` means libtorch's default generator of the device.
    pub fn dropout_generator(&self) -> Option<&strata_kernels::Generator> {
        self.generator
            .as_ref()
            .filter(|_| strata_kernels::Generator::draws_on(self.device))
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (T <= block_size).
    pub fn forward(&self, idx: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(idx, train, None)
    }

    /// An empty KV cache for this model (batch of any size, up to `block_size` tokens).
    pub fn kv_cache(&self) -> KvCache {
        KvCache::new(self.plan.len(), self.config.block_size)
    }

    /// Logits `[B, T, vocab]` (evaluation mode) for the token ids `[B, T]` that follow the
    /// tokens already in `cache`, which then holds them too. Equal, to float rounding, to
    /// the last `T` positions of [`Gpt::forward`] over the whole sequence.
    pub fn forward_cached(&self, idx: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let t = idx.size().get(1).copied().unwrap_or(0);
        cache.check_room(t)?;
        let logits = self.forward_with(idx, false, Some(&mut *cache))?;
        cache.advance(t);
        Ok(logits)
    }

    /// The forward pass, over the tokens after `cache`'s when one is given.
    fn forward_with(
        &self,
        idx: &Tensor,
        train: bool,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        idx.expect_shape("model input (token ids [batch, time])", &[None, None])?;
        let t = idx.size()[1];
        let past = cache.as_ref().map_or(0, |c| c.len());
        if t == 0 || past + t > self.config.block_size as i64 {
            return Err(Error::Shape {
                op: "model input".to_owned(),
                expected: format!("1..={} tokens (block_size)", self.config.block_size),
                got: format!("{} tokens", past + t),
            });
        }
        let _autocast = match self.config.precision.autocast() {
            true => Some(strata_kernels::autocast::Autocast::bf16(self.device)?),
            false => None,
        };
        let mut x = Tensor::f_embedding(&self.wte, idx, -1, false, false)?;
        if let Some(wpe) = &self.wpe {
            let positions = Tensor::f_arange_start(past, past + t, (Kind::Int64, self.device))?;
            x = x.f_add(&Tensor::f_embedding(wpe, &positions, -1, false, false)?)?;
        }
        let call = LayerCall {
            config: &self.config,
            rotary: self.rotary.as_ref(),
            train,
            generator: self.dropout_generator().filter(|_| train),
        };
        let x = call.dropout(x, self.config.dropout)?;
        let x = if self.depth.attn_res().is_some() {
            self.depth.forward_sublayers(
                x,
                |i, x, values| {
                    let kv = layer_cache(&mut cache, i)?;
                    self.blocks[self.plan[i]].attention_branch(x, call, values, kv)
                },
                |i, x| self.blocks[self.plan[i]].mlp_branch(x, call),
            )?
        } else if !self.depth.mudd().is_empty() {
            self.depth.forward_multiway(x, |i, input, values| {
                let kv = layer_cache(&mut cache, i)?;
                self.blocks[self.plan[i]].forward_input(input, call, values, kv)
            })?
        } else {
            self.depth.forward_mixing(x, |i, x, values| {
                let kv = layer_cache(&mut cache, i)?;
                self.blocks[self.plan[i]].forward(x, call, values, kv)
            })?
        };
        let x = self.ln_f.forward(&x)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&x, self.config.precision)?,
            None => self
                .config
                .precision
                .cast(&x)?
                .f_linear::<Tensor>(&self.config.precision.cast(&self.wte)?, None)?
                .f_to_kind(Kind::Float)?,
        };
        // Under autocast the head's product is bf16; the logits (and the loss) are f32.
        let logits = logits.f_to_kind(Kind::Float)?;
        match self.config.logit_softcap {
            Some(cap) => Ok(logits.f_div_scalar(cap)?.f_tanh()?.f_mul_scalar(cap)?),
            None => Ok(logits),
        }
    }

    /// Mean cross-entropy of next-token prediction; `targets` has the shape of `idx`.
    pub fn loss(&self, idx: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.forward(idx, train)?;
        let vocab = self.config.vocab_size as i64;
        Ok(logits.f_view([-1, vocab])?.f_cross_entropy_loss::<Tensor>(
            &targets.f_reshape([-1])?,
            None,
            Reduction::Mean,
            -100,
            0.0,
        )?)
    }

    /// Every parameter tensor of the model, each once, in [`schema`](crate::schema) order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Every parameter tensor with its [`ParamSpec`] (name, shape, role), in schema order;
    /// an optimizer can group them by [`schema::Role`].
    pub fn named_parameters(&self) -> Vec<(ParamSpec, &Tensor)> {
        schema::schema(&self.config)
            .into_iter()
            .filter_map(|spec| {
                let tensor = self.tensor(spec.location, spec.slot)?;
                Some((spec, tensor))
            })
            .collect()
    }

    /// The tensor at `location` and `slot`, if the model has it.
    pub fn tensor(&self, location: Location, slot: Slot) -> Option<&Tensor> {
        match location {
            Location::TokenEmbedding => (slot == Slot::Weight).then_some(&self.wte),
            Location::PositionEmbedding => self.wpe.as_ref().filter(|_| slot == Slot::Weight),
            Location::Block { block, layer } => {
                let b = self.blocks.get(block)?;
                match layer {
                    BlockLayer::Ln1 => norm_tensor(&b.ln_1, slot),
                    BlockLayer::AttnQkv => linear_tensor(&b.attn.c_attn, slot),
                    BlockLayer::AttnOut => linear_tensor(&b.attn.c_proj, slot),
                    BlockLayer::Ln2 => norm_tensor(&b.ln_2, slot),
                    BlockLayer::MlpIn => linear_tensor(&b.mlp.c_fc, slot),
                    BlockLayer::MlpUp => b.mlp.w_up.as_ref().and_then(|l| linear_tensor(l, slot)),
                    BlockLayer::MlpOut => linear_tensor(&b.mlp.c_proj, slot),
                }
            }
            Location::Dwa { after } => match (self.depth.dwas().get(after), slot) {
                (Some(Some(dwa)), Slot::Alpha) => Some(&dwa.alpha),
                _ => None,
            },
            Location::ValueResidual { layer } => {
                match (self.depth.value_residual().get(layer), slot) {
                    (Some(Some(lambda)), Slot::Lambda) => Some(lambda),
                    _ => None,
                }
            }
            Location::Laurel { layer } => match (self.depth.laurel().get(layer)?, slot) {
                (crate::laurel::Laurel::Rw { alpha }, Slot::Alpha) => Some(alpha),
                (crate::laurel::Laurel::Lr { down, .. }, Slot::Down) => Some(down),
                (crate::laurel::Laurel::Lr { up, .. }, Slot::Up) => Some(up),
                _ => None,
            },
            Location::Hyper { layer } => {
                let hc = self.depth.hyper().get(layer)?;
                let dynamic = hc.dynamic.as_ref();
                match slot {
                    Slot::Read => Some(&hc.read),
                    Slot::Mix => Some(&hc.mix),
                    Slot::Write => Some(&hc.write),
                    Slot::DynAlpha => dynamic.map(|d| &d.alpha),
                    Slot::DynBeta => dynamic.map(|d| &d.beta),
                    Slot::Scales => dynamic.map(|d| &d.scales),
                    _ => None,
                }
            }
            Location::AttnRes { query } => match (self.depth.attn_res(), slot) {
                (Some(a), Slot::Query) => a.query(query),
                _ => None,
            },
            Location::Mudd { layer } => {
                let mudd = self.depth.mudd().get(layer)?;
                match slot {
                    Slot::Static => Some(&mudd.static_weights),
                    Slot::Down => Some(&mudd.down),
                    Slot::Up => Some(&mudd.up),
                    _ => None,
                }
            }
            Location::FinalNorm => norm_tensor(&self.ln_f, slot),
            Location::Head => self.lm_head.as_ref().and_then(|l| linear_tensor(l, slot)),
        }
    }

    /// Parameter counts.
    pub fn param_count(&self) -> ParamCount {
        ParamCount::of(&self.config)
    }

    /// The learned DWA weights (rows: DWA after block i; columns: stack index j).
    pub fn dwa_weight_matrix(&self) -> Result<Vec<Vec<Option<f64>>>> {
        self.depth.weight_matrix()
    }
}

/// Layer application `i`'s entry of the KV cache, when there is a cache.
fn layer_cache<'a>(
    cache: &'a mut Option<&mut KvCache>,
    i: usize,
) -> Result<Option<&'a mut LayerKv>> {
    match cache.as_deref_mut() {
        Some(cache) => Ok(Some(cache.layer(i)?)),
        None => Ok(None),
    }
}

/// A linear layer's tensor in `slot`.
fn linear_tensor(l: &Linear, slot: Slot) -> Option<&Tensor> {
    match slot {
        Slot::Weight => Some(&l.weight),
        Slot::Bias => l.bias.as_ref(),
        Slot::LoraA => l.lora.as_ref().map(|a| &a.a),
        Slot::LoraB => l.lora.as_ref().map(|a| &a.b),
        _ => None,
    }
}

/// A norm's tensor in `slot`.
fn norm_tensor(n: &Norm, slot: Slot) -> Option<&Tensor> {
    match slot {
        Slot::Weight => Some(&n.weight),
        Slot::Bias => n.bias.as_ref(),
        _ => None,
    }
}

impl nn::ModuleT for Gpt {
    /// Logits for token ids; panics on invalid input (use [`Gpt::forward`] for a `Result`).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self.forward(xs, train) {
            Ok(logits) => logits,
            Err(err) => panic!("Gpt::forward_t: {err}"),
        }
    }
}
