//! Running child processes (cargo, the strata binary, pip) with the libtorch environment, and
//! turning their exit into xtask's own.

use crate::torch_env::{self, TorchEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A failed command: what to print, and the exit code to leave with.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// The message, printed after `xtask: error: `.
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, code: 1 }
    }
}

/// The exit code a shell would report for `status`: the child's code, or 128 + its signal.
pub fn exit_code(status: &ExitStatus) -> u8 {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(status) {
        return u8::try_from(128 + signal).unwrap_or(u8::MAX);
    }
    match status.code() {
        Some(0) | None => 1,
        Some(code) => u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1),
    }
}

/// `status` in words: `exit code 101`, `interrupted`, `killed by signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(status) {
        return match signal {
            2 => "interrupted".to_owned(),
            _ => format!("killed by signal {signal}"),
        };
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// While alive, xtask ignores Ctrl-C (SIGINT) and leaves it to the child it waits for: the
/// child stops (strata saves its run first), and xtask reports it and cleans up after it.
#[cfg(unix)]
struct IgnoreInterrupt(usize);

#[cfg(unix)]
unsafe extern "C" {
    /// C's `signal(2)`; handlers are passed as integers (SIG_DFL = 0, SIG_IGN = 1).
    fn signal(signum: std::ffi::c_int, handler: usize) -> usize;
}

#[cfg(unix)]
impl IgnoreInterrupt {
    /// SIGINT's number.
    const SIGINT: std::ffi::c_int = 2;

    /// Starts ignoring SIGINT. Call it only after spawning: children inherit ignored signals.
    fn start() -> Self {
        // SAFETY: installs the SIG_IGN disposition, which runs no code in this process.
        IgnoreInterrupt(unsafe { signal(Self::SIGINT, 1) })
    }
}

#[cfg(unix)]
impl Drop for IgnoreInterrupt {
    fn drop(&mut self) {
        let previous = if self.0 == usize::MAX { 0 } else { self.0 };
        // SAFETY: restores the disposition that was in place before `start`.
        unsafe { signal(Self::SIGINT, previous) };
    }
}

/// Spawns `cmd` and waits for it, leaving Ctrl-C to the child.
pub fn wait(cmd: &mut Command) -> Result<ExitStatus, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    #[cfg(unix)]
    let _guard = IgnoreInterrupt::start();
    child
        .wait()
        .map_err(|e| format!("waiting for {program}: {e}"))
}

/// A Stdio that sends a child's stdout to xtask's stderr (xtask's stdout may be `eval`ed).
pub fn stderr_as_stdout() -> Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            return Stdio::from(fd);
        }
    }
    Stdio::inherit()
}

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Variables that `cargo run` set for xtask itself and that mean nothing to its children.
fn from_cargo_run(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// A command run in the workspace root with the libtorch environment applied.
pub fn command(env: &TorchEnv, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(from_cargo_run) {
            cmd.env_remove(key);
        }
    }
    for (key, value) in torch_env::child_vars(env, &torch_env::inherited) {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// Runs `cmd`, printing `what` first; a failure carries the child's exit code.
pub fn step(mut cmd: Command, what: &str) -> Result<(), Failure> {
    eprintln!("xtask: {what}");
    let status = wait(&mut cmd).map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure {
            message: format!("`{what}` failed ({})", describe(&status)),
            code: exit_code(&status),
        })
    }
}

/// The cargo that started xtask (`$CARGO`), else `cargo` from PATH.
pub fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The executable of the binary `name` among cargo's JSON messages.
pub fn executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
}

/// Builds the release CLI and returns the path of the `strata` binary.
pub fn build_cli(env: &TorchEnv) -> Result<PathBuf, String> {
    build_release_bin(env, "strata-cli", "strata")
}

/// Builds binary `bin` of `package` in release mode and returns its path (wherever the
/// target folder is: `CARGO_TARGET_DIR` and cargo config are respected).
pub fn build_release_bin(env: &TorchEnv, package: &str, bin: &str) -> Result<PathBuf, String> {
    let messages = cargo_messages(env, &["build", "--release", "-p", package, "--bin", bin])?;
    executable(&messages, bin)
        .ok_or_else(|| format!("cargo built {package} but named no `{bin}` executable"))
}

/// Builds binary `bin` of `package` in debug mode and returns its path.
pub fn build_debug_bin(env: &TorchEnv, package: &str, bin: &str) -> Result<PathBuf, String> {
    let messages = cargo_messages(env, &["build", "-p", package, "--bin", bin])?;
    executable(&messages, bin)
        .ok_or_else(|| format!("cargo built {package} but named no `{bin}` executable"))
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` (diagnostics still reach the
/// terminal) and returns cargo's JSON messages; Ctrl-C is left to cargo meanwhile.
pub fn cargo_messages(env: &TorchEnv, args: &[&str]) -> Result<String, String> {
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("xtask: {shown}");
    let mut cmd = command(env, cargo_program());
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    let out = {
        #[cfg(unix)]
        let _guard = IgnoreInterrupt::start();
        child
            .wait_with_output()
            .map_err(|e| format!("waiting for cargo: {e}"))?
    };
    if !out.status.success() {
        return Err(format!("`{shown}` failed ({})", describe(&out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The test executables among cargo's JSON messages, named `<package>-<target>`.
pub fn test_executables(messages: &str) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let exe = m["executable"].as_str()?;
            let target = m["target"]["name"].as_str()?;
            let id = m["package_id"].as_str()?;
            // `path+file:///…/crates/kernels#strata-kernels@0.1.0`, or older `name 0.1.0 (…)`.
            let package = match id.rsplit_once('#') {
                Some((_, tail)) => tail.split('@').next()?,
                None => id.split(' ').next()?,
            };
            Some((format!("{package}-{target}"), PathBuf::from(exe)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strata_executable_is_found_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"strata_core","kind":["lib"]},"executable":null}
{"reason":"build-script-executed","package_id":"x"}
{"reason":"compiler-artifact","target":{"name":"strata","kind":["bin"]},"executable":"/t/release/strata"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(messages, "strata"),
            Some(PathBuf::from("/t/release/strata"))
        );
        assert_eq!(executable(messages, "dwa_overhead"), None);
        assert_eq!(
            executable("{\"reason\":\"build-finished\"}", "strata"),
            None
        );
    }

    #[test]
    fn test_executables_are_named_by_package_and_target() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/kernels#strata-kernels@0.1.0","target":{"name":"cuda","kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/cuda-1a2b"}
{"reason":"compiler-artifact","package_id":"strata-tensor 0.1.0 (path+file:///w/crates/tensor)","target":{"name":"strata_tensor","kind":["lib"]},"profile":{"test":true},"executable":"/t/release/deps/strata_tensor-3c4d"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/tensor#strata-tensor@0.1.0","target":{"name":"strata_tensor","kind":["lib"]},"profile":{"test":false},"executable":null}"#;
        assert_eq!(
            test_executables(messages),
            vec![
                (
                    "strata-kernels-cuda".to_owned(),
                    PathBuf::from("/t/release/deps/cuda-1a2b")
                ),
                (
                    "strata-tensor-strata_tensor".to_owned(),
                    PathBuf::from("/t/release/deps/strata_tensor-3c4d")
                ),
            ]
        );
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let status = |script: &str| {
            Command::new("/bin/sh")
                .args(["-c", script])
                .status()
                .unwrap()
        };
        let _spawning = crate::SPAWNING.lock();
        assert_eq!(exit_code(&status("exit 101")), 101);
        assert_eq!(describe(&status("exit 101")), "exit code 101");
        // (SIGTERM: SIGINT may be ignored by a shell started in the background.)
        let killed = status("kill -TERM $$");
        assert_eq!(exit_code(&killed), 143);
        assert_eq!(describe(&killed), "killed by signal 15");
        let mut seven = Command::new("/bin/sh");
        seven.args(["-c", "exit 7"]);
        let failure = step(seven, "seven").unwrap_err();
        assert_eq!(failure.code, 7);
        assert_eq!(failure.message, "`seven` failed (exit code 7)");
        assert!(step(Command::new("true"), "true").is_ok());
    }
}
