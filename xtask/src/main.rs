//! `cargo xtask`: strata's driver. It finds or installs libtorch, then builds, tests, runs the
//! demo and the benchmarks with the environment they need, so nobody exports anything by hand.

mod bench;
mod run;
mod torch_env;

use std::process::ExitCode;

/// The usage text.
const USAGE: &str = "\
cargo xtask <command> [args]

commands:
  demo [args]     build the release CLI and run `strata demo` (nanoGPT's CPU recipe and its
                  DenseFormer twin on Tiny Shakespeare, compared side by side)
  test [--quick] [-- cargo test args]
                  cargo fmt --check, cargo clippy -D warnings, cargo test --workspace
                  (--quick: tests only)
  bench [--quick] [--skip-criterion] [--skip-training]
                  criterion benches and the nanogpt-cpu training run against a same-machine
                  PyTorch baseline; figures go to docs/benchmarks.md
  strata <args>   build the release CLI and run it, e.g. `cargo xtask strata train --config configs/nanogpt-cpu.toml`
  env             print the shell exports that the commands above use (`eval \"$(cargo xtask env)\"`)

libtorch: $LIBTORCH if set, else torch 2.11.0 from PyPI in a cached virtual environment
($STRATA_CACHE_DIR, else ~/.cache/strata), installed on first use.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest.to_vec()),
        None => ("help", Vec::new()),
    };
    let result = match command {
        "demo" => run::demo(&rest),
        "test" => run::test(&rest),
        "bench" => bench::bench(&rest),
        "strata" => run::strata(&rest),
        "env" => run::print_env(),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}
