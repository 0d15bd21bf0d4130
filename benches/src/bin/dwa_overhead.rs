//! One measurement of DenseFormer's training overhead: median step time and peak memory of a
//! model with `--layers` blocks of width `--width`, as a baseline (`--dwa none`) or with DWA
//! `KxP`. `cargo xtask bench` runs it once per configuration, each in a fresh process so that
//! peak memory belongs to one configuration only, and prints one JSON line.

use std::time::Instant;
use strata_benches::{adamw, batch, build};
use strata_core::ModelConfig;
use strata_train::memory::{current_rss_bytes, peak_rss_bytes};
use strata_train::parallel::{DataParallel, worker_count};
use tch::Device;

/// Command-line options.
struct Options {
    layers: usize,
    width: usize,
    dwa: Option<(usize, usize)>,
    batch: i64,
    block: usize,
    steps: usize,
}

/// Parses `--name value` pairs.
fn options() -> Result<Options, String> {
    let mut o = Options {
        layers: 12,
        width: 256,
        dwa: None,
        batch: 8,
        block: 128,
        steps: 5,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            return Err(format!("`{}` needs a value", pair[0]));
        };
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!(
                    "{name}: expected a positive integer, got `{value}`"
                ))
        };
        match name.as_str() {
            "--layers" => o.layers = number()?,
            "--width" => o.width = number()?,
            "--batch" => o.batch = number()? as i64,
            "--block" => o.block = number()?,
            "--steps" => o.steps = number()?,
            "--dwa" if value == "none" => o.dwa = None,
            "--dwa" => {
                let (k, p) = value
                    .split_once('x')
                    .and_then(|(k, p)| Some((k.parse().ok()?, p.parse().ok()?)))
                    .ok_or(format!(
                        "--dwa: expected none or KxP (e.g. 4x5), got `{value}`"
                    ))?;
                o.dwa = Some((k, p));
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(o)
}

/// The model config for the options: byte vocabulary, 64-wide heads.
fn model_config(o: &Options) -> ModelConfig {
    let dwa = o.dwa.map_or(String::new(), |(k, p)| {
        format!("\n[dwa]\ndilation = {k}\nperiod = {p}\n")
    });
    let text = format!(
        "vocab_size = 256\nn_layer = {}\nn_head = {}\nd_model = {}\nblock_size = {}\n{dwa}",
        o.layers,
        (o.width / 64).max(1),
        o.width,
        o.block
    );
    toml::from_str(&text).expect("the benchmark model config parses")
}

fn main() -> Result<(), String> {
    let o = options()?;
    let config = model_config(&o);
    let (vs, model) = build(&config);
    let (x, y) = batch(&config, o.batch);
    let cores = tch::get_num_threads().max(1) as usize;
    let workers = worker_count(Device::Cpu, cores, o.batch as usize);
    let mut dp = DataParallel::new(&vs, &model, workers, (cores / workers).max(1))
        .map_err(|e| e.to_string())?;
    let mut opt = adamw(&vs, 0.95);
    let before = current_rss_bytes().unwrap_or(0);
    let mut times = Vec::new();
    for step in 0..o.steps + 2 {
        let start = Instant::now();
        opt.zero_grad();
        let _loss = dp
            .forward_backward(&model, &x, &y, None)
            .map_err(|e| e.to_string())?;
        let _norm = opt.clip_grad_norm(1.0).map_err(|e| e.to_string())?;
        opt.step(1e-4);
        if step >= 2 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let peak = peak_rss_bytes().unwrap_or(0);
    let json = format!(
        "{{\"layers\": {}, \"width\": {}, \"dwa\": \"{}\", \"params\": {}, \"ms_per_step\": {:.3}, \
         \"peak_mib\": {:.1}, \"before_mib\": {:.1}}}",
        o.layers,
        o.width,
        o.dwa.map_or("none".to_owned(), |(k, p)| format!("{k}x{p}")),
        model.param_count().total,
        times[times.len() / 2],
        mib(peak),
        mib(before),
    );
    use std::io::Write;
    writeln!(std::io::stdout(), "{json}").map_err(|e| e.to_string())
}
