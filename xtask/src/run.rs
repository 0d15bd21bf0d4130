//! Running cargo and the strata binary with the libtorch environment.

use crate::torch_env::{self, TorchEnv};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A command in the workspace root with the libtorch environment applied.
pub fn command(env: &TorchEnv, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    for (key, value) in torch_env::child_vars(env) {
        cmd.env(key, value);
    }
    cmd
}

/// Runs `cmd` with inherited output; `what` names it in messages.
pub fn status(mut cmd: Command, what: &str) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

/// `cargo <args>` with the environment.
pub fn cargo(env: &TorchEnv, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = command(env, cargo);
    cmd.args(args);
    status(cmd, &format!("cargo {}", args.join(" ")))
}

/// Builds the release CLI and returns the path of the binary.
pub fn build_cli(env: &TorchEnv) -> Result<PathBuf, String> {
    cargo(env, &["build", "--release", "-p", "strata-cli"])?;
    Ok(workspace_root()
        .join("target")
        .join("release")
        .join("strata"))
}

/// `cargo xtask strata <args>`.
pub fn strata(args: &[String]) -> Result<(), String> {
    let env = torch_env::ensure()?;
    let exe = build_cli(&env)?;
    let mut cmd = command(&env, exe);
    cmd.args(args);
    status(cmd, &format!("strata {}", args.join(" ")))
}

/// `cargo xtask demo [args]`.
pub fn demo(args: &[String]) -> Result<(), String> {
    let mut all = vec!["demo".to_owned()];
    all.extend_from_slice(args);
    strata(&all)
}

/// `cargo xtask test [--quick] [-- cargo test args]`.
pub fn test(args: &[String]) -> Result<(), String> {
    let (ours, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let quick = ours.iter().any(|a| a == "--quick");
    if let Some(bad) = ours.iter().find(|a| *a != "--quick") {
        return Err(format!(
            "unknown test option `{bad}` (expected --quick or `-- <cargo test args>`)"
        ));
    }
    let env = torch_env::ensure()?;
    if !quick {
        cargo(&env, &["fmt", "--all", "--", "--check"])?;
        cargo(
            &env,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    let mut test_args = vec!["test"];
    if passthrough.is_empty() {
        test_args.push("--workspace");
    }
    test_args.extend(passthrough.iter().map(String::as_str));
    cargo(&env, &test_args)
}

/// `cargo xtask env`: shell exports.
pub fn print_env() -> Result<(), String> {
    let env = torch_env::ensure()?;
    for (key, value) in torch_env::child_vars(&env) {
        println!("export {key}='{}'", value.replace('\'', r"'\''"));
    }
    Ok(())
}
