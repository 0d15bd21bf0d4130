//! [`Gpt`]: the decoder-only transformer, baseline or DenseFormer.

use crate::block::Block;
use crate::config::{ModelConfig, PositionKind};
use crate::dwa::{self, Dwa};
use crate::layers::{Linear, Norm, Rotary};
use strata_kernels::LayerStack;
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
    /// The DWA after each block (empty for the baseline).
    pub dwa: Vec<Option<Dwa>>,
    /// Which layer-stack entries some DWA reads (the others are never stored).
    stack_reads: Vec<bool>,
    /// Final norm.
    pub ln_f: Norm,
    /// Output head when embeddings are not tied.
    pub lm_head: Option<Linear>,
    rotary: Option<Rotary>,
}

impl Gpt {
    /// Creates a freshly initialised model under `path` after validating `config`.
    pub fn new(path: &nn::Path, config: &ModelConfig) -> Result<Self> {
        config.validate("model config")?;
        let (v, d) = (config.vocab_size as i64, config.d_model as i64);
        let std = crate::layers::normal(0.02);
        let wte = (path / "wte").var("weight", &[v, d], std);
        let wpe = (config.positions == PositionKind::Learned)
            .then(|| (path / "wpe").var("weight", &[config.block_size as i64, d], std));
        let plan = config.block_plan();
        let blocks = (0..config.n_blocks())
            .map(|i| Block::new(path / "h" / i, config))
            .collect();
        let dwa = dwa::build(path / "dwa", config)?;
        let mut stack_reads = vec![false; config.n_layer + 1];
        for d in dwa.iter().flatten() {
            for j in d.selection.indices() {
                stack_reads[j] = true;
            }
        }
        let ln_f = Norm::new(
            path / "ln_f",
            config.norm,
            config.d_model,
            config.bias,
            config.norm_eps(),
        );
        let lm_head = (!config.tied_embeddings).then(|| {
            Linear::new(
                path / "lm_head",
                config.d_model,
                config.vocab_size,
                false,
                0.02,
                config.lora_for(crate::config::LoraTarget::Head),
            )
        });
        let rotary = (config.positions == PositionKind::Rotary)
            .then(|| Rotary::new(config.block_size, config.head_dim(), path.device()));
        Ok(Self {
            config: config.clone(),
            device: path.device(),
            wte,
            wpe,
            blocks,
            plan,
            dwa,
            stack_reads,
            ln_f,
            lm_head,
            rotary,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (T <= block_size).
    pub fn forward(&self, idx: &Tensor, train: bool) -> Result<Tensor> {
        idx.expect_shape("model input (token ids [batch, time])", &[None, None])?;
        let t = idx.size()[1];
        if t == 0 || t > self.config.block_size as i64 {
            return Err(Error::Shape {
                op: "model input".to_owned(),
                expected: format!("1..={} tokens (block_size)", self.config.block_size),
                got: format!("{t} tokens"),
            });
        }
        let mut x = Tensor::f_embedding(&self.wte, idx, -1, false, false)?;
        if let Some(wpe) = &self.wpe {
            let positions = Tensor::f_arange(t, (Kind::Int64, self.device))?;
            x = x.f_add(&Tensor::f_embedding(wpe, &positions, -1, false, false)?)?;
        }
        x = x.f_dropout(self.config.dropout, train)?;
        let mut stack = if self.dwa.is_empty() {
            None
        } else {
            Some(LayerStack::reading(
                &x,
                &self.stack_reads,
                x.requires_grad(),
            )?)
        };
        for (i, &b) in self.plan.iter().enumerate() {
            let out = self.blocks[b].forward(&x, &self.config, self.rotary.as_ref(), train)?;
            x = match stack.as_mut() {
                Some(stack) => {
                    stack.push(&out)?;
                    match &self.dwa[i] {
                        Some(dwa) => dwa.forward(stack)?,
                        None => out,
                    }
                }
                None => out,
            };
        }
        let x = self.ln_f.forward(&x)?;
        match &self.lm_head {
            Some(head) => head.forward(&x, self.config.precision),
            None => Ok(self
                .config
                .precision
                .cast(&x)
                .f_linear::<Tensor>(&self.config.precision.cast(&self.wte), None)?
                .f_to_kind(Kind::Float)?),
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

    /// Every parameter tensor of the model, each once.
    pub fn parameters(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.wte];
        out.extend(&self.wpe);
        for b in &self.blocks {
            for lin in [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj]
                .into_iter()
                .chain(&b.mlp.w_up)
            {
                out.extend(lin.parameters());
            }
            for norm in [&b.ln_1, &b.ln_2] {
                out.push(&norm.weight);
                out.extend(&norm.bias);
            }
        }
        out.extend(self.dwa.iter().flatten().map(|d| &d.alpha));
        out.push(&self.ln_f.weight);
        out.extend(&self.ln_f.bias);
        if let Some(head) = &self.lm_head {
            out.extend(head.parameters());
        }
        out
    }

    /// Parameter counts.
    pub fn param_count(&self) -> ParamCount {
        let total: usize = self.parameters().iter().map(|t| t.numel()).sum();
        let embedding = self.wte.numel() + self.wpe.as_ref().map_or(0, |t| t.numel());
        ParamCount {
            total,
            non_embedding: total - embedding,
        }
    }

    /// The learned DWA weights (rows: DWA after block i; columns: stack index j).
    pub fn dwa_weight_matrix(&self) -> Result<Vec<Vec<Option<f64>>>> {
        dwa::weight_matrix(&self.dwa, self.config.n_layer)
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
