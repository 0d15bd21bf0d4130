//! Every documented flag of every `cargo xtask` command, run through the real binary.
//!
//! Running the commands for real takes minutes to hours (release builds, the whole test suite,
//! training runs), so each flag is run with `--dry-run`, which prints the exact command lines
//! that the command would start, built by the same code that starts them; the tests compare
//! those lines with what the flag promises. Commands that are cheap for real (`help`, `env`
//! with a stand-in libtorch, refusals) also run for real here; the criterion harnesses of
//! `bench --quick` are run by a test in `src/bench.rs`.

use std::path::PathBuf;
use std::process::Command;

/// What a run of xtask printed.
struct Output {
    /// Whether it exited with 0.
    ok: bool,
    /// Its stdout.
    stdout: String,
    /// Its stderr.
    stderr: String,
}

/// Runs the xtask binary with `args` (and `env` on top of this process's environment).
fn xtask_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .envs(env.iter().copied())
        .output()
        .expect("xtask starts");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the xtask binary with `args`.
fn xtask(args: &[&str]) -> Output {
    xtask_with(args, &[])
}

/// The plan `cargo xtask --dry-run <args>` prints, one step per line. `LIBTORCH` points
/// nowhere, which proves that a dry run neither looks for libtorch nor installs it.
fn dry(args: &[&str]) -> Vec<String> {
    let mut all = vec!["--dry-run"];
    all.extend_from_slice(args);
    let out = xtask_with(&all, &[("LIBTORCH", "/nowhere/libtorch")]);
    assert!(out.ok, "xtask {all:?} failed: {}", out.stderr);
    out.stdout.lines().map(str::to_owned).collect()
}

/// The refusal that `cargo xtask --dry-run <args>` prints (it must fail).
fn refused(args: &[&str]) -> String {
    let mut all = vec!["--dry-run"];
    all.extend_from_slice(args);
    let out = xtask(&all);
    assert!(
        !out.ok,
        "xtask {all:?} should fail but printed {}",
        out.stdout
    );
    out.stderr
}

/// The lines that start `program`.
fn runs<'a>(plan: &'a [String], program: &str) -> Vec<&'a str> {
    plan.iter()
        .map(String::as_str)
        .filter(|l| l.split(' ').find(|w| !w.contains('=')) == Some(program))
        .collect()
}

const BUILD_STRATA: &str = "cargo build --release -p strata-cli --bin strata";
const BUILD_DWA: &str = "cargo build --release -p strata-benches --bin dwa_overhead";

#[test]
fn help_documents_exactly_the_flags_tested_here() {
    let out = xtask(&["help"]);
    assert!(out.ok);
    for command in [
        "test",
        "demo",
        "strata",
        "bench",
        "gpu-kit",
        "gpu-report DIR",
        "tch-lints",
        "env",
    ] {
        assert!(out.stdout.contains(&format!("\n  {command}")), "{command}");
    }
    // Every option the usage text offers (`[--flag ...]` in a synopsis). A new one fails here
    // until it has a test below.
    let mut flags: Vec<&str> = out
        .stdout
        .split('[')
        .skip(1)
        .filter_map(|w| w.split([' ', ']']).next())
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    flags.sort_unstable();
    flags.dedup();
    assert_eq!(
        flags,
        [
            "--check",
            "--dry-run",
            "--quick",
            "--rounds",
            "--skip-criterion",
            "--skip-dwa",
            "--skip-training"
        ]
    );
    assert_eq!(xtask(&[]).stdout, out.stdout, "no command is help");
    assert_eq!(dry(&["help"]), ["(xtask) print the usage text"]);
    assert!(refused(&["frobnicate"]).contains("unknown command `frobnicate`"));
}

#[test]
fn test_runs_fmt_clippy_the_workspace_tests_the_build_without_cpp_and_parity() {
    assert_eq!(
        dry(&["test"]),
        [
            "cargo fmt --all -- --check",
            "cargo clippy --workspace --all-targets -- -D warnings",
            "cargo test --workspace",
            "cargo clippy -p strata-kernels -p strata-core --no-default-features --all-targets -- \
             -D warnings",
            "cargo test -p strata-kernels -p strata-core --no-default-features",
            "python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check transformers==4.57.6 \
             safetensors==0.8.0",
            "cargo build -p strata-cli --bin strata",
            "python3 xtask/parity/parity.py {strata} target/parity",
        ]
    );
}

#[test]
fn test_quick_runs_the_tests_only() {
    assert_eq!(dry(&["test", "--quick"]), ["cargo test --workspace"]);
}

#[test]
fn test_passes_its_arguments_after_the_separator_to_cargo_test() {
    assert_eq!(
        dry(&[
            "test",
            "--quick",
            "--",
            "-p",
            "strata-core",
            "--",
            "--nocapture"
        ]),
        ["cargo test -p strata-core -- --nocapture"]
    );
    let all = dry(&["test", "--", "--release"]);
    assert_eq!(all.len(), 8, "{all:?}");
    assert_eq!(all[2], "cargo test --workspace --release");
    let err = refused(&["test", "-p", "strata-core"]);
    assert!(err.contains("unknown test option `-p`"), "{err}");
}

#[test]
fn demo_builds_the_cli_and_passes_its_arguments_to_strata_demo() {
    assert_eq!(dry(&["demo"]), [BUILD_STRATA, "strata demo"]);
    assert_eq!(
        dry(&["demo", "--device", "cuda", "--out", "runs/d"]),
        [BUILD_STRATA, "strata demo --device cuda --out runs/d"]
    );
}

#[test]
fn strata_builds_the_cli_and_runs_it_with_its_arguments() {
    assert_eq!(
        dry(&[
            "strata",
            "train",
            "--config",
            "configs/nanogpt-cpu.toml",
            "--set",
            "train.max_iters=5"
        ]),
        [
            BUILD_STRATA,
            "strata train --config configs/nanogpt-cpu.toml --set train.max_iters=5"
        ]
    );
    assert_eq!(dry(&["strata"]), [BUILD_STRATA, "strata"]);
}

/// The `dwa_overhead` runs of a bench plan as (layers, variant, path): the variant is the
/// value of `--dwa` or of `--depth`.
fn dwa_runs(plan: &[String]) -> Vec<(String, String, String)> {
    runs(plan, "dwa_overhead")
        .into_iter()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let after = |flag: &str| {
                let i = words.iter().position(|w| *w == flag).expect(flag);
                words[i + 1].to_owned()
            };
            let path = after("--kernel");
            assert!(line.ends_with("--width 256 --steps 10"), "{line}");
            let variant = if words.contains(&"--depth") {
                after("--depth")
            } else {
                after("--dwa")
            };
            (after("--layers"), variant, path)
        })
        .collect()
}

#[test]
fn bench_runs_criterion_training_and_the_dwa_overhead_by_default() {
    let plan = dry(&["bench"]);
    assert_eq!(
        runs(&plan, "cargo"),
        [
            "cargo bench -p strata-benches --bench *",
            BUILD_STRATA,
            BUILD_DWA
        ]
    );
    let training = runs(&plan, "strata");
    assert_eq!(
        training,
        [
            "strata train --config configs/nanogpt-cpu.toml --quiet --overwrite --out \
             target/bench/strata-1",
            "strata train --config configs/nanogpt-cpu.toml --quiet --overwrite --out \
             target/bench/strata-2",
        ]
    );
    assert_eq!(
        runs(&plan, "python3"),
        ["python3 benches/reference/nanogpt_recipe.py data/tinyshakespeare.txt"; 2]
    );
    // Two rounds of 3 depths x 4 DWA variants and, at 12 layers, the 10 depth methods; the
    // second round in reverse order.
    let dwa = dwa_runs(&plan);
    assert_eq!(dwa.len(), 2 * (3 * 4 + 10));
    let variant = |l: &str, d: &str, p: &str| (l.to_owned(), d.to_owned(), p.to_owned());
    assert_eq!(dwa[0], variant("12", "none", "auto"));
    assert_eq!(dwa[3], variant("12", "4x5", "auto"));
    assert_eq!(dwa[4], variant("12", "vres", "auto"));
    assert_eq!(dwa[12], variant("12", "attnres-b2", "auto"));
    assert_eq!(dwa[13], variant("12", "mudd", "auto"));
    assert_eq!(dwa[21], variant("48", "4x5", "auto"));
    assert_eq!(dwa[22], variant("12", "mudd", "auto"));
    assert_eq!(dwa[32], variant("12", "4x5", "auto"));
    assert_eq!(dwa[33], variant("12", "1x1", "reference"));
    assert_eq!(dwa[35], variant("12", "none", "auto"));
    assert_eq!(plan.last().unwrap(), "(xtask) write docs/benchmarks.md");
    // Builds come before the runs that need them.
    let at = |line: &str| plan.iter().position(|l| l == line).unwrap();
    assert!(at(BUILD_STRATA) < at(training[0]));
    assert!(
        at(BUILD_DWA)
            < plan
                .iter()
                .position(|l| l.contains("dwa_overhead --"))
                .unwrap()
    );
}

#[test]
fn bench_quick_hands_quick_to_the_criterion_benches_only_and_runs_one_round_at_12_layers() {
    let plan = dry(&["bench", "--quick"]);
    // `--bench *`: the library's and binaries' libtest harnesses would refuse `--quick`.
    assert_eq!(
        runs(&plan, "cargo")[0],
        "cargo bench -p strata-benches --bench * -- --quick"
    );
    assert_eq!(runs(&plan, "strata").len(), 1);
    assert_eq!(runs(&plan, "python3").len(), 1);
    let dwa = dwa_runs(&plan);
    assert_eq!(dwa.len(), 4 + 10);
    assert!(dwa.iter().all(|(layers, _, _)| layers == "12"), "{dwa:?}");
}

#[test]
fn bench_rounds_sets_the_rounds_of_training_and_dwa() {
    let plan = dry(&["bench", "--rounds", "3"]);
    assert_eq!(runs(&plan, "strata").len(), 3);
    assert_eq!(runs(&plan, "python3").len(), 3);
    assert_eq!(dwa_runs(&plan).len(), 3 * (3 * 4 + 10));
    assert!(plan.iter().any(|l| l.ends_with("target/bench/strata-3")));
    // --quick with --rounds: one depth, the rounds asked for.
    assert_eq!(
        dwa_runs(&dry(&["bench", "--quick", "--rounds", "2"])).len(),
        2 * (4 + 10)
    );
    for bad in ["0", "two"] {
        let err = refused(&["bench", "--rounds", bad]);
        assert!(err.contains("--rounds needs a number >= 1"), "{err}");
    }
    assert!(refused(&["bench", "--rounds"]).contains("--rounds needs a number"));
    assert!(refused(&["bench", "--bogus"]).contains("unknown bench option `--bogus`"));
}

#[test]
fn bench_skip_flags_leave_out_their_part() {
    let no_criterion = dry(&["bench", "--skip-criterion"]);
    assert!(!no_criterion.iter().any(|l| l.starts_with("cargo bench")));
    assert!(!no_criterion.iter().any(|l| l.contains("Criterion")));
    assert_eq!(runs(&no_criterion, "strata").len(), 2);

    let no_training = dry(&["bench", "--skip-training"]);
    assert!(runs(&no_training, "strata").is_empty());
    assert!(runs(&no_training, "python3").is_empty());
    assert!(!no_training.iter().any(|l| l == BUILD_STRATA));
    assert_eq!(dwa_runs(&no_training).len(), 2 * (3 * 4 + 10));

    let no_dwa = dry(&["bench", "--skip-dwa"]);
    assert!(dwa_runs(&no_dwa).is_empty());
    assert!(!no_dwa.iter().any(|l| l == BUILD_DWA));
    assert_eq!(runs(&no_dwa, "strata").len(), 2);

    let nothing = dry(&["bench", "--skip-criterion", "--skip-training", "--skip-dwa"]);
    assert_eq!(nothing, ["(xtask) write docs/benchmarks.md"]);
}

#[test]
fn bench_passes_its_arguments_after_the_separator_to_cargo_bench() {
    let only = |args: &[&str]| {
        let mut all = vec!["bench", "--skip-training", "--skip-dwa"];
        all.extend_from_slice(args);
        runs(&dry(&all), "cargo")[0].to_owned()
    };
    // A filter for the criterion harnesses.
    assert_eq!(
        only(&["--", "weighted"]),
        "cargo bench -p strata-benches --bench * weighted"
    );
    // Targets chosen by the caller replace `--bench *`; criterion options follow their `--`.
    assert_eq!(
        only(&[
            "--quick",
            "--",
            "--bench",
            "weighted_sum",
            "--",
            "--save-baseline",
            "b"
        ]),
        "cargo bench -p strata-benches --bench weighted_sum -- --save-baseline b --quick"
    );
}

#[test]
fn gpu_kit_builds_the_binaries_and_the_cuda_tests() {
    assert_eq!(
        dry(&["gpu-kit"]),
        [
            "(xtask) empty .carry/gpu-kit",
            "cargo build --release -p strata-cli --bin strata",
            "cargo build --release -p strata-benches --bin dwa_overhead",
            "cargo build --release -p strata-benches --bin device_bandwidth",
            "cargo build --release -p strata-benches --bin optimizer_share",
            "cargo test --release --no-run -p strata-tensor -p strata-kernels",
            "(xtask) install the binaries in .carry/gpu-kit/bin and the test executables in \
             .carry/gpu-kit/tests without debug info (at most 56 MiB)",
        ]
    );
    assert!(refused(&["gpu-kit", "--quick"]).contains("`gpu-kit` takes no arguments"));
}

#[test]
fn tch_lints_writes_or_checks_clippy_toml() {
    assert_eq!(
        dry(&["tch-lints"]),
        ["(xtask) read tch's sources (cargo metadata) and write clippy.toml"]
    );
    assert_eq!(
        dry(&["tch-lints", "--check"]),
        ["(xtask) read tch's sources (cargo metadata) and compare them with clippy.toml"]
    );
    assert!(refused(&["tch-lints", "--bogus"]).contains("usage: cargo xtask tch-lints [--check]"));
    // For real: the committed file is the one this tch gives.
    let out = xtask(&["tch-lints", "--check"]);
    assert!(out.ok, "{}", out.stderr);
}

#[test]
fn gpu_report_reads_the_results_of_dir() {
    let dir = std::env::temp_dir().join(format!("xtask-gpu-report-{}", std::process::id()));
    let dir_text = dir.display().to_string();
    let plan = dry(&["gpu-report", &dir_text]);
    assert_eq!(
        plan[0],
        format!("(xtask) read {}", dir.join("results.jsonl").display())
    );
    assert_eq!(plan[1], "(xtask) write docs/benchmarks-gpu.md");
    assert!(refused(&["gpu-report"]).contains("usage: cargo xtask gpu-report DIR"));
    assert!(refused(&["gpu-report", "a", "b"]).contains("usage: cargo xtask gpu-report DIR"));
    // For real: a folder without results is refused by name, and nothing is written.
    let out = xtask(&["gpu-report", &dir_text]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("{dir_text}/results.jsonl")),
        "{}",
        out.stderr
    );
}

#[test]
fn env_prints_the_exports_of_the_libtorch_it_finds() {
    assert_eq!(dry(&["env"]).len(), 2);
    assert!(refused(&["env", "--quick"]).contains("`env` takes no arguments"));
    // For real, with a stand-in libtorch (the check reads only these two files).
    let root: PathBuf =
        std::env::temp_dir().join(format!("xtask-env-libtorch-{}", std::process::id()));
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(root.join("lib").join("libtorch_cpu.so"), b"").unwrap();
    std::fs::write(root.join("build-version"), "2.11.0+cpu\n").unwrap();
    let root_text = root.display().to_string();
    let out = xtask_with(
        &["env"],
        &[
            ("LIBTORCH", &root_text),
            ("LIBTORCH_LIB", ""),
            ("LD_LIBRARY_PATH", "/usr/lib"),
            ("RUSTFLAGS", ""),
        ],
    );
    std::fs::remove_dir_all(&root).unwrap();
    assert!(out.ok, "{}", out.stderr);
    let lib = root.join("lib").display().to_string();
    assert!(
        out.stdout
            .contains(&format!("export LD_LIBRARY_PATH='{lib}:/usr/lib'\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "export RUSTFLAGS='-C link-arg=-Wl,-rpath,{lib}'\n"
        )),
        "{}",
        out.stdout
    );
}
