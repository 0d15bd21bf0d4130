//! The CUDA paths against the float64 oracle on the CPU; skipped without a usable GPU.

use strata_kernels::{
    Implementation, LayerStack, Selection, device_memory, weighted_sum, weighted_sum_into,
};
use strata_tensor::{TensorExt, cuda_available, cuda_status};
use tch::{Device, Kind, Tensor};

/// The GPU, or `None` (with a note on stderr) when the test must be skipped.
fn gpu() -> Option<Device> {
    if cuda_available() {
        Some(Device::Cuda(0))
    } else {
        eprintln!("skipped: no usable CUDA device ({})", cuda_status());
        None
    }
}

#[test]
fn cuda_paths_match_the_cpu_float64_result() {
    let Some(gpu) = gpu() else { return };
    tch::manual_seed(5);
    for (kind, tol) in [(Kind::Float, 1e-5), (Kind::BFloat16, 1.5e-2)] {
        for &(layers, b, t, d) in &[(3i64, 2i64, 5i64, 7i64), (13, 4, 64, 130), (5, 1, 1, 4099)] {
            let stack = Tensor::randn([layers, b, t, d], (Kind::Float, Device::Cpu)).to_kind(kind);
            for dilation in 1..4 {
                let sel = Selection::dilated(layers as usize - 1, dilation).unwrap();
                let w = Tensor::randn([sel.count as i64], (Kind::Float, Device::Cpu));
                let want = weighted_sum(
                    &stack.to_kind(Kind::Double),
                    &w.to_kind(Kind::Double),
                    &sel,
                    Implementation::Reference,
                )
                .unwrap();
                let on_gpu = stack.to_device(gpu);
                let w_gpu = w.to_device(gpu);
                for path in [
                    Implementation::CudaNoGrad,
                    Implementation::Fused,
                    Implementation::Auto,
                ] {
                    let mut out = Tensor::full([b, t, d], f64::NAN, (kind, gpu));
                    weighted_sum_into(&mut out, &on_gpu, &w_gpu, &sel, path).unwrap();
                    let out = out.to_device(Device::Cpu);
                    assert!(out.all_finite(), "{path:?} left NaN");
                    let err = out.to_kind(Kind::Double).max_rel_diff(&want).unwrap();
                    assert!(err <= tol, "{path:?} {kind:?} {layers}x{b}x{t}x{d}: {err}");
                }
            }
        }
    }
}

#[test]
fn the_recording_stack_on_cuda_matches_the_cpu_gradients() {
    let Some(gpu) = gpu() else { return };
    let xs_data: Vec<Tensor> = (0..5)
        .map(|_| Tensor::randn([2, 3, 4], (Kind::Double, Device::Cpu)))
        .collect();
    let w_data = Tensor::randn([5], (Kind::Double, Device::Cpu));
    let grads = |device: Device| {
        let xs: Vec<Tensor> = xs_data
            .iter()
            .map(|x| x.to_device(device).set_requires_grad(true))
            .collect();
        let w = w_data.to_device(device).set_requires_grad(true);
        let mut stack = LayerStack::new(&(&xs[0] * 1.0), 5, true, Implementation::Auto).unwrap();
        for x in &xs[1..] {
            stack.push(&(x * 1.0)).unwrap();
        }
        let out = stack.weighted_sum(&w, &Selection::all(5)).unwrap();
        (out.sin().sum(Kind::Double)).backward();
        let mut all: Vec<Tensor> = xs.iter().map(|x| x.grad().to_device(Device::Cpu)).collect();
        all.push(w.grad().to_device(Device::Cpu));
        all
    };
    for (a, b) in grads(gpu).iter().zip(grads(Device::Cpu)) {
        assert!(a.max_rel_diff(&b).unwrap() < 1e-10);
    }
}

#[test]
fn the_allocator_peak_counts_a_known_allocation_and_resets() {
    let Some(gpu) = gpu() else { return };
    const BYTES: u64 = 64 << 20;
    assert!(device_memory::reset_peak(gpu));
    let before = device_memory::peak_allocated_bytes(gpu).expect("CUDA allocator statistics");
    let block = Tensor::zeros([(BYTES / 4) as i64], (Kind::Float, gpu));
    device_memory::synchronize(gpu);
    let with_block = device_memory::peak_allocated_bytes(gpu).unwrap();
    assert!(with_block >= before + BYTES, "{before} -> {with_block}");
    drop(block);
    assert!(device_memory::reset_peak(gpu));
    let after = device_memory::peak_allocated_bytes(gpu).unwrap();
    assert!(
        after + BYTES <= with_block,
        "{after} after freeing, {with_block} before"
    );
}

#[test]
fn free_and_total_memory_come_from_the_driver() {
    let Some(gpu) = gpu() else { return };
    let (free, total) = device_memory::free_and_total_bytes(gpu).unwrap();
    assert!(total > 0 && free <= total, "free {free} of {total}");
    // A 1 GiB tensor held by the caching allocator is no longer free on the device.
    let held = Tensor::zeros([256, 1024, 1024], (Kind::Float, gpu));
    device_memory::synchronize(gpu);
    let (after, _) = device_memory::free_and_total_bytes(gpu).unwrap();
    assert!(
        after + (1 << 29) <= free,
        "free {free} -> {after} with 1 GiB held"
    );
    drop(held);
}
