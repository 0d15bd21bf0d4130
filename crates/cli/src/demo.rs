//! `strata demo`: nanoGPT's CPU recipe and its DenseFormer twin, side by side.

use crate::inspect;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use strata_core::SampleOptions;
use strata_tensor::{DeviceChoice, Error, Result};
use strata_train::RunSummary;

/// The baseline config, as shipped in configs/.
const BASELINE: (&str, &str) = (
    "nanogpt-cpu",
    include_str!("../../../configs/nanogpt-cpu.toml"),
);
/// Its DenseFormer twin.
const DENSEFORMER: (&str, &str) = (
    "denseformer-cpu",
    include_str!("../../../configs/denseformer-cpu.toml"),
);

/// Options of `strata demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Folder for the two runs.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Override the number of training steps of both runs (at least 1).
    #[arg(long, value_parser = crate::bounds::count_u64(u64::MAX))]
    iters: Option<u64>,
    /// Device for both runs: cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Characters of sample text printed per model (1 to 1000000).
    #[arg(long, default_value_t = 300, value_parser = crate::bounds::count(crate::bounds::MAX_SAMPLE_TOKENS))]
    sample_tokens: usize,
}

/// Trains one config in a child process (so its peak memory is its own) and reads its summary;
/// a child stopped by a signal (`stop` is set) has saved a checkpoint and a summary.
fn train_child(args: &DemoArgs, name: &str, text: &str, stop: &AtomicBool) -> Result<RunSummary> {
    std::fs::create_dir_all(&args.out).map_err(Error::io(&args.out))?;
    let config = args.out.join(format!("{name}.toml"));
    std::fs::write(&config, text).map_err(Error::io(&config))?;
    let run_dir = args.out.join(name);
    let exe = std::env::current_exe().map_err(Error::io("current executable"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&run_dir)
        .arg("--overwrite")
        .arg("--set")
        .arg(format!("train.device=\"{}\"", args.device));
    if let Some(iters) = args.iters {
        cmd.arg("--set").arg(format!("train.max_iters={iters}"));
        cmd.arg("--set")
            .arg(format!("train.lr_decay_iters={iters}"));
    }
    tracing::info!(run = name, "training");
    let mut child = cmd
        .stdout(Stdio::null())
        .spawn()
        .map_err(Error::io("strata train"))?;
    let mut stop_forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(Error::io("strata train"))? {
            break status;
        }
        if stop.load(Ordering::SeqCst) && !stop_forwarded {
            strata_sweep::registry::ask_to_stop(&child);
            stop_forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if !status.success() && !stop.load(Ordering::SeqCst) {
        return Err(Error::Invalid(format!("training {name} failed ({status})")));
    }
    read_summary(&run_dir)
}

/// Reads `summary.json` of a run folder.
fn read_summary(run_dir: &Path) -> Result<RunSummary> {
    let path = run_dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::data(&path, format!("not a run summary: {e}")))
}

/// Formats an optional loss.
fn loss(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

/// Prints the comparison table.
fn print_table(rows: &[RunSummary]) {
    let gpu = rows.iter().any(|r| r.peak_device_mib.is_some());
    let mib = |m: Option<f64>| m.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
    println!(
        "\n{:<16} {:<16} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9}{}",
        "run",
        "variant",
        "params",
        "val loss",
        "best val",
        "wall s",
        "tokens/s",
        "ms/iter",
        "peak MiB",
        if gpu { "   GPU MiB" } else { "" }
    );
    for r in rows {
        println!(
            "{:<16} {:<16} {:>9} {:>9} {:>9} {:>8.1} {:>9.0} {:>8.2} {:>9}{}",
            r.name,
            r.variant,
            r.params.total,
            loss(r.final_val_loss),
            loss(r.best_val_loss),
            r.wall_s,
            r.tokens_per_sec,
            r.ms_per_iter,
            mib(r.peak_rss_mib),
            if gpu {
                format!(" {:>9}", mib(r.peak_device_mib))
            } else {
                String::new()
            },
        );
    }
}

/// Runs the demo.
pub fn run(args: DemoArgs, stop: &AtomicBool) -> Result<()> {
    let mut rows = Vec::new();
    for (name, text) in [BASELINE, DENSEFORMER] {
        let summary = train_child(&args, name, text, stop)?;
        if summary.interrupted || stop.load(Ordering::SeqCst) {
            return Err(Error::Invalid(format!(
                "interrupted: {name} saved a checkpoint in {}; resume it with \
                 `strata train --config {} --out {} --resume`",
                summary.out_dir.display(),
                summary.out_dir.join("config.toml").display(),
                summary.out_dir.display()
            )));
        }
        rows.push(summary);
    }
    print_table(&rows);
    let options = SampleOptions {
        temperature: 0.8,
        top_k: Some(40),
        seed: 1337,
    };
    for row in &rows {
        let loaded = inspect::load(&row.out_dir, DeviceChoice::Cpu)?;
        let text = inspect::sample(&loaded, "\n", args.sample_tokens, &options)?.text;
        println!(
            "\n--- sample from {} ({}) ---{}",
            row.name, row.variant, text
        );
    }
    println!(
        "\nrun folders: {} (loss.png, dwa_weights.png, metrics.jsonl, checkpoints/)",
        args.out.display()
    );
    Ok(())
}
