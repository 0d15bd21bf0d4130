//! `cargo xtask gpu-kit` and `cargo xtask gpu-report DIR`: strata's GPU checks for a machine
//! that has torch but no cargo (the device tool's GPU machine).
//!
//! `gpu-kit` builds the release binaries and the CUDA-relevant test executables here and
//! installs them, without debug info, in `.carry/gpu-kit`; `benches/gpu/run.sh` runs them all
//! there and writes `results.jsonl`; `gpu-report` turns those results into
//! `docs/benchmarks-gpu.md`.

use crate::bench::number;
use crate::dwa_bench::{self, Overhead};
use crate::plan::{Child, Step};
use crate::run::{self, Failure, workspace_root};
use crate::torch_env;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The kit's folder, relative to the workspace root (ignored by git, carried by the device
/// tool).
pub const KIT: &str = ".carry/gpu-kit";
/// The binaries the checks run: (package, binary).
const BINARIES: [(&str, &str); 4] = [
    ("strata-cli", "strata"),
    ("strata-benches", "dwa_overhead"),
    ("strata-benches", "device_bandwidth"),
    ("strata-benches", "optimizer_share"),
];
/// Packages whose tests exercise CUDA when a GPU is present.
const TEST_PACKAGES: [&str; 2] = ["strata-tensor", "strata-kernels"];
/// The most the kit may weigh: the device tool carries 64 MiB with the working tree.
const KIT_LIMIT_BYTES: u64 = 56 << 20;
/// The weighted-sum paths' bandwidth targets on a GPU, against a device-to-device copy.
const BANDWIDTH_TARGETS: [(&str, f64); 1] = [("no_grad", 0.85)];

/// Copies `from` to `to` without debug info (`strip --strip-debug`), or as is where `strip`
/// is missing; returns the installed size.
fn install(from: &Path, to: &Path) -> Result<u64, String> {
    let stripped = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(from, to)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    std::fs::metadata(to)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", to.display()))
}

/// `cargo test --release --no-run` of the packages whose tests exercise CUDA.
fn kit_tests() -> Child {
    let mut args = vec!["test", "--release", "--no-run"];
    for package in TEST_PACKAGES {
        args.extend(["-p", package]);
    }
    Child::cargo(&args)
}

/// The plan of `cargo xtask gpu-kit` (it takes no arguments).
pub fn kit_plan(args: &[String]) -> Result<Vec<Step>, Failure> {
    if let Some(arg) = args.first() {
        return Err(format!("`gpu-kit` takes no arguments (got `{arg}`)").into());
    }
    let mut steps = vec![Step::Own(format!("empty {KIT}"))];
    steps.extend(
        BINARIES
            .iter()
            .map(|&(package, bin)| Step::Build { package, bin }),
    );
    steps.push(Step::Run(kit_tests()));
    steps.push(Step::Own(format!(
        "install the binaries in {KIT}/bin and the test executables in {KIT}/tests without \
         debug info (at most {} MiB)",
        KIT_LIMIT_BYTES >> 20
    )));
    Ok(steps)
}

/// `cargo xtask gpu-kit`.
pub fn kit(args: &[String]) -> Result<(), Failure> {
    kit_plan(args)?;
    let env = torch_env::ensure()?;
    let kit = workspace_root().join(KIT);
    if kit.exists() {
        std::fs::remove_dir_all(&kit).map_err(|e| format!("{}: {e}", kit.display()))?;
    }
    for sub in ["bin", "tests"] {
        std::fs::create_dir_all(kit.join(sub)).map_err(|e| format!("{}: {e}", kit.display()))?;
    }
    let mut bytes = 0;
    for (package, bin) in BINARIES {
        let exe = run::build_release_bin(&env, package, bin)?;
        bytes += install(&exe, &kit.join("bin").join(bin))?;
    }
    let test_args = kit_tests().args;
    let test_args: Vec<&str> = test_args.iter().map(String::as_str).collect();
    let messages = run::cargo_messages(&env, &test_args)?;
    let tests = run::test_executables(&messages);
    if tests.is_empty() {
        return Err("cargo built the tests but named no test executable"
            .to_owned()
            .into());
    }
    for (name, exe) in &tests {
        bytes += install(exe, &kit.join("tests").join(name))?;
    }
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if bytes > KIT_LIMIT_BYTES {
        return Err(format!(
            "the kit in {} weighs {mib:.1} MiB, more than the {} MiB the device tool can carry \
             beside the working tree",
            kit.display(),
            KIT_LIMIT_BYTES >> 20
        )
        .into());
    }
    eprintln!(
        "xtask: GPU kit in {} ({} binaries, {} test executables, {mib:.1} MiB). On the GPU \
         machine run `bash benches/gpu/run.sh` with carry [\"{KIT}\"], then here \
         `cargo xtask gpu-report <folder of its results.jsonl>`.",
        kit.display(),
        BINARIES.len(),
        tests.len()
    );
    Ok(())
}

/// The lines of a `results.jsonl`, each with its `check`.
fn read_results(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: not a JSON line: {e}", path.display(), i + 1))?;
            if v["check"].is_string() {
                Ok(v)
            } else {
                Err(format!("{}:{}: no `check` field", path.display(), i + 1))
            }
        })
        .collect()
}

/// The results of one check.
fn of<'a>(results: &'a [Value], check: &str) -> impl Iterator<Item = &'a Value> {
    let check = check.to_owned();
    results.iter().filter(move |v| v["check"] == check.as_str())
}

/// A string field, or `?`.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

/// A MiB figure, or `-` when absent.
fn mib(v: &Value, key: &str) -> String {
    v[key]
        .as_f64()
        .map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"))
}

/// The steps' table: every test binary and measurement with its exit status.
fn steps_section(results: &[Value]) -> String {
    let mut s = "## Steps\n\n| step | exit status | seconds |\n|---|---|---|\n".to_owned();
    for v in of(results, "step") {
        let rc = v["rc"].as_i64().unwrap_or(-1);
        let status = match rc {
            0 => "0 (passed)".to_owned(),
            124 | 137 => format!("{rc} (**timed out**)"),
            _ => format!("{rc} (**failed**)"),
        };
        s += &format!(
            "| {} | {status} | {} |\n",
            text(v, "name"),
            number(v, "seconds")
        );
    }
    s
}

/// The bandwidth table with the targets' verdicts.
fn bandwidth_section(results: &[Value]) -> String {
    let Some(first) = of(results, "bandwidth").next() else {
        return String::new();
    };
    let (device, shape, layers) = (
        text(first, "device"),
        text(first, "shape"),
        number(first, "layers"),
    );
    let mut s = format!(
        "## Weighted-sum bandwidth\n\n\
         `device_bandwidth --device {device} --layers {layers} --shape {shape} --dtype T`: \
         {layers} stacked layers of {shape}, each path's bytes read plus written per second \
         against a device-to-device copy of the whole stack, median of 7 timed batches of 20 \
         calls between device synchronisations. `no_grad` is the no-grad path of the device \
         (on CUDA one GEMV over the strided view, written into a preallocated output), \
         `fused` the differentiable matrix product, `stack_forward` the layer stack's \
         training forward.\n\n\
         | dtype | path | ms/call | GB/s | x copy |\n|---|---|---|---|---|\n"
    );
    let mut verdicts = String::new();
    for v in of(results, "bandwidth") {
        let (path, ratio) = (text(v, "path"), number(v, "vs_copy"));
        s += &format!(
            "| {} | {path} | {:.3} | {:.1} | {ratio:.3} |\n",
            text(v, "dtype"),
            number(v, "ms"),
            number(v, "gb_s"),
        );
        for (target_path, target) in BANDWIDTH_TARGETS {
            if path == target_path {
                verdicts += &format!(
                    "| {} {path} >= {target}x copy | {ratio:.3}x | {} |\n",
                    text(v, "dtype"),
                    if ratio >= target {
                        "met"
                    } else {
                        "**not met**"
                    }
                );
            }
        }
    }
    if !verdicts.is_empty() {
        s += &format!("\n| target | measured | |\n|---|---|---|\n{verdicts}");
    }
    s
}

/// DenseFormer's overhead on the GPU, through the CPU bench's own table.
fn dwa_section(results: &[Value]) -> Result<String, String> {
    let rounds = of(results, "dwa")
        .map(|v| Overhead::parse(v, "auto"))
        .collect::<Result<Vec<_>, _>>()?;
    if rounds.is_empty() {
        return Ok(String::new());
    }
    let first = of(results, "dwa").next().unwrap_or(&Value::Null);
    let (device, width) = (text(first, "device"), number(first, "width"));
    Ok(format!(
        "## DenseFormer overhead\n\n\
         `dwa_overhead --device {device} --layers L --dwa V --width {width} ...` as \
         benches/gpu/run.sh gives it, one process per configuration, two rounds in \
         alternating order: one optimizer step (forward, backward, clip, AdamW) of a \
         width-{width} model (64-wide heads, byte vocabulary), median of 10 steps after 2 \
         warm-up steps, then the median over rounds. On CUDA, peak is the caching allocator's \
         peak bytes and training memory the peak minus the allocator's peak before the first \
         step (weights and batch); on the CPU, the process's VmHWM and resident set. At 12 \
         layers, rows named after a `[model.depth]` method measure it (`--depth M`, one \
         round), and rows ending in `bf16_autocast` run under libtorch's bf16 autocast \
         (`--precision bf16_autocast`), read against the f32 baseline. Targets: \
         4x5 within 1.05x of the baseline's step time, 1x1 within 1.15x, peak memory within \
         1.10x.\n\n{}",
        dwa_bench::table(&dwa_bench::medians(&rounds))
    ))
}

/// The demo's two CUDA runs.
fn demo_section(results: &[Value]) -> String {
    let mut s = "## nanoGPT's CPU recipe on CUDA\n\n\
                 `strata demo --device cuda`: `configs/nanogpt-cpu.toml` and \
                 `configs/denseformer-cpu.toml` trained on the GPU (the run's device is in \
                 results.jsonl). Peak GPU memory is the \
                 caching allocator's; peak RSS is the process's.\n\n\
                 | run | variant | params | final val loss | wall s | tokens/s | ms/iter | \
                 GPU MiB | RSS MiB |\n|---|---|---|---|---|---|---|---|---|\n"
        .to_owned();
    for v in of(results, "demo") {
        s += &format!(
            "| {} | {} | {} | {:.4} | {:.1} | {:.0} | {:.2} | {} | {} |\n",
            text(v, "name"),
            text(v, "variant"),
            v["params"]["total"].as_u64().unwrap_or(0),
            number(v, "final_val_loss"),
            number(v, "wall_s"),
            number(v, "tokens_per_sec"),
            number(v, "ms_per_iter"),
            mib(v, "peak_device_mib"),
            mib(v, "peak_rss_mib"),
        );
    }
    s
}

/// The optimizer's share of a training step on the device.
fn optimizer_section(results: &[Value]) -> String {
    let Some(first) = of(results, "optimizer").next() else {
        return String::new();
    };
    let mut s = format!(
        "## The optimizer's share of a training step\n\n\
         `optimizer_share --device {} --config CONFIG --steps N`: median times of the forward \
         and backward pass, global gradient clipping and the optimizer update (AdamW, or Muon \
         on the hidden matrices with AdamW groups), each timed between device \
         synchronisations, after three warm-up steps; the share is clipping plus update over \
         the whole step. The CPU figures are in docs/benchmarks.md (\"The optimizer's share \
         of a training step\").\n\n\
         | config | optimizer | params | batch | forward + backward ms | clip ms | update ms | \
         share |\n|---|---|---|---|---|---|---|---|\n",
        text(first, "device"),
    );
    for v in of(results, "optimizer") {
        s += &format!(
            "| `{}` | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1}% |\n",
            text(v, "config"),
            text(v, "optimizer"),
            number(v, "params"),
            number(v, "batch"),
            number(v, "forward_backward_ms"),
            number(v, "clip_ms"),
            number(v, "update_ms"),
            100.0 * number(v, "optimizer_share"),
        );
    }
    s
}

/// The whole report.
fn report_text(results: &[Value]) -> Result<String, String> {
    let gpu = match of(results, "machine").next().map(|v| text(v, "gpu")) {
        Some("none") => "no GPU: a dry run",
        Some(gpu) => gpu,
        None => "unknown GPU",
    };
    let mut s = format!(
        "# Benchmarks on a GPU\n\n\
         Generated by `cargo xtask gpu-report` from one run of `benches/gpu/run.sh` on the \
         device tool's machine ({gpu}), with the binaries of `cargo xtask gpu-kit`; see \
         docs/gpu.md. CPU figures are in docs/benchmarks.md.\n\n"
    );
    for section in [
        steps_section(results),
        bandwidth_section(results),
        dwa_section(results)?,
        demo_section(results),
        optimizer_section(results),
    ] {
        if !section.is_empty() {
            s += &section;
            s.push('\n');
        }
    }
    Ok(s)
}

/// The folder argument of `cargo xtask gpu-report DIR`.
fn report_dir(args: &[String]) -> Result<PathBuf, Failure> {
    let [dir] = args else {
        return Err(
            "usage: cargo xtask gpu-report DIR (the folder holding benches/gpu/run.sh's \
             results.jsonl)"
                .to_owned()
                .into(),
        );
    };
    Ok(PathBuf::from(dir))
}

/// The plan of `cargo xtask gpu-report DIR`.
pub fn report_plan(args: &[String]) -> Result<Vec<Step>, Failure> {
    let dir = report_dir(args)?;
    Ok(vec![
        Step::Own(format!("read {}", dir.join("results.jsonl").display())),
        Step::Own("write docs/benchmarks-gpu.md".to_owned()),
        Step::Own(format!(
            "copy {} to docs/gpu-<run>-loss.png where present",
            dir.join("demo-<run>-loss.png").display()
        )),
    ])
}

/// `cargo xtask gpu-report DIR`.
pub fn report(args: &[String]) -> Result<(), Failure> {
    let dir = report_dir(args)?;
    let target = report_into(&dir, &workspace_root().join("docs"))?;
    eprintln!("xtask: wrote {}", target.display());
    Ok(())
}

/// Writes the report of `dir`'s results.jsonl, and the demo's loss curves found there, into
/// the folder `docs`; returns the report's path.
fn report_into(dir: &Path, docs: &Path) -> Result<PathBuf, String> {
    let results = read_results(&dir.join("results.jsonl"))?;
    let target = docs.join("benchmarks-gpu.md");
    std::fs::write(&target, report_text(&results)?)
        .map_err(|e| format!("{}: {e}", target.display()))?;
    for run in ["nanogpt-cpu", "denseformer-cpu"] {
        let plot = dir.join(format!("demo-{run}-loss.png"));
        if plot.exists() {
            let to = docs.join(format!("gpu-{run}-loss.png"));
            std::fs::copy(&plot, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results as `benches/gpu/run.sh` writes them.
    const RESULTS: &str = r#"{"check": "machine", "gpu": "NVIDIA H200", "torch_lib": "/opt/t"}
{"check": "step", "name": "test-strata-kernels-cuda", "rc": 0, "seconds": 4}
{"check": "step", "name": "test-strata-tensor-strata_tensor", "rc": 101, "seconds": 2}
{"check": "bandwidth", "device": "cuda", "dtype": "f32", "layers": 13, "shape": "8x1024x1024", "path": "copy", "ms": 1.0, "gb_s": 3000.0, "vs_copy": 1.0}
{"check": "bandwidth", "device": "cuda", "dtype": "f32", "layers": 13, "shape": "8x1024x1024", "path": "no_grad", "ms": 0.6, "gb_s": 2700.0, "vs_copy": 0.9}
{"check": "bandwidth", "device": "cuda", "dtype": "bf16", "layers": 13, "shape": "8x1024x1024", "path": "no_grad", "ms": 0.4, "gb_s": 2400.0, "vs_copy": 0.8}
{"check": "dwa", "layers": 12, "width": 768, "dwa": "none", "device": "cuda", "params": 1, "ms_per_step": 100.0, "peak_mib": 2000.0, "before_mib": 500.0}
{"check": "dwa", "layers": 12, "width": 768, "dwa": "4x5", "device": "cuda", "params": 1, "ms_per_step": 104.0, "peak_mib": 2100.0, "before_mib": 500.0}
{"check": "dwa", "layers": 12, "width": 768, "dwa": "4x5", "device": "cuda", "params": 1, "ms_per_step": 110.0, "peak_mib": 2100.0, "before_mib": 500.0}
{"check": "dwa", "layers": 12, "width": 768, "dwa": "none", "device": "cuda", "params": 1, "ms_per_step": 100.0, "peak_mib": 2000.0, "before_mib": 500.0}
{"check": "optimizer", "config": "configs/modern-gpu.toml", "optimizer": "Muon", "device": "cuda", "params": 10700000, "batch": 64, "forward_backward_ms": 20.5, "clip_ms": 0.4, "update_ms": 3.1, "optimizer_share": 0.1458}
{"check": "demo", "name": "nanogpt-cpu", "variant": "gpt", "params": {"total": 800000}, "final_val_loss": 1.91, "wall_s": 30.0, "tokens_per_sec": 90000.0, "ms_per_iter": 8.0, "peak_device_mib": 120.0, "peak_rss_mib": 900.0}
"#;

    fn results() -> Vec<Value> {
        let dir = tempfile_dir("good");
        let path = dir.join("results.jsonl");
        std::fs::write(&path, RESULTS).unwrap();
        let results = read_results(&path).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        results
    }

    /// A fresh folder per call: tests run concurrently in one process, so the pid alone
    /// would let one test delete the folder another is reading.
    fn tempfile_dir(tag: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "strata-gpu-report-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_report_states_every_figure_and_verdict() {
        let text = report_text(&results()).unwrap();
        assert!(text.contains("(NVIDIA H200)"), "{text}");
        assert!(
            text.contains("| test-strata-kernels-cuda | 0 (passed) | 4 |"),
            "{text}"
        );
        assert!(text.contains("| 101 (**failed**) |"), "{text}");
        assert!(
            text.contains("| f32 | no_grad | 0.600 | 2700.0 | 0.900 |"),
            "{text}"
        );
        assert!(
            text.contains("| f32 no_grad >= 0.85x copy | 0.900x | met |"),
            "{text}"
        );
        assert!(
            text.contains("| bf16 no_grad >= 0.85x copy | 0.800x | **not met** |"),
            "{text}"
        );
        // The median of the two 4x5 rounds (107 ms) over the baseline's 100 ms.
        assert!(
            text.contains("| 12 layers, 4x5: step time <= 1.05x | 1.070x | **not met** |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| nanogpt-cpu | gpt | 800000 | 1.9100 | 30.0 | 90000 | 8.00 | 120 | 900 |"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_report_gives_the_optimizers_share_on_the_device() {
        let text = report_text(&results()).unwrap();
        assert!(
            text.contains(
                "| `configs/modern-gpu.toml` | Muon | 10700000 | 64 | 20.50 | 0.40 | 3.10 | 14.6% |"
            ),
            "{text}"
        );
        // The heading and the command start their own lines (no indentation: not a code block).
        assert!(
            text.contains(
                "\n## The optimizer's share of a training step\n\n`optimizer_share --device cuda "
            ),
            "{text}"
        );
        assert!(!report_text(&[]).unwrap().contains("optimizer's share"));
    }

    #[test]
    fn bad_result_lines_name_the_file_and_line() {
        let dir = tempfile_dir("bad");
        let path = dir.join("results.jsonl");
        std::fs::write(&path, "{\"check\": \"step\"}\nnot json\n").unwrap();
        let err = read_results(&path).unwrap_err();
        assert!(err.contains("results.jsonl:2: not a JSON line"), "{err}");
        std::fs::write(&path, "{\"gpu\": \"x\"}\n").unwrap();
        let err = read_results(&path).unwrap_err();
        assert!(err.contains("results.jsonl:1: no `check` field"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(report(&[]).is_err());
    }

    #[test]
    fn gpu_report_writes_the_report_and_the_loss_curves_into_docs() {
        let dir = tempfile_dir("run");
        std::fs::write(dir.join("results.jsonl"), RESULTS).unwrap();
        std::fs::write(dir.join("demo-nanogpt-cpu-loss.png"), b"png").unwrap();
        let docs = dir.join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        let target = report_into(&dir, &docs).unwrap();
        assert_eq!(target, docs.join("benchmarks-gpu.md"));
        let text = std::fs::read_to_string(&target).unwrap();
        assert_eq!(text, report_text(&results()).unwrap());
        assert_eq!(
            std::fs::read(docs.join("gpu-nanogpt-cpu-loss.png")).unwrap(),
            b"png"
        );
        assert!(!docs.join("gpu-denseformer-cpu-loss.png").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
