//! Generation speed with and without the KV cache: tokens per second of greedy sampling
//! from a one-token prompt until the context holds `context` tokens, for a run config's
//! model (random weights) with its block size set to each context, cached
//! ([`strata_core::Gpt::generate`]) and uncached ([`strata_core::Gpt::generate_uncached`])
//! side by side in one process. Checks that both produce the same tokens and prints one
//! JSON line per context.
//!
//! `cargo run --release -p strata-benches --bin sample_speed -- --config configs/nanogpt-cpu.toml --contexts 64,256`

use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use strata_benches::build_on;
use strata_core::SampleOptions;
use strata_tensor::DeviceChoice;
use strata_train::RunConfig;

/// Command-line options.
#[derive(Parser)]
struct Options {
    /// The run config whose model is measured.
    #[arg(long, default_value = "configs/nanogpt-cpu.toml")]
    config: PathBuf,
    /// `section.key=value` overrides, as for `strata train --set`.
    #[arg(long)]
    set: Vec<String>,
    /// Contexts to fill (each becomes the model's block size).
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    contexts: Vec<usize>,
    /// Repetitions per path; the fastest is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repeats: u64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn main() -> Result<(), String> {
    let o = Options::parse();
    let run = RunConfig::load(&o.config, &o.set).map_err(|e| e.to_string())?;
    let device = o.device.resolve().map_err(|e| e.to_string())?;
    let threads = run.train.threads;
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    for &context in &o.contexts {
        let mut config = run.model.clone();
        if config.vocab_size == 0 {
            config.vocab_size = 65; // Tiny Shakespeare's characters
        }
        config.block_size = context.max(2);
        let (_vs, model) = build_on(&config, device);
        let options = SampleOptions {
            temperature: 0.0,
            top_k: None,
            seed: 1,
        };
        let new = config.block_size - 1;
        let time = |cached: bool| -> Result<(f64, Vec<i64>), String> {
            let mut best = f64::INFINITY;
            let mut tokens = Vec::new();
            for _ in 0..o.repeats {
                let start = Instant::now();
                tokens = if cached {
                    model.generate(&[0], new, &options)
                } else {
                    model.generate_uncached(&[0], new, &options)
                }
                .map_err(|e| e.to_string())?;
                best = best.min(start.elapsed().as_secs_f64());
            }
            Ok((new as f64 / best, tokens))
        };
        let (uncached, a) = time(false)?;
        let (cached, b) = time(true)?;
        let json = format!(
            "{{\"config\": \"{}\", \"device\": \"{}\", \"params\": {}, \"context\": {context}, \
             \"uncached_tokens_per_s\": {uncached:.1}, \"cached_tokens_per_s\": {cached:.1}, \
             \"speedup\": {:.2}, \"same_tokens\": {}}}",
            o.config.display(),
            if device.is_cuda() { "cuda" } else { "cpu" },
            model.param_count().total,
            cached / uncached,
            a == b
        );
        writeln!(std::io::stdout(), "{json}").map_err(|e| e.to_string())?;
    }
    Ok(())
}
