//! Effective bandwidth of every weighted-sum path on one device (the CPU or a GPU) against a
//! device-to-device copy of the same stack, in the same process: one JSON line per path with
//! milliseconds per call, GB/s (bytes read plus written) and the ratio to the copy's GB/s.
//! GPU timings synchronise the device around each timed batch of calls.

use clap::Parser;
use std::io::Write;
use std::time::Instant;
use strata_benches::WeightedSumCase;
use strata_kernels::{Implementation, device_memory};
use strata_tensor::DeviceChoice;
use tch::{Device, Kind};

/// Command-line options.
#[derive(Parser)]
struct Options {
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Stacked layer outputs (blocks + the embeddings).
    #[arg(long, default_value_t = 13)]
    layers: i64,
    /// Shape of one layer, `BxTxD`.
    #[arg(long, default_value = "12x256x768", value_parser = parse_shape)]
    shape: Shape,
    /// f32 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: Kind,
    /// Calls per timed batch.
    #[arg(long, default_value_t = 20)]
    calls: usize,
    /// Timed batches; the median batch is reported.
    #[arg(long, default_value_t = 7)]
    batches: usize,
}

/// The sizes of one layer.
#[derive(Clone)]
struct Shape(Vec<i64>);

/// Parses `BxTxD` into positive sizes.
fn parse_shape(text: &str) -> Result<Shape, String> {
    let sizes: Option<Vec<i64>> = text
        .split('x')
        .map(|s| s.parse::<i64>().ok().filter(|&n| n > 0))
        .collect();
    sizes.filter(|s| !s.is_empty()).map(Shape).ok_or(format!(
        "expected positive sizes like 12x256x768, got `{text}`"
    ))
}

/// Parses a dtype name.
fn parse_dtype(text: &str) -> Result<Kind, String> {
    match text {
        "f32" => Ok(Kind::Float),
        "bf16" => Ok(Kind::BFloat16),
        other => Err(format!("expected f32 or bf16, got `{other}`")),
    }
}

/// Median milliseconds per call of `op` on `device`, over `batches` batches of `calls` calls
/// after one untimed warm-up batch.
fn time_ms(device: Device, calls: usize, batches: usize, mut op: impl FnMut()) -> f64 {
    let mut per_call: Vec<f64> = Vec::with_capacity(batches);
    for batch in 0..=batches {
        device_memory::synchronize(device);
        let start = Instant::now();
        for _ in 0..calls {
            op();
        }
        device_memory::synchronize(device);
        if batch > 0 {
            per_call.push(start.elapsed().as_secs_f64() * 1e3 / calls as f64);
        }
    }
    per_call.sort_by(f64::total_cmp);
    per_call[per_call.len() / 2]
}

fn main() -> Result<(), String> {
    let o = Options::parse();
    let device = o.device.resolve().map_err(|e| e.to_string())?;
    let mut case = WeightedSumCase::new(o.layers, &o.shape.0, o.dtype, device);
    let no_grad_path = if device.is_cuda() {
        Implementation::CudaNoGrad
    } else {
        Implementation::CpuNoGrad
    };
    let (calls, batches) = (o.calls.max(1), o.batches.max(1));
    let mut rows: Vec<(&str, f64, u64)> = Vec::new();
    {
        let _guard = tch::no_grad_guard();
        let copy = time_ms(device, calls, batches, || case.copy());
        rows.push(("copy", copy, case.copy_bytes()));
        let reference = time_ms(device, calls, batches, || drop(case.reference()));
        rows.push(("reference", reference, case.sum_bytes()));
        let fused = time_ms(device, calls, batches, || {
            case.sum_into(Implementation::Fused)
        });
        rows.push(("fused", fused, case.sum_bytes()));
        let no_grad = time_ms(device, calls, batches, || case.sum_into(no_grad_path));
        rows.push(("no_grad", no_grad, case.sum_bytes()));
    }
    let (stack, weights) = case.training_stack();
    let forward = time_ms(device, calls, batches, || {
        drop(
            stack
                .weighted_sum(&weights, &case.selection)
                .expect("stack forward"),
        )
    });
    rows.push(("stack_forward", forward, case.sum_bytes()));
    let gb_s = |ms: f64, bytes: u64| bytes as f64 / (ms * 1e-3) / 1e9;
    let copy_gb_s = gb_s(rows[0].1, rows[0].2);
    let shape: Vec<String> = o.shape.0.iter().map(i64::to_string).collect();
    let mut stdout = std::io::stdout().lock();
    for (path, ms, bytes) in rows {
        let line = format!(
            "{{\"device\": \"{}\", \"dtype\": \"{}\", \"layers\": {}, \"shape\": \"{}\", \
             \"path\": \"{path}\", \"ms\": {ms:.4}, \"gb_s\": {:.2}, \"vs_copy\": {:.3}}}",
            if device.is_cuda() { "cuda" } else { "cpu" },
            if o.dtype == Kind::Float {
                "f32"
            } else {
                "bf16"
            },
            o.layers,
            shape.join("x"),
            gb_s(ms, bytes),
            gb_s(ms, bytes) / copy_gb_s,
        );
        writeln!(stdout, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}
