//! The subcommands `env`, `test`, `demo` and `strata` (`bench` lives in its own module).

use crate::plan::{self, Child, Program, Step};
use crate::run::Failure;
use crate::torch_env::{self, TorchEnv};
use std::io::Write;

/// Finds (or installs) libtorch and says which one is used.
fn torch() -> Result<TorchEnv, Failure> {
    let env = torch_env::ensure()?;
    match &env.venv {
        Some(venv) => eprintln!("xtask: libtorch: torch from {}", venv.display()),
        None => eprintln!("xtask: libtorch: LIBTORCH ({})", env.lib_dir.display()),
    }
    Ok(env)
}

/// A shell line that sets (`export K='v'`) or removes (`unset K`) a variable.
pub fn shell_line(key: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("export {key}='{}'", value.replace('\'', r"'\''")),
        None => format!("unset {key}"),
    }
}

/// The plan of `cargo xtask env` (it takes no arguments).
pub fn env_plan(args: &[String]) -> Result<Vec<Step>, Failure> {
    if let Some(arg) = args.first() {
        return Err(format!("`env` takes no arguments (got `{arg}`)").into());
    }
    Ok(vec![
        Step::Own(format!(
            "find libtorch: $LIBTORCH, else torch {} in the cached virtual environment \
             (installed on first use)",
            torch_env::TORCH_VERSION
        )),
        Step::Own("print the shell exports of its environment to stdout".to_owned()),
    ])
}

/// `cargo xtask env`: the shell lines that give a shell the environment the other commands use,
/// for `eval "$(cargo xtask env)"`.
pub fn env(args: &[String]) -> Result<(), Failure> {
    env_plan(args)?;
    let env = torch()?;
    let mut text = String::new();
    for (key, value) in torch_env::child_vars(&env, &torch_env::inherited) {
        text += &shell_line(&key, value.as_deref());
        text.push('\n');
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write to stdout: {e}").into())
}

/// The arguments of `cargo xtask test`.
#[derive(Debug, PartialEq, Eq)]
pub struct TestArgs {
    /// `--quick`: skip cargo fmt and cargo clippy.
    pub quick: bool,
    /// Everything after `--`, for `cargo test`.
    pub cargo_test: Vec<String>,
}

/// Parses `[--quick] [-- <cargo test args>]`.
pub fn parse_test_args(args: &[String]) -> Result<TestArgs, String> {
    let (ours, rest) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut quick = false;
    for arg in ours {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                return Err(format!(
                    "unknown test option `{other}`: use `cargo xtask test [--quick] [-- <cargo \
                     test args>]`, e.g. `cargo xtask test --quick -- -p strata-core`"
                ));
            }
        }
    }
    Ok(TestArgs {
        quick,
        cargo_test: rest.to_vec(),
    })
}

/// The `cargo test` arguments: `--workspace` unless the passed-through arguments (before their
/// own `--`) already choose packages, then those arguments.
pub fn cargo_test_args(passed: &[String]) -> Vec<String> {
    let chooses_packages = passed.iter().take_while(|a| *a != "--").any(|a| {
        a.starts_with("-p")
            || a.starts_with("--package")
            || a.starts_with("--manifest-path")
            || a == "--workspace"
            || a == "--all"
    });
    let mut args = vec!["test".to_owned()];
    if !chooses_packages {
        args.push("--workspace".to_owned());
    }
    args.extend(passed.iter().cloned());
    args
}

/// The plan of `cargo xtask test [--quick] [-- <cargo test args>]`: cargo fmt --check, cargo
/// clippy with warnings denied (both skipped with `--quick`), then cargo test; for the whole
/// workspace also the build without strata's C++ and the reference parity harness.
pub fn test_plan(args: &[String]) -> Result<Vec<Step>, Failure> {
    let parsed = parse_test_args(args)?;
    let mut steps = Vec::new();
    if !parsed.quick {
        steps.push(Step::Run(Child::cargo(&["fmt", "--all", "--", "--check"])));
        steps.push(Step::Run(Child::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])));
    }
    let cargo_test = cargo_test_args(&parsed.cargo_test);
    let whole_workspace = cargo_test.iter().any(|a| a == "--workspace");
    steps.push(Step::Run(Child::cargo(&cargo_test)));
    if !parsed.quick && whole_workspace {
        steps.extend(without_cpp_steps());
        steps.extend(parity_steps());
    }
    Ok(steps)
}

/// The crates an embedder can build without strata's C++ (the `cpp` feature off): linted,
/// then tested on the pure libtorch path.
pub fn without_cpp_steps() -> Vec<Step> {
    let crates = [
        "-p",
        "strata-kernels",
        "-p",
        "strata-core",
        "--no-default-features",
    ];
    let mut clippy = vec!["clippy"];
    clippy.extend(crates);
    clippy.extend(["--all-targets", "--", "-D", "warnings"]);
    let mut test = vec!["test"];
    test.extend(crates);
    vec![
        Step::Run(Child::cargo(&clippy)),
        Step::Run(Child::cargo(&test)),
    ]
}

/// The reference implementations the parity harness loads strata's models into, pinned.
pub const PARITY_PACKAGES: [&str; 2] = ["transformers==4.57.6", "safetensors==0.8.0"];

/// The reference parity harness (xtask/parity/parity.py): install its packages into the
/// cached torch environment, then run it against the debug `strata` that `cargo test` built.
pub fn parity_steps() -> Vec<Step> {
    let mut install = vec![
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-cache-dir",
        "--disable-pip-version-check",
    ];
    install.extend(PARITY_PACKAGES);
    vec![
        Step::Run(Child::python(&install)),
        Step::BuildDebug {
            package: "strata-cli",
            bin: "strata",
        },
        Step::Run(Child::python(&[
            "xtask/parity/parity.py",
            "{strata}",
            "target/parity",
        ])),
    ]
}

/// `cargo xtask test [--quick] [-- <cargo test args>]`, all with the libtorch environment.
pub fn test(args: &[String]) -> Result<(), Failure> {
    let mut steps = test_plan(args)?;
    let env = torch()?;
    if env.venv.is_none() {
        steps.retain(|s| !matches!(s, Step::Run(c) if c.program == Program::Python));
        steps.retain(|s| !matches!(s, Step::BuildDebug { .. }));
        eprintln!(
            "xtask: the reference parity checks are skipped: LIBTORCH is set, so there is no \
             cached PyTorch environment to run them in"
        );
    }
    plan::execute(&env, &steps)?;
    eprintln!("xtask: test passed");
    Ok(())
}

/// The plan of `cargo xtask strata <args>`: build the release CLI, run it with `args`.
pub fn strata_plan(args: &[String]) -> Vec<Step> {
    vec![
        Step::Build {
            package: "strata-cli",
            bin: "strata",
        },
        Step::Run(Child::release("strata-cli", "strata", args)),
    ]
}

/// `cargo xtask strata <args>`: builds the release CLI and runs it in the workspace root; its
/// exit code becomes xtask's.
pub fn strata(args: &[String]) -> Result<(), Failure> {
    let env = torch()?;
    plan::execute(&env, &strata_plan(args))
}

/// The plan of `cargo xtask demo [args]`: `strata demo [args]`.
pub fn demo_plan(args: &[String]) -> Vec<Step> {
    let mut all = vec!["demo".to_owned()];
    all.extend_from_slice(args);
    strata_plan(&all)
}

/// `cargo xtask demo [args]`: `strata demo [args]`.
pub fn demo(args: &[String]) -> Result<(), Failure> {
    let env = torch()?;
    plan::execute(&env, &demo_plan(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned strings.
    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn test_arguments() {
        assert_eq!(
            parse_test_args(&s(&[])).unwrap(),
            TestArgs {
                quick: false,
                cargo_test: vec![]
            }
        );
        assert_eq!(
            parse_test_args(&s(&["--quick", "--", "-p", "strata-tensor", "--quick"])).unwrap(),
            TestArgs {
                quick: true,
                cargo_test: s(&["-p", "strata-tensor", "--quick"])
            }
        );
        let err = parse_test_args(&s(&["-p", "strata-core"])).unwrap_err();
        assert!(
            err.contains("`-p`") && err.contains("-- -p strata-core"),
            "{err}"
        );
    }

    #[test]
    fn cargo_test_covers_the_workspace_unless_told_otherwise() {
        assert_eq!(cargo_test_args(&[]), s(&["test", "--workspace"]));
        assert_eq!(
            cargo_test_args(&s(&["-p", "strata-tensor"])),
            s(&["test", "-p", "strata-tensor"])
        );
        assert_eq!(
            cargo_test_args(&s(&["--package=strata-core", "--release"])),
            s(&["test", "--package=strata-core", "--release"])
        );
        assert_eq!(
            cargo_test_args(&s(&["--exclude", "strata-benches"])),
            s(&["test", "--workspace", "--exclude", "strata-benches"])
        );
        // A `-p` meant for the test binaries does not count.
        assert_eq!(
            cargo_test_args(&s(&["--", "-p", "--nocapture"])),
            s(&["test", "--workspace", "--", "-p", "--nocapture"])
        );
    }

    #[test]
    fn shell_lines_quote_their_values() {
        assert_eq!(
            shell_line("RUSTFLAGS", Some("-C link-arg=-Wl,-rpath,/a b")),
            "export RUSTFLAGS='-C link-arg=-Wl,-rpath,/a b'"
        );
        assert_eq!(shell_line("P", Some("it's")), r"export P='it'\''s'");
        assert_eq!(
            shell_line("LIBTORCH_USE_PYTORCH", None),
            "unset LIBTORCH_USE_PYTORCH"
        );
        // What a shell makes of it.
        let _spawning = crate::SPAWNING.lock();
        let value = "a b 'c' $HOME \\ \"d\"";
        let script = format!("{}\nprintf %s \"$X\"", shell_line("X", Some(value)));
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }
}
