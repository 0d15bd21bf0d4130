//! Every weighted-sum path against a plain copy, as bytes moved per second (bytes read plus
//! bytes written): 13 stacked outputs (12 blocks and the embeddings) of batch 12 x 256 tokens
//! x width 768, f32, 123 MB, so that neither the sum nor the copy fits in the last-level
//! cache. The copy moves the whole stack into a second buffer (STREAM's copy). The fused
//! (matrix product) and CPU paths write into a preallocated output; the reference allocates
//! its temporaries, as it does in use; `stack_forward` is the forward pass of the layer
//! stack's autograd function, what training runs. `device_bandwidth` measures the same cases
//! on a GPU.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_benches::{WEIGHTED_SUM_LAYER_SHAPE, WEIGHTED_SUM_LAYERS, WeightedSumCase};
use strata_kernels::Implementation;
use tch::{Device, Kind};

fn weighted_sum_bandwidth(c: &mut Criterion) {
    let mut group = c.benchmark_group("weighted_sum");
    // Long, many-sample measurements: this VM's memory bandwidth wanders between seconds.
    group.sample_size(40);
    group.measurement_time(std::time::Duration::from_secs(10));
    let mut case = WeightedSumCase::new(
        WEIGHTED_SUM_LAYERS,
        &WEIGHTED_SUM_LAYER_SHAPE,
        Kind::Float,
        Device::Cpu,
    );
    group.throughput(Throughput::Bytes(case.sum_bytes()));
    {
        let _guard = tch::no_grad_guard();
        group.bench_function("reference/13-layers", |bench| {
            bench.iter(|| case.reference())
        });
        for (name, path) in [
            ("fused", Implementation::Fused),
            ("cpu_no_grad", Implementation::CpuNoGrad),
        ] {
            group.bench_function(format!("{name}/13-layers"), |bench| {
                bench.iter(|| case.sum_into(path))
            });
        }
    }
    // The training path: the layer stack's own autograd function over a filled stack whose
    // outputs require gradients (forward only; the graph is dropped each iteration).
    let (layer_stack, weights) = case.training_stack();
    group.bench_function("stack_forward/13-layers", |bench| {
        bench.iter(|| layer_stack.weighted_sum(&weights, &case.selection))
    });
    let _guard = tch::no_grad_guard();
    group.throughput(Throughput::Bytes(case.copy_bytes()));
    group.bench_function("copy/13-layers", |bench| bench.iter(|| case.copy()));
    group.finish();
}

criterion_group!(benches, weighted_sum_bandwidth);
criterion_main!(benches);
