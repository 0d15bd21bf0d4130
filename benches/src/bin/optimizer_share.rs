//! The optimizer's share of a training step: median times of the forward and backward pass,
//! the gradient clipping and the optimizer update of a run config's model and optimizer
//! (AdamW, or Muon with AdamW groups), on the CPU (data-parallel workers, as `strata train`)
//! or a GPU (timed between device synchronisations). Prints one JSON line.
//!
//! `cargo run --release -p strata-benches --bin optimizer_share -- --config configs/modern-cpu.toml`

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;
use strata_benches::{batch, build_on};
use strata_kernels::device_memory;
use strata_tensor::DeviceChoice;
use strata_train::RunConfig;
use strata_train::optimizer::Optimizer;
use strata_train::parallel::{DataParallel, worker_count};

/// Command-line options.
#[derive(Parser)]
struct Options {
    /// The run config whose model, batch size and optimizer are measured.
    #[arg(long, default_value = "configs/modern-cpu.toml")]
    config: PathBuf,
    /// `section.key=value` overrides, as for `strata train --set`.
    #[arg(long)]
    set: Vec<String>,
    /// Timed steps (after three warm-up steps); medians are reported.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), String> {
    let o = Options::parse();
    let run = RunConfig::load(&o.config, &o.set).map_err(|e| e.to_string())?;
    let device = o.device.resolve().map_err(|e| e.to_string())?;
    let mut model_config = run.model.clone();
    if model_config.vocab_size == 0 {
        model_config.vocab_size = 65; // Tiny Shakespeare's characters
    }
    let (vs, model) = build_on(&model_config, device);
    let t = &run.train;
    let (x, y) = batch(&model_config, t.batch_size as i64);
    let (x, y) = (x.to_device(device), y.to_device(device));
    let cores = tch::get_num_threads().max(1) as usize;
    let workers = worker_count(device, cores, t.batch_size);
    let mut dp = DataParallel::new(&vs, &model, workers, (cores / workers).max(1))
        .map_err(|e| e.to_string())?;
    let mut opt = Optimizer::new(
        vs.variables().into_iter().collect(),
        &model_config,
        &t.optimizer,
        t.adamw(),
        t.learning_rate,
    )
    .map_err(|e| e.to_string())?;
    let (mut fb, mut clip, mut update) = (Vec::new(), Vec::new(), Vec::new());
    let lap = |start: &mut Instant| {
        device_memory::synchronize(device);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        *start = Instant::now();
        ms
    };
    for step in 0..o.steps + 3 {
        device_memory::synchronize(device);
        let mut start = Instant::now();
        opt.zero_grad();
        let _loss = dp
            .forward_backward(&model, &x, &y, None)
            .map_err(|e| e.to_string())?;
        let a = lap(&mut start);
        let _norm = opt.clip_grad_norm(t.grad_clip).map_err(|e| e.to_string())?;
        let b = lap(&mut start);
        opt.step(t.learning_rate).map_err(|e| e.to_string())?;
        let c = lap(&mut start);
        if step >= 3 {
            fb.push(a);
            clip.push(b);
            update.push(c);
        }
    }
    let (fb, clip, update) = (median(&mut fb), median(&mut clip), median(&mut update));
    let total = fb + clip + update;
    let json = format!(
        "{{\"config\": \"{}\", \"optimizer\": \"{:?}\", \"device\": \"{}\", \"params\": {}, \
         \"batch\": {}, \"forward_backward_ms\": {fb:.3}, \"clip_ms\": {clip:.3}, \
         \"update_ms\": {update:.3}, \"optimizer_share\": {:.4}}}",
        o.config.display(),
        t.optimizer.kind,
        if device.is_cuda() { "cuda" } else { "cpu" },
        model.param_count().total,
        t.batch_size,
        (clip + update) / total,
    );
    use std::io::Write;
    writeln!(std::io::stdout(), "{json}").map_err(|e| e.to_string())
}
