//! `cargo xtask`: strata's driver. It finds or installs libtorch, then builds, tests, runs the
//! demo and the benchmarks with the environment they need, so nobody exports anything by hand.
//!
//! Modules: `torch_env` decides where libtorch comes from and which variables children get,
//! `venv` verifies and creates the cached Python environment, `run` starts children, `plan`
//! turns a command's arguments into the steps it runs (printed by `--dry-run`), and
//! `commands`, `bench` (with `dwa_bench`) and `gpu` are the subcommands.

mod bench;
mod commands;
mod dwa_bench;
mod gpu;
mod plan;
mod run;
mod tch_lints;
mod torch_env;
mod venv;

use run::Failure;
use std::io::Write;
use std::process::ExitCode;

/// The usage text.
const USAGE: &str = "\
usage: cargo xtask [--dry-run] <command> [args]

--dry-run         print the command's steps (the exact command lines of the processes it
                  starts) without finding libtorch or running anything

commands:
  test [--quick] [-- <cargo test args>]
                  cargo fmt --check, cargo clippy -D warnings, then cargo test --workspace
                  (--quick: tests only; e.g. `cargo xtask test --quick -- -p strata-core`)
  demo [args]     build the release CLI and run `strata demo [args]`: nanoGPT's CPU recipe and
                  its DenseFormer twin on Tiny Shakespeare, compared side by side
  strata <args>   build the release CLI and run it, e.g.
                  `cargo xtask strata train --config configs/nanogpt-cpu.toml`
  bench [--quick] [--rounds N] [--skip-criterion] [--skip-training] [--skip-dwa]
        [-- <cargo bench args>]
                  criterion benches (cargo bench -p strata-benches --bench '*'), the nanogpt-cpu
                  training run against a same-machine PyTorch baseline, and DenseFormer's
                  step-time and memory overhead at 12/24/48 layers; figures go to
                  docs/benchmarks.md
  gpu-kit         build the release binaries and CUDA test executables for a GPU machine
                  without cargo into .carry/gpu-kit, run there by benches/gpu/run.sh
                  (see docs/gpu.md)
  gpu-report DIR  write docs/benchmarks-gpu.md from that script's results.jsonl in DIR
  tch-lints [--check]
                  write clippy.toml, the tch methods that panic on a libtorch error (each has
                  an `f_` twin returning Result), which the library crates may not call;
                  --check fails when the committed file is stale
  env             print the shell exports the commands above use:
                  eval \"$(cargo xtask env)\"
  help            this text

libtorch: $LIBTORCH if set, else torch 2.11.0 from PyPI in a virtual environment cached in
$STRATA_CACHE_DIR, else $XDG_CACHE_HOME/strata, else ~/.cache/strata (installed on first use:
about 3.5 GB and a few minutes; needs python3 3.10+ with the venv module).";

/// A test-only lock held by tests that write scripts or start processes: a script being
/// written while another thread forks can fail to execute (ETXTBSY).
#[cfg(test)]
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The refusal of an unknown command.
fn unknown(command: &str) -> Failure {
    format!("unknown command `{command}`\n\n{USAGE}").into()
}

/// True for the spellings of `help`.
fn is_help(command: &str) -> bool {
    matches!(command, "help" | "-h" | "--help")
}

/// The steps of one subcommand, from its arguments alone.
fn plan(command: &str, args: &[String]) -> Result<Vec<plan::Step>, Failure> {
    match command {
        "test" => commands::test_plan(args),
        "demo" => Ok(commands::demo_plan(args)),
        "strata" => Ok(commands::strata_plan(args)),
        "bench" => bench::plan(args),
        "env" => commands::env_plan(args),
        "gpu-kit" => gpu::kit_plan(args),
        "gpu-report" => gpu::report_plan(args),
        "tch-lints" => tch_lints::plan(args),
        help if is_help(help) => Ok(vec![plan::Step::Own("print the usage text".to_owned())]),
        other => Err(unknown(other)),
    }
}

/// Runs one subcommand.
fn dispatch(command: &str, args: &[String]) -> Result<(), Failure> {
    match command {
        "test" => commands::test(args),
        "demo" => commands::demo(args),
        "strata" => commands::strata(args),
        "bench" => bench::bench(args),
        "env" => commands::env(args),
        "gpu-kit" => gpu::kit(args),
        "gpu-report" => gpu::report(args),
        "tch-lints" => tch_lints::tch_lints(args),
        help if is_help(help) => {
            // A closed pipe (`cargo xtask help | head`) is not an error.
            let _ = writeln!(std::io::stdout().lock(), "{USAGE}");
            Ok(())
        }
        other => Err(unknown(other)),
    }
}

/// `cargo xtask --dry-run <command> [args]`: prints the command's plan to stdout.
fn dry_run(command: &str, args: &[String]) -> Result<(), Failure> {
    let text = plan::describe(&plan(command, args)?);
    // A closed pipe is not an error here either.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let dry = args.first().is_some_and(|a| a == "--dry-run");
    if dry {
        args.remove(0);
    }
    let (command, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, rest)| (c.as_str(), rest));
    let outcome = if dry {
        dry_run(command, rest)
    } else {
        dispatch(command, rest)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
