//! Shared fixtures of strata's criterion benchmarks (`cargo xtask bench`).

use strata_core::{Gpt, ModelConfig};
use strata_kernels::{Implementation, LayerStack, Selection, weighted_sum, weighted_sum_into};
use strata_tensor::seeded;
use strata_train::optim::{AdamW, AdamWConfig};
use tch::{Device, Kind, Tensor, nn};

/// Stacked layers of the weighted-sum benchmark (12 blocks and the embeddings).
pub const WEIGHTED_SUM_LAYERS: i64 = 13;
/// Shape of one layer of the weighted-sum benchmark: batch 12 x 256 tokens x width 768.
pub const WEIGHTED_SUM_LAYER_SHAPE: [i64; 3] = [12, 256, 768];

/// The model of `configs/nanogpt-cpu.toml` (65-character vocabulary), optionally with a DWA
/// after every block.
pub fn nanogpt_cpu_model(denseformer: bool) -> ModelConfig {
    let dwa = if denseformer {
        "\n[dwa]\ndilation = 1\nperiod = 1\n"
    } else {
        ""
    };
    let text =
        format!("vocab_size = 65\nn_layer = 4\nn_head = 4\nd_model = 128\nblock_size = 64\n{dwa}");
    toml::from_str(&text).expect("the benchmark model config parses")
}

/// AdamW over every variable of `vs` with the recipe's hyperparameters (β2 as given).
pub fn adamw(vs: &nn::VarStore, beta2: f64) -> AdamW {
    AdamW::new(
        vs.variables().into_iter().collect(),
        AdamWConfig {
            beta1: 0.9,
            beta2,
            eps: 1e-8,
            weight_decay: 0.1,
        },
    )
    .expect("AdamW's buffers are allocated")
}

/// A seeded model on the CPU and its variable store.
pub fn build(config: &ModelConfig) -> (nn::VarStore, Gpt) {
    build_on(config, Device::Cpu)
}

/// A seeded model on `device` and its variable store.
pub fn build_on(config: &ModelConfig, device: Device) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(device);
    let model = seeded(1, || Gpt::new(&vs.root(), config)).expect("valid benchmark config");
    (vs, model)
}

/// A batch of random token ids and targets `[batch, block]`.
pub fn batch(config: &ModelConfig, batch: i64) -> (Tensor, Tensor) {
    let shape = [batch, config.block_size as i64];
    let vocab = config.vocab_size as i64;
    seeded(2, || {
        (
            Tensor::randint(vocab, shape, (Kind::Int64, Device::Cpu)),
            Tensor::randint(vocab, shape, (Kind::Int64, Device::Cpu)),
        )
    })
}

/// One weighted-sum bandwidth case: a random stack of `layers` outputs on a device, its
/// weights, a preallocated output and a second buffer for the plain copy it is measured
/// against. Shared by the criterion bench (CPU) and `device_bandwidth` (any device).
pub struct WeightedSumCase {
    /// The stacked layer outputs `[layers, ...shape]`.
    pub stack: Tensor,
    /// One weight per layer.
    pub weights: Tensor,
    /// Every layer takes part.
    pub selection: Selection,
    /// The preallocated output `[...shape]`.
    out: Tensor,
    /// The copy's destination, the stack's size.
    target: Tensor,
}

impl WeightedSumCase {
    /// Random inputs (never zeros) of `kind` on `device`.
    pub fn new(layers: i64, shape: &[i64], kind: Kind, device: Device) -> Self {
        let mut stack_shape = vec![layers];
        stack_shape.extend(shape);
        let stack = Tensor::randn(stack_shape.as_slice(), (Kind::Float, device)).to_kind(kind);
        Self {
            weights: Tensor::randn([layers], (Kind::Float, device)),
            selection: Selection::all(layers as usize),
            out: Tensor::empty(shape, (kind, device)),
            target: stack.zeros_like(),
            stack,
        }
    }

    /// Bytes one weighted sum moves: every layer read once and the output written once.
    pub fn sum_bytes(&self) -> u64 {
        let layers = self.stack.size()[0] as u64;
        (layers + 1) * self.layer_bytes()
    }

    /// Bytes the plain copy moves: the whole stack read once and written once.
    pub fn copy_bytes(&self) -> u64 {
        2 * self.stack.size()[0] as u64 * self.layer_bytes()
    }

    /// Bytes of one layer.
    fn layer_bytes(&self) -> u64 {
        (self.out.numel() * self.stack.kind().elt_size_in_bytes()) as u64
    }

    /// Copies the stack into the second buffer.
    pub fn copy(&mut self) {
        self.target.copy_(&self.stack);
    }

    /// One weighted sum written into the preallocated output through `path`.
    pub fn sum_into(&mut self, path: Implementation) {
        weighted_sum_into(
            &mut self.out,
            &self.stack,
            &self.weights,
            &self.selection,
            path,
        )
        .expect("the benchmark weighted sum runs");
    }

    /// The reference loop, allocating its temporaries as it does in use.
    pub fn reference(&self) -> Tensor {
        weighted_sum(
            &self.stack,
            &self.weights,
            &self.selection,
            Implementation::Reference,
        )
        .expect("the reference weighted sum runs")
    }

    /// The layer stack training uses, filled with this case's layers (which require
    /// gradients), and weights that require gradients: what `stack_forward` measures.
    pub fn training_stack(&self) -> (LayerStack, Tensor) {
        let layers = self.stack.size()[0];
        let outputs: Vec<Tensor> = (0..layers)
            .map(|j| self.stack.get(j).detach().set_requires_grad(true))
            .collect();
        let mut stack = LayerStack::new(&outputs[0], layers as usize, true, Implementation::Auto)
            .expect("a layer stack");
        for x in &outputs[1..] {
            stack.push(x).expect("push");
        }
        (stack, self.weights.detach().set_requires_grad(true))
    }
}
