//! `cargo xtask bench`: the criterion benches, and the `nanogpt-cpu.toml` training run timed
//! against a same-machine PyTorch baseline, with every figure written to docs/benchmarks.md.

use crate::dwa_bench::{self, DwaRun};
use crate::plan::{Built, Child, Program, Step};
use crate::run::{self, Failure, workspace_root};
use crate::torch_env;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One timed training process.
#[derive(Clone, Debug)]
struct Measured {
    /// `strata` or `pytorch`.
    who: &'static str,
    /// Process wall time, start to exit, in seconds.
    wall_s: f64,
    /// Peak resident memory of the process in MiB.
    peak_mib: f64,
    /// Final validation loss.
    val_loss: f64,
    /// Milliseconds per optimizer step.
    ms_per_iter: f64,
    /// Training tokens per second.
    tokens_per_sec: f64,
}

/// Options of `cargo xtask bench`.
struct Options {
    rounds: usize,
    criterion: bool,
    training: bool,
    dwa: bool,
    quick: bool,
    /// Everything after `--`, passed to `cargo bench -p strata-benches`.
    cargo_bench: Vec<String>,
}

/// Parses the bench options.
fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        rounds: 2,
        criterion: true,
        training: true,
        dwa: true,
        quick: false,
        cargo_bench: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                o.quick = true;
                o.rounds = 1;
            }
            "--skip-criterion" => o.criterion = false,
            "--skip-training" => o.training = false,
            "--skip-dwa" => o.dwa = false,
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| n >= 1)
                    .ok_or("--rounds needs a number >= 1")?;
            }
            "--" => {
                o.cargo_bench = it.by_ref().cloned().collect();
            }
            other => return Err(format!("unknown bench option `{other}`")),
        }
    }
    Ok(o)
}

/// Cargo's target-selection flags: with none of them, `cargo bench` also runs the library's
/// and the binaries' libtest harnesses, which reject criterion's options (`--quick`).
const TARGET_FLAGS: [&str; 10] = [
    "--lib",
    "--bin",
    "--bins",
    "--example",
    "--examples",
    "--test",
    "--tests",
    "--bench",
    "--benches",
    "--all-targets",
];

/// True when `passed` (cargo's part, before its own `--`) selects targets itself.
fn selects_targets(passed: &[String]) -> bool {
    passed.iter().take_while(|a| *a != "--").any(|a| {
        TARGET_FLAGS
            .iter()
            .any(|flag| a == flag || a.starts_with(&format!("{flag}=")))
    })
}

/// The `cargo bench` arguments: the benches package, only its criterion bench targets (`--bench
/// '*'`, unless the passed-through arguments select targets themselves), the passed-through
/// arguments, and with `quick` criterion's own `--quick` (after a `--` of their own, added when
/// they have none).
fn cargo_bench_args(quick: bool, passed: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["bench", "-p", "strata-benches"].map(String::from).into();
    if !selects_targets(passed) {
        args.extend(["--bench", "*"].map(String::from));
    }
    args.extend(passed.iter().cloned());
    if quick {
        if !passed.iter().any(|a| a == "--") {
            args.push("--".to_owned());
        }
        args.push("--quick".to_owned());
    }
    args
}

/// Peak resident memory (VmHWM) of a running process in MiB, if readable.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `cmd` to completion, timing it and sampling its peak memory; returns its stdout.
fn timed(mut cmd: std::process::Command, what: &str) -> Result<(f64, f64, String), String> {
    eprintln!("xtask: {what}");
    let out_path = std::env::temp_dir().join(format!("xtask-bench-{}.out", std::process::id()));
    let out_file = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut child = cmd
        .stdout(out_file)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(mib) = peak_rss_mib(child.id()) {
            peak = peak.max(mib);
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed().as_secs_f64();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !status.success() {
        return Err(format!("{what}: failed ({status})"));
    }
    Ok((wall, peak, stdout))
}

/// The last JSON object printed by a process.
pub(crate) fn last_json(stdout: &str) -> Result<Value, String> {
    let start = stdout
        .find('{')
        .ok_or("the process printed no JSON summary")?;
    serde_json::from_str(stdout[start..].trim()).map_err(|e| format!("bad JSON summary: {e}"))
}

/// A number field of a JSON object, or NaN when absent.
pub(crate) fn number(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Runs a training process that prints a JSON summary, and measures it.
fn measure(
    who: &'static str,
    cmd: std::process::Command,
    round: usize,
) -> Result<Measured, String> {
    let what = format!("{who} nanogpt-cpu, round {round}");
    let (wall_s, peak_mib, stdout) = timed(cmd, &what)?;
    let v = last_json(&stdout)?;
    Ok(Measured {
        who,
        wall_s,
        peak_mib,
        val_loss: number(&v, "final_val_loss"),
        ms_per_iter: number(&v, "ms_per_iter"),
        tokens_per_sec: number(&v, "tokens_per_sec"),
    })
}

/// One training run of the comparison: round, `strata` or `pytorch`, and the child.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TrainingRun {
    /// The round, from 1.
    round: usize,
    /// `strata` or `pytorch`.
    who: &'static str,
    /// The process.
    child: Child,
}

/// The training runs of `rounds` rounds: strata's `nanogpt-cpu.toml`, then the PyTorch
/// reference implementation of the same recipe, alternating.
fn training_runs(rounds: usize) -> Vec<TrainingRun> {
    (1..=rounds)
        .flat_map(|round| {
            let out = format!("target/bench/strata-{round}");
            let strata = Child::release(
                "strata-cli",
                "strata",
                &[
                    "train",
                    "--config",
                    "configs/nanogpt-cpu.toml",
                    "--quiet",
                    "--overwrite",
                    "--out",
                    &out,
                ],
            );
            let pytorch = Child::python(&[
                "benches/reference/nanogpt_recipe.py",
                "data/tinyshakespeare.txt",
            ]);
            [
                TrainingRun {
                    round,
                    who: "strata",
                    child: strata,
                },
                TrainingRun {
                    round,
                    who: "pytorch",
                    child: pytorch,
                },
            ]
        })
        .collect()
}

/// The median of `values`.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// The markdown section for the training comparison.
fn training_section(runs: &[Measured]) -> String {
    let mut s = String::from(
        "## nanoGPT's CPU recipe: strata vs PyTorch on the same machine\n\n\
         Command: `cargo xtask bench` (runs alternate, strata first). strata: `strata train \
         --config configs/nanogpt-cpu.toml`. PyTorch: `benches/reference/nanogpt_recipe.py`, an \
         eager PyTorch implementation of the same recipe with nanoGPT's model, init, optimizer, \
         schedule and evaluation protocol (20 random batches per split), using the same torch \
         2.11.0 that strata links. Wall time is the whole process, start to exit, as seen from \
         outside; peak memory is the process's VmHWM.\n\n\
         | run | wall s | final val loss | ms/iter | tokens/s | peak MiB |\n|---|---|---|---|---|---|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        s += &format!(
            "| {} #{} | {:.1} | {:.4} | {:.1} | {:.0} | {:.0} |\n",
            r.who,
            i / 2 + 1,
            r.wall_s,
            r.val_loss,
            r.ms_per_iter,
            r.tokens_per_sec,
            r.peak_mib
        );
    }
    let pick = |who: &str, f: fn(&Measured) -> f64| {
        median(runs.iter().filter(|r| r.who == who).map(f).collect())
    };
    let (sw, pw) = (pick("strata", |r| r.wall_s), pick("pytorch", |r| r.wall_s));
    let (sm, pm) = (
        pick("strata", |r| r.peak_mib),
        pick("pytorch", |r| r.peak_mib),
    );
    let (sl, pl) = (
        pick("strata", |r| r.val_loss),
        pick("pytorch", |r| r.val_loss),
    );
    let (si, pi) = (
        pick("strata", |r| r.ms_per_iter),
        pick("pytorch", |r| r.ms_per_iter),
    );
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    s += &format!(
        "\nMedians: strata {sw:.1} s, val {sl:.4}, {si:.1} ms/iter, {sm:.0} MiB; PyTorch {pw:.1} s, \
         val {pl:.4}, {pi:.1} ms/iter, {pm:.0} MiB.\n\n\
         | target | measured | |\n|---|---|---|\n\
         | val loss <= 1.89 | {sl:.4} | {} |\n\
         | wall <= 0.75x PyTorch | {:.2}x | {} |\n\
         | peak memory <= 0.5x PyTorch | {:.2}x | {} |\n",
        verdict(sl <= 1.89),
        sw / pw,
        verdict(sw <= 0.75 * pw),
        sm / pm,
        verdict(sm <= 0.5 * pm),
    );
    s
}

/// One criterion benchmark's result.
#[derive(Clone, Debug, PartialEq)]
struct CriterionResult {
    /// The benchmark's folder under target/criterion, e.g. `weighted_sum/copy_13-layers`.
    name: String,
    /// Mean time per iteration in nanoseconds.
    mean_ns: f64,
    /// Bytes per iteration the benchmark declared as its throughput, if any.
    bytes: Option<f64>,
}

/// A JSON file under a criterion result folder.
fn read_json(path: &Path) -> Option<Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
}

/// Every benchmark's result under target/criterion.
fn criterion_results() -> Vec<CriterionResult> {
    let root = workspace_root().join("target").join("criterion");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let mean = read_json(&path.join("estimates.json"))
                    .and_then(|v| v.pointer("/mean/point_estimate").and_then(Value::as_f64));
                let bytes = read_json(&path.join("benchmark.json"))
                    .and_then(|v| v.pointer("/throughput/Bytes").and_then(Value::as_f64));
                let name = dir
                    .strip_prefix(&root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if let Some(mean_ns) = mean {
                    out.push(CriterionResult {
                        name,
                        mean_ns,
                        bytes,
                    });
                }
            } else if path.file_name().is_none_or(|n| n != "report") {
                stack.push(path);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The markdown section for the criterion benches: time, and for benchmarks that declare the
/// bytes they move, bandwidth and its ratio to the copy of the same group.
fn criterion_section(results: &[CriterionResult]) -> String {
    let mut s = String::from(
        "## Criterion benches\n\nCommand: `cargo xtask bench` (`cargo bench -p strata-benches --bench '*'`). \
         `train_step_nanogpt_cpu`: one optimizer step (forward, backward, clip, AdamW) of the \
         nanogpt-cpu model on a 12 x 64 batch, with one data-parallel worker per core or with \
         libtorch's own threading. `weighted_sum`: each path of the weighted sum over 13 stacked \
         outputs of 12 x 256 x 768 f32 (123 MB, beyond the last-level cache): the reference loop, \
         the fused matrix product and the rayon CPU kernel (both writing into a preallocated \
         output), and `stack_forward`, the forward pass of the layer stack's autograd function \
         that training runs; against a copy of the whole stack into a second buffer. \
         Bandwidth is bytes read plus bytes written per second.\n\n\
         | benchmark | mean | bandwidth | vs copy |\n|---|---|---|---|\n",
    );
    let gbps = |r: &CriterionResult| r.bytes.map(|b| b / r.mean_ns);
    for r in results {
        let group = r.name.split('/').next().unwrap_or_default();
        let copy = results
            .iter()
            .find(|c| c.name.starts_with(&format!("{group}/copy")))
            .and_then(gbps);
        let (bandwidth, ratio) = match (gbps(r), copy) {
            (Some(bw), Some(copy)) => (format!("{bw:.1} GB/s"), format!("{:.2}x", bw / copy)),
            (Some(bw), None) => (format!("{bw:.1} GB/s"), String::new()),
            _ => (String::new(), String::new()),
        };
        s += &format!(
            "| {} | {:.3} ms | {bandwidth} | {ratio} |\n",
            r.name,
            r.mean_ns / 1e6
        );
    }
    s
}

/// A description of this machine.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<f64>().ok())
                })
        })
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB RAM", kib / 1024.0 / 1024.0)
        });
    format!("{model}, {cores} cores{mem}")
}

/// Replaces (or appends) the section of `doc` that starts with `heading`.
fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    match doc.find(heading) {
        Some(start) => {
            let after = &doc[start + heading.len()..];
            let end = after
                .find("\n## ")
                .map_or(doc.len(), |i| start + heading.len() + i + 1);
            format!("{}{}{}", &doc[..start], section, &doc[end..])
        }
        None => format!("{}\n{}", doc.trim_end(), section),
    }
}

/// What `cargo xtask bench` runs, decided from its options alone.
#[derive(Debug)]
struct BenchPlan {
    /// `cargo bench ...`, unless `--skip-criterion`.
    criterion: Option<Child>,
    /// The training comparison, empty with `--skip-training`.
    training: Vec<TrainingRun>,
    /// DenseFormer's overhead runs, empty with `--skip-dwa`.
    dwa: Vec<DwaRun>,
}

/// The plan for `o`.
fn bench_plan(o: &Options) -> BenchPlan {
    BenchPlan {
        criterion: o
            .criterion
            .then(|| Child::cargo(&cargo_bench_args(o.quick, &o.cargo_bench))),
        training: if o.training {
            training_runs(o.rounds)
        } else {
            Vec::new()
        },
        dwa: if o.dwa {
            dwa_bench::runs(o.quick, o.rounds)
        } else {
            Vec::new()
        },
    }
}

/// The plan of `cargo xtask bench [options]`, step by step.
pub fn plan(args: &[String]) -> Result<Vec<Step>, Failure> {
    let p = bench_plan(&options(args)?);
    let mut steps = Vec::new();
    if let Some(child) = &p.criterion {
        steps.push(Step::Run(child.clone()));
        steps.push(Step::Own(
            "read target/criterion into the section \"Criterion benches\"".to_owned(),
        ));
    }
    if !p.training.is_empty() {
        steps.push(Step::Build {
            package: "strata-cli",
            bin: "strata",
        });
        steps.extend(p.training.iter().map(|r| Step::Run(r.child.clone())));
        steps.push(Step::Own(
            "time both and write the section \"nanoGPT's CPU recipe\" (PyTorch runs are \
             skipped when LIBTORCH is set)"
                .to_owned(),
        ));
    }
    if !p.dwa.is_empty() {
        steps.push(Step::Build {
            package: "strata-benches",
            bin: "dwa_overhead",
        });
        steps.extend(p.dwa.iter().map(|r| Step::Run(r.child.clone())));
        steps.push(Step::Own(
            "take medians over rounds into the section \"DenseFormer overhead\"".to_owned(),
        ));
    }
    steps.push(Step::Own("write docs/benchmarks.md".to_owned()));
    Ok(steps)
}

/// `cargo xtask bench`.
pub fn bench(args: &[String]) -> Result<(), Failure> {
    let p = bench_plan(&options(args)?);
    let env = torch_env::ensure()?;
    let mut built = Built::new();
    let doc_path = workspace_root().join("docs").join("benchmarks.md");
    let mut doc =
        std::fs::read_to_string(&doc_path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let stamp = format!("\nMachine: {}.\n\n", machine());
    if let Some(child) = &p.criterion {
        run::step(child.command(&env, &built)?, &child.line())?;
        let section = criterion_section(&criterion_results()) + &stamp;
        doc = replace_section(&doc, "## Criterion benches", &section);
    }
    if !p.training.is_empty() {
        built.insert("strata", run::build_cli(&env)?);
        let mut runs = Vec::new();
        for r in &p.training {
            if r.child.program == Program::Python && env.venv.is_none() {
                eprintln!("xtask: LIBTORCH is set, so there is no PyTorch to compare with");
                continue;
            }
            runs.push(measure(r.who, r.child.command(&env, &built)?, r.round)?);
        }
        let section = training_section(&runs) + &stamp;
        doc = replace_section(&doc, "## nanoGPT's CPU recipe", &section);
    }
    if !p.dwa.is_empty() {
        built.insert(
            "dwa_overhead",
            run::build_release_bin(&env, "strata-benches", "dwa_overhead")?,
        );
        let section = dwa_bench::section(&dwa_bench::measure(&env, &built, &p.dwa)?) + &stamp;
        doc = replace_section(&doc, "## DenseFormer overhead", &section);
    }
    std::fs::create_dir_all(doc_path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| e.to_string())?;
    std::fs::write(&doc_path, doc).map_err(|e| format!("{}: {e}", doc_path.display()))?;
    eprintln!("xtask: wrote {}", doc_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let doc = "# B\n\nintro\n## A\nold a\n## C\nkeep c\n";
        let new = replace_section(doc, "## A", "## A\nnew a\n");
        assert_eq!(new, "# B\n\nintro\n## A\nnew a\n## C\nkeep c\n");
        let last = replace_section(&new, "## C", "## C\nnew c\n");
        assert_eq!(last, "# B\n\nintro\n## A\nnew a\n## C\nnew c\n");
        let added = replace_section("# B\n", "## D", "## D\nd\n");
        assert_eq!(added, "# B\n## D\nd\n");
    }

    #[test]
    fn criterion_rows_show_bandwidth_against_their_groups_copy() {
        let r = |name: &str, ms: f64, bytes: Option<f64>| CriterionResult {
            name: name.to_owned(),
            mean_ns: ms * 1e6,
            bytes,
        };
        let text = criterion_section(&[
            r("weighted_sum/copy_13-layers", 2.0, Some(20e6)),
            r("weighted_sum/fused_13-layers", 1.0, Some(8e6)),
            r("train_step/x", 3.0, None),
        ]);
        assert!(
            text.contains("| weighted_sum/copy_13-layers | 2.000 ms | 10.0 GB/s | 1.00x |"),
            "{text}"
        );
        assert!(
            text.contains("| weighted_sum/fused_13-layers | 1.000 ms | 8.0 GB/s | 0.80x |"),
            "{text}"
        );
        assert!(text.contains("| train_step/x | 3.000 ms |  |  |"), "{text}");
    }

    #[test]
    fn medians_and_options() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let o = options(&["--rounds".into(), "3".into(), "--skip-criterion".into()]).unwrap();
        assert_eq!((o.rounds, o.criterion, o.training), (3, false, true));
        assert!(options(&["--rounds".into(), "0".into()]).is_err());
        assert!(options(&["--bogus".into()]).is_err());
        let o = options(&["--quick".into(), "--".into(), "weighted".into()]).unwrap();
        assert_eq!(o.cargo_bench, ["weighted"]);
        assert_eq!(
            cargo_bench_args(o.quick, &o.cargo_bench),
            [
                "bench",
                "-p",
                "strata-benches",
                "--bench",
                "*",
                "weighted",
                "--",
                "--quick"
            ]
        );
        let passed = [
            "--bench".into(),
            "weighted_sum".into(),
            "--".into(),
            "sum".into(),
        ];
        assert_eq!(
            cargo_bench_args(true, &passed),
            [
                "bench",
                "-p",
                "strata-benches",
                "--bench",
                "weighted_sum",
                "--",
                "sum",
                "--quick"
            ]
        );
        assert_eq!(
            cargo_bench_args(false, &[]),
            ["bench", "-p", "strata-benches", "--bench", "*"]
        );
        // Target flags after the passed arguments' own `--` are the harness's, not cargo's.
        let filter = ["--".into(), "--bench".into()];
        assert!(!selects_targets(&filter));
        assert!(selects_targets(&["--benches".into()]));
        assert!(selects_targets(&["--bench=weighted_sum".into()]));
        assert!(!selects_targets(&["--benchmark-ish".into()]));
    }

    /// The bug of `cargo xtask bench --quick`: `cargo bench -p strata-benches -- --quick` also
    /// ran the library's libtest harness, which refused `--quick` ("Unrecognized option")
    /// before criterion ran. This builds the targets that the quick invocation's selection flags
    /// pick and hands each harness the arguments cargo bench would, plus `--list`, which lists
    /// the benchmarks without running them. The build is unoptimised (the `test` profile of this
    /// test build) and resolves features for the whole workspace (`--workspace` for `-p
    /// strata-benches`; only strata-benches has bench targets), as `cargo test --workspace`
    /// did, so that no dependency is rebuilt: only the benches and their package's binaries.
    #[test]
    fn every_harness_of_the_quick_bench_accepts_its_arguments() {
        assert!(
            std::env::var_os("LIBTORCH").is_some()
                || std::env::var_os("LIBTORCH_USE_PYTORCH").is_some(),
            "building the benches needs libtorch: run the tests through `cargo xtask test`, or \
             after `eval \"$(cargo xtask env)\"`"
        );
        let args = cargo_bench_args(true, &[]);
        let split = args
            .iter()
            .position(|a| a == "--")
            .expect("harness arguments");
        let (cargo_args, harness_args) = (&args[..split], &args[split + 1..]);
        assert_eq!(harness_args, ["--quick"]);
        assert_eq!(cargo_args[..3], ["bench", "-p", "strata-benches"]);
        let cargo_args: Vec<&str> = std::iter::once("bench")
            .chain(std::iter::once("--workspace"))
            .chain(cargo_args[3..].iter().map(String::as_str))
            .collect();
        let _spawning = crate::SPAWNING.lock();
        let built = std::process::Command::new(run::cargo_program())
            .current_dir(workspace_root())
            .args(&cargo_args)
            .args(["--profile", "test", "--no-run", "--message-format=json"])
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let harnesses = run::test_executables(&String::from_utf8_lossy(&built.stdout));
        let names: Vec<&str> = harnesses.iter().map(|(name, _)| name.as_str()).collect();
        for bench in ["strata-benches-train_step", "strata-benches-weighted_sum"] {
            assert!(names.contains(&bench), "{bench} is not among {names:?}");
        }
        for (name, exe) in &harnesses {
            // cargo bench appends `--bench` after the user's arguments.
            let out = std::process::Command::new(exe)
                .args(harness_args)
                .args(["--list", "--bench"])
                .output()
                .unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(out.status.success(), "{name}: {stderr}");
            assert!(stdout.contains(": benchmark"), "{name} listed {stdout}");
        }
    }

    #[test]
    fn the_training_table_states_each_target() {
        let run = |who, wall_s, peak_mib, val_loss| Measured {
            who,
            wall_s,
            peak_mib,
            val_loss,
            ms_per_iter: 1.0,
            tokens_per_sec: 1.0,
        };
        let text = training_section(&[
            run("strata", 60.0, 200.0, 1.88),
            run("pytorch", 100.0, 700.0, 1.89),
        ]);
        assert!(
            text.contains("| val loss <= 1.89 | 1.8800 | met |"),
            "{text}"
        );
        assert!(
            text.contains("| wall <= 0.75x PyTorch | 0.60x | met |"),
            "{text}"
        );
        assert!(
            text.contains("| peak memory <= 0.5x PyTorch | 0.29x | met |"),
            "{text}"
        );
        let slow = training_section(&[
            run("strata", 90.0, 400.0, 1.95),
            run("pytorch", 100.0, 700.0, 1.89),
        ]);
        assert!(
            slow.contains("| wall <= 0.75x PyTorch | 0.90x | **not met** |"),
            "{slow}"
        );
        assert!(slow.contains("1.9500 | **not met**"), "{slow}");
    }
}
