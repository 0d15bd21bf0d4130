//! One optimizer step of the `nanogpt-cpu.toml` model (batch 12 x 64 tokens): baseline and
//! DenseFormer 1x1, with one data-parallel worker per core and with libtorch's own threading.

use criterion::{Criterion, criterion_group, criterion_main};
use strata_benches::{adamw, batch, build, nanogpt_cpu_model};
use strata_train::parallel::{DataParallel, worker_count};
use tch::Device;

fn train_step(c: &mut Criterion) {
    let cores = tch::get_num_threads().max(1) as usize;
    let mut group = c.benchmark_group("train_step_nanogpt_cpu");
    group.sample_size(20);
    for denseformer in [false, true] {
        for parallel in [true, false] {
            let config = nanogpt_cpu_model(denseformer);
            let (vs, model) = build(&config);
            let workers = if parallel {
                worker_count(Device::Cpu, cores, 12)
            } else {
                1
            };
            let threads = (cores / workers).max(1);
            let mut dp = DataParallel::new(&vs, &model, workers, threads).expect("replicas");
            let mut opt = adamw(&vs, 0.99);
            let (x, y) = batch(&config, 12);
            let name = format!(
                "{}/{}",
                if denseformer {
                    "denseformer-1x1"
                } else {
                    "baseline"
                },
                if parallel {
                    format!("{workers}-workers")
                } else {
                    format!("{threads}-threads")
                }
            );
            group.bench_function(name, |b| {
                b.iter(|| {
                    opt.zero_grad();
                    let _loss = dp.forward_backward(&model, &x, &y, None).expect("step");
                    let _norm = opt.clip_grad_norm(1.0).expect("clip");
                    opt.step(1e-3).unwrap();
                })
            });
        }
    }
    tch::set_num_threads(cores as i32);
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
