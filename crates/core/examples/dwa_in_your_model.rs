//! DenseFormer's DWA in a model that is not a strata model.
//!
//! `TinyModel` is an ordinary tch model: an embedding, a few residual MLP layers and a
//! head. Adding DWA takes one [`DepthStack`] built next to the layers and one call that runs
//! them; the training loop is tch's own (`nn::AdamW`), nothing from strata-train.
//!
//! Run it with `cargo run -p strata-core --example dwa_in_your_model`.

use strata_core::{DepthStack, DwaConfig};
use strata_tensor::Result;
use tch::{Device, Kind, Tensor, nn, nn::Module, nn::OptimizerConfig};

/// Vocabulary of the toy task.
pub const VOCAB: i64 = 16;
/// Width of the residual stream.
pub const WIDTH: i64 = 32;
/// Number of residual layers.
pub const LAYERS: usize = 4;

/// An embedding, `LAYERS` residual MLP layers run through a depth stack, and a head.
pub struct TinyModel {
    embedding: nn::Embedding,
    layers: Vec<(nn::LayerNorm, nn::Linear, nn::Linear)>,
    /// The layers' orchestration, with the DWA weights.
    pub depth: DepthStack,
    head: nn::Linear,
}

impl TinyModel {
    /// The model under `path`; `dwa = None` is the same model without DWA (the depth stack
    /// is then a plain loop).
    pub fn new(path: &nn::Path, dwa: Option<DwaConfig>) -> Result<Self> {
        let embedding = nn::embedding(path / "embedding", VOCAB, WIDTH, Default::default());
        let layers = (0..LAYERS)
            .map(|i| {
                let p = path / "layer" / i;
                (
                    nn::layer_norm(&p / "norm", vec![WIDTH], Default::default()),
                    nn::linear(&p / "up", WIDTH, 4 * WIDTH, Default::default()),
                    nn::linear(&p / "down", 4 * WIDTH, WIDTH, Default::default()),
                )
            })
            .collect();
        // The only line DWA adds to the constructor (weights `dwa.<layer>.alpha`).
        let depth = DepthStack::new(path / "dwa", LAYERS, dwa)?;
        let head = nn::linear(path / "head", WIDTH, VOCAB, Default::default());
        Ok(Self {
            embedding,
            layers,
            depth,
            head,
        })
    }

    /// Logits `[batch, VOCAB]` for token ids `[batch]`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let x = self.embedding.forward(tokens);
        // The layers run inside the depth stack, which applies the DWAs between them.
        let x = self.depth.forward(x, |i, x| {
            let (norm, up, down) = &self.layers[i];
            Ok(x + x.apply(norm).apply(up).gelu("none").apply(down))
        })?;
        Ok(x.apply(&self.head))
    }

    /// Cross-entropy on the toy task: predict `(3 · token + 1) mod VOCAB`.
    pub fn loss(&self, tokens: &Tensor) -> Result<Tensor> {
        let targets = (tokens * 3 + 1).remainder(VOCAB);
        Ok(self.forward(tokens)?.cross_entropy_for_logits(&targets))
    }
}

/// Trains a DWA `TinyModel` for `steps` AdamW steps at learning rate `lr` on random batches;
/// returns the loss before each step.
pub fn train(vs: &nn::VarStore, model: &TinyModel, steps: usize, lr: f64) -> Result<Vec<f64>> {
    let mut optimizer = nn::AdamW::default().build(vs, lr)?;
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let tokens = Tensor::randint(VOCAB, [64], (Kind::Int64, Device::Cpu));
        let loss = model.loss(&tokens)?;
        optimizer.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    Ok(losses)
}

fn main() -> Result<()> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let dwa = DwaConfig {
        dilation: 1,
        period: 1,
    };
    let model = TinyModel::new(&vs.root(), Some(dwa))?;
    let losses = train(&vs, &model, 50, 1e-2)?;
    println!(
        "loss {:.3} -> {:.3} in {} steps",
        losses[0],
        losses[losses.len() - 1],
        losses.len()
    );
    for (i, row) in model.depth.weight_matrix()?.iter().enumerate() {
        let weights: Vec<String> = row.iter().flatten().map(|w| format!("{w:+.2}")).collect();
        println!("DWA after layer {i}: {}", weights.join(" "));
    }
    Ok(())
}
