//! Every weighted-sum path against a plain copy, as bytes moved per second (bytes read plus
//! bytes written): 13 stacked outputs (12 blocks and the embeddings) of batch 12 x 256 tokens
//! x width 768, f32, 123 MB, so that neither the sum nor the copy fits in the last-level
//! cache. The copy moves the whole stack into a second buffer (STREAM's copy). The fused
//! (matrix product) and CPU paths write into a preallocated output; the reference allocates
//! its temporaries, as it does in use; `stack_forward` is the forward pass of the layer
//! stack's autograd function, what training runs.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_benches::{WEIGHTED_SUM_LAYER_SHAPE, WEIGHTED_SUM_LAYERS};
use strata_kernels::{Implementation, LayerStack, Selection, weighted_sum, weighted_sum_into};
use tch::{Device, Kind, Tensor};

fn weighted_sum_bandwidth(c: &mut Criterion) {
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group("weighted_sum");
    // Long, many-sample measurements: this VM's memory bandwidth wanders between seconds.
    group.sample_size(40);
    group.measurement_time(std::time::Duration::from_secs(10));
    let layers = WEIGHTED_SUM_LAYERS;
    let layer: i64 = WEIGHTED_SUM_LAYER_SHAPE.iter().product();
    let mut stack_shape = vec![layers];
    stack_shape.extend(WEIGHTED_SUM_LAYER_SHAPE);
    let stack = Tensor::randn(stack_shape.as_slice(), (Kind::Float, Device::Cpu));
    let weights = Tensor::randn([layers], (Kind::Float, Device::Cpu));
    let selection = Selection::all(layers as usize);
    group.throughput(Throughput::Bytes(((layers + 1) * layer * 4) as u64));
    let mut out = Tensor::empty(WEIGHTED_SUM_LAYER_SHAPE, (Kind::Float, Device::Cpu));
    group.bench_function("reference/13-layers", |bench| {
        bench.iter(|| weighted_sum(&stack, &weights, &selection, Implementation::Reference))
    });
    for (name, path) in [
        ("fused", Implementation::Fused),
        ("cpu_no_grad", Implementation::CpuNoGrad),
    ] {
        group.bench_function(format!("{name}/13-layers"), |bench| {
            bench.iter(|| {
                weighted_sum_into(&mut out, &stack, &weights, &selection, path)
                    .expect("weighted sum")
            })
        });
    }
    // The training path: the layer stack's own autograd function over a filled stack whose
    // outputs require gradients (forward only; the graph is dropped each iteration).
    drop(_guard);
    let outputs: Vec<Tensor> = (0..layers)
        .map(|j| stack.get(j).detach().set_requires_grad(true))
        .collect();
    let mut layer_stack =
        LayerStack::new(&outputs[0], layers as usize, true).expect("a layer stack");
    for x in &outputs[1..] {
        layer_stack.push(x).expect("push");
    }
    let trained_weights = weights.set_requires_grad(true);
    group.bench_function("stack_forward/13-layers", |bench| {
        bench.iter(|| layer_stack.weighted_sum(&trained_weights, &selection))
    });
    let _guard = tch::no_grad_guard();
    group.throughput(Throughput::Bytes((2 * layers * layer * 4) as u64));
    let mut target = stack.zeros_like();
    group.bench_function("copy/13-layers", |bench| {
        bench.iter(|| target.copy_(&stack))
    });
    group.finish();
}

criterion_group!(benches, weighted_sum_bandwidth);
criterion_main!(benches);
