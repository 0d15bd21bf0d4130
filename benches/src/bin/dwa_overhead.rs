//! One measurement of DenseFormer's training overhead: median step time and peak memory of a
//! model with `--layers` blocks of width `--width`, as a baseline (`--dwa none`) or with DWA
//! `KxP`, or with a `[model.depth]` method (`--depth`, named as `DepthConfig::label` names it:
//! `vres`, `laurel-rw`, `laurel-lr16`, `shc4`, `dhc4`, `mhc4`, `dmhc4`, `attnres`, `mudd`), on the CPU (data-parallel workers, peak = the process's VmHWM) or a GPU (peak = the
//! caching allocator's peak bytes; steps timed between device synchronisations).
//! `cargo xtask bench` runs it once per configuration, each in a fresh process so that peak
//! memory belongs to one configuration only, and prints one JSON line.

use clap::Parser;
use std::time::Instant;
use strata_benches::{adamw, batch, build_on};
use strata_core::{
    DepthConfig, HyperConfig, Implementation, LaurelConfig, LaurelKind, ModelConfig,
};
use strata_kernels::device_memory;
use strata_tensor::{DeviceChoice, Precision};
use strata_train::memory::{current_rss_bytes, mib, peak_rss_bytes};
use strata_train::parallel::{DataParallel, worker_count};
use tch::Device;

/// Command-line options.
#[derive(Parser)]
struct Options {
    /// Transformer blocks.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..))]
    layers: u64,
    /// Model width (64-wide heads).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    width: u64,
    /// `none`, or DWA dilation x period such as `4x5`.
    #[arg(long, default_value = "none", value_parser = parse_dwa)]
    dwa: Dwa,
    /// `none`, or a depth method by its label (`mudd`, `dhc4`, `laurel-lr16`, ...).
    #[arg(long, default_value = "none", value_parser = parse_depth)]
    depth: DepthConfig,
    /// Sequences per step.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i64).range(1..))]
    batch: i64,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    block: u64,
    /// Timed steps (after two warm-up steps); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// `f32`, `bf16` (matrix products) or `bf16_autocast` (libtorch's autocast).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// The DWAs' weighted-sum path: `auto` (the fused layer stack while training),
    /// `reference`, `fused`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto", value_parser = parse_kernel)]
    kernel: Implementation,
}

/// Parses a weighted-sum path by its name.
fn parse_kernel(value: &str) -> Result<Implementation, String> {
    value
        .parse()
        .map_err(|e: strata_tensor::Error| e.to_string())
}

/// Parses a `model.precision` value.
fn parse_precision(value: &str) -> Result<Precision, String> {
    toml::Value::String(value.to_owned())
        .try_into()
        .map_err(|_| format!("expected f32, bf16 or bf16_autocast, got `{value}`"))
}

/// The DWA pattern, or none for the baseline.
#[derive(Clone, Copy)]
struct Dwa(Option<(usize, usize)>);

impl std::fmt::Display for Dwa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some((k, p)) => write!(f, "{k}x{p}"),
            None => f.write_str("none"),
        }
    }
}

/// Parses `none` or `KxP`.
fn parse_dwa(value: &str) -> Result<Dwa, String> {
    if value == "none" {
        return Ok(Dwa(None));
    }
    value
        .split_once('x')
        .and_then(|(k, p)| Some((k.parse().ok()?, p.parse().ok()?)))
        .map(|kp| Dwa(Some(kp)))
        .ok_or(format!("expected none or KxP (e.g. 4x5), got `{value}`"))
}

/// Parses `none` or a depth method label into its `[model.depth]` section.
fn parse_depth(value: &str) -> Result<DepthConfig, String> {
    let hyper = |rest: &str, dynamic, manifold| -> Option<DepthConfig> {
        let streams = rest.parse().ok()?;
        Some(DepthConfig {
            hyper: Some(HyperConfig {
                streams,
                dynamic,
                manifold,
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let block_attn_res = |rest: &str| -> Option<DepthConfig> {
        Some(DepthConfig {
            attn_res: true,
            attn_res_block_layers: rest.parse().ok()?,
            ..Default::default()
        })
    };
    let laurel = |kind, rank| DepthConfig {
        laurel: Some(LaurelConfig { kind, rank }),
        ..Default::default()
    };
    let depth = match value {
        "none" => Some(DepthConfig::default()),
        "vres" => Some(DepthConfig {
            value_residual: true,
            ..Default::default()
        }),
        "attnres" => Some(DepthConfig {
            attn_res: true,
            ..Default::default()
        }),
        "mudd" => Some(DepthConfig {
            mudd: true,
            ..Default::default()
        }),
        "laurel-rw" => Some(laurel(LaurelKind::Rw, None)),
        _ => value
            .strip_prefix("laurel-lr")
            .and_then(|r| Some(laurel(LaurelKind::Lr, Some(r.parse().ok()?))))
            .or_else(|| block_attn_res(value.strip_prefix("attnres-b")?))
            .or_else(|| hyper(value.strip_prefix("shc")?, false, false))
            .or_else(|| hyper(value.strip_prefix("dhc")?, true, false))
            .or_else(|| hyper(value.strip_prefix("mhc")?, false, true))
            .or_else(|| hyper(value.strip_prefix("dmhc")?, true, true)),
    };
    depth.ok_or(format!(
        "expected none, vres, laurel-rw, laurel-lrR, shcN, dhcN, mhcN, dmhcN, attnres, \
         attnres-bN (N layers per block) or mudd, got `{value}`"
    ))
}

/// The model config for the options: byte vocabulary, 64-wide heads.
fn model_config(o: &Options) -> ModelConfig {
    let dwa = o.dwa.0.map_or(String::new(), |(k, p)| {
        format!("\n[dwa]\ndilation = {k}\nperiod = {p}\n")
    });
    let text = format!(
        "vocab_size = 256\nn_layer = {}\nn_head = {}\nd_model = {}\nblock_size = {}\n{dwa}",
        o.layers,
        (o.width / 64).max(1),
        o.width,
        o.block
    );
    let mut config: ModelConfig = toml::from_str(&text).expect("the benchmark model config parses");
    config.depth = o.depth.clone();
    config.precision = o.precision;
    config
}

/// A memory reading in bytes: on the CPU `cpu_reading` (the resident set now, or its peak),
/// on a GPU the caching allocator's peak so far (before the first step: the parameters and
/// the batch).
fn memory_bytes(device: Device, cpu_reading: fn() -> Option<u64>) -> u64 {
    match device {
        Device::Cpu => cpu_reading(),
        _ => device_memory::peak_allocated_bytes(device),
    }
    .unwrap_or(0)
}

fn main() -> Result<(), String> {
    let o = Options::parse();
    let device = o.device.resolve().map_err(|e| e.to_string())?;
    let config = model_config(&o);
    let (vs, model) = build_on(&config, device);
    let model = model.with_kernel(o.kernel);
    let (x, y) = batch(&config, o.batch);
    let (x, y) = (x.to_device(device), y.to_device(device));
    let cores = tch::get_num_threads().max(1) as usize;
    let workers = worker_count(device, cores, o.batch as usize);
    let mut dp = DataParallel::new(&vs, &model, workers, (cores / workers).max(1))
        .map_err(|e| e.to_string())?;
    let mut opt = adamw(&vs, 0.95);
    let before = memory_bytes(device, current_rss_bytes);
    let mut times = Vec::new();
    for step in 0..o.steps + 2 {
        device_memory::synchronize(device);
        let start = Instant::now();
        opt.zero_grad();
        let _loss = dp
            .forward_backward(&model, &x, &y, None)
            .map_err(|e| e.to_string())?;
        let _norm = opt.clip_grad_norm(1.0).map_err(|e| e.to_string())?;
        opt.step(1e-4).unwrap();
        device_memory::synchronize(device);
        if step >= 2 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let json = format!(
        "{{\"layers\": {}, \"width\": {}, \"dwa\": \"{}\", \"depth\": \"{}\", \"precision\": {}, \"device\": \"{}\", \"params\": {}, \
         \"ms_per_step\": {:.3}, \"peak_mib\": {:.1}, \"before_mib\": {:.1}}}",
        o.layers,
        o.width,
        o.dwa,
        if o.depth.is_off() {
            "none".to_owned()
        } else {
            o.depth.label()
        },
        toml::Value::try_from(o.precision).map_err(|e| e.to_string())?,
        if device.is_cuda() { "cuda" } else { "cpu" },
        model.param_count().total,
        times[times.len() / 2],
        mib(memory_bytes(device, peak_rss_bytes)),
        mib(before),
    );
    use std::io::Write;
    writeln!(std::io::stdout(), "{json}").map_err(|e| e.to_string())
}
