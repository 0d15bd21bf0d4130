//! Every weighted-sum path against a plain copy of the same number of bytes, reported as
//! bytes moved per second (inputs read + output written): 13 stacked outputs (12 blocks and
//! the embeddings) of batch 12 x 64 tokens x width 768, f32. The fused and CPU paths write
//! into a preallocated output; the reference allocates its temporaries, as it does in use.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_kernels::{Implementation, Selection, weighted_sum, weighted_sum_into};
use tch::{Device, Kind, Tensor};

fn weighted_sum_bandwidth(c: &mut Criterion) {
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group("weighted_sum");
    group.sample_size(30);
    let (layers, b, t, d) = (13i64, 12i64, 64i64, 768i64);
    let stack = Tensor::randn([layers, b, t, d], (Kind::Float, Device::Cpu));
    let weights = Tensor::randn([layers], (Kind::Float, Device::Cpu));
    let selection = Selection::all(layers as usize);
    let bytes = ((layers + 1) * b * t * d * 4) as u64;
    group.throughput(Throughput::Bytes(bytes));
    let mut out = Tensor::empty([b, t, d], (Kind::Float, Device::Cpu));
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
    let source = Tensor::randn([layers + 1, b, t, d / 2], (Kind::Float, Device::Cpu));
    let mut target = source.zeros_like();
    group.bench_function("copy/same-bytes", |bench| {
        bench.iter(|| target.copy_(&source))
    });
    group.finish();
}

criterion_group!(benches, weighted_sum_bandwidth);
criterion_main!(benches);
