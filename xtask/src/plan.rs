//! What a command will do, as data: the child processes it starts, with their exact command
//! lines, and the work it does itself. Each command builds its plan from its arguments alone
//! (no libtorch, no build) and then runs that same plan; `cargo xtask --dry-run <command>`
//! prints it instead, which is how the tests check every flag of every command.

use crate::run::{self, Failure};
use crate::torch_env::TorchEnv;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The program a child runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// The cargo that started xtask.
    Cargo,
    /// Binary `bin` of workspace package `package`, built by an earlier [`Step::Build`]
    /// (release) or [`Step::BuildDebug`].
    Release {
        /// The package, e.g. `strata-cli`.
        package: &'static str,
        /// The binary, e.g. `strata`.
        bin: &'static str,
    },
    /// `python3` of the cached virtual environment.
    Python,
}

/// A child process: program and arguments, run with the libtorch environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// What runs.
    pub program: Program,
    /// Its arguments; `{bin}` stands for the path of the binary `bin` an earlier step built.
    pub args: Vec<String>,
}

/// Owned strings.
pub fn strings<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

impl Child {
    /// `cargo <args>`.
    pub fn cargo<S: AsRef<str>>(args: &[S]) -> Self {
        Self {
            program: Program::Cargo,
            args: strings(args),
        }
    }

    /// The release binary `bin` of `package` with `args`.
    pub fn release<S: AsRef<str>>(package: &'static str, bin: &'static str, args: &[S]) -> Self {
        Self {
            program: Program::Release { package, bin },
            args: strings(args),
        }
    }

    /// The virtual environment's `python3 <args>`.
    pub fn python<S: AsRef<str>>(args: &[S]) -> Self {
        Self {
            program: Program::Python,
            args: strings(args),
        }
    }

    /// The command line as a shell would read it: `program args`.
    pub fn line(&self) -> String {
        let program = match &self.program {
            Program::Cargo => "cargo",
            Program::Release { bin, .. } => bin,
            Program::Python => "python3",
        };
        std::iter::once(program.to_owned())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The child as a [`Command`] in the workspace root with the libtorch environment;
    /// `built` holds the release binaries built so far.
    pub fn command(&self, env: &TorchEnv, built: &Built) -> Result<Command, String> {
        let program = match &self.program {
            Program::Cargo => run::cargo_program().into(),
            Program::Release { package, bin } => built.get(bin).cloned().ok_or_else(|| {
                format!("xtask's plan runs `{bin}` before building it (cargo build -p {package})")
            })?,
            Program::Python => env
                .venv
                .as_ref()
                .map(|v| v.join("bin").join("python3"))
                .ok_or("LIBTORCH is set, so there is no PyTorch to run")?,
        };
        let mut cmd = run::command(env, program);
        cmd.args(self.args.iter().map(|a| built_path(a, built)));
        Ok(cmd)
    }
}

/// An argument `{bin}` names the path of the binary `bin` built so far; others stay as they are.
fn built_path(arg: &str, built: &Built) -> std::ffi::OsString {
    arg.strip_prefix('{')
        .and_then(|a| a.strip_suffix('}'))
        .and_then(|bin| built.get(bin))
        .map_or_else(|| arg.into(), |path| path.clone().into_os_string())
}

/// The binaries built so far, by binary name.
pub type Built = BTreeMap<&'static str, PathBuf>;

/// One step of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Build a release binary (`cargo build --release -p <package> --bin <bin>`).
    Build {
        /// The package.
        package: &'static str,
        /// The binary.
        bin: &'static str,
    },
    /// Build a debug binary (`cargo build -p <package> --bin <bin>`; what `cargo test` already
    /// built, so usually nothing to do).
    BuildDebug {
        /// The package.
        package: &'static str,
        /// The binary.
        bin: &'static str,
    },
    /// Start a child and wait for it.
    Run(Child),
    /// Work xtask does itself, in words.
    Own(String),
}

impl Step {
    /// The step in one line: the command line of a child, or what xtask does itself.
    pub fn line(&self) -> String {
        match self {
            Step::Build { package, bin } => {
                format!("cargo build --release -p {package} --bin {bin}")
            }
            Step::BuildDebug { package, bin } => format!("cargo build -p {package} --bin {bin}"),
            Step::Run(child) => child.line(),
            Step::Own(what) => format!("(xtask) {what}"),
        }
    }
}

/// `cargo xtask --dry-run`: the plan, one step per line.
pub fn describe(steps: &[Step]) -> String {
    steps.iter().map(|s| s.line() + "\n").collect()
}

/// Runs steps made only of builds and children, in order; a failing child's exit code
/// becomes xtask's.
pub fn execute(env: &TorchEnv, steps: &[Step]) -> Result<(), Failure> {
    let mut built = Built::new();
    for step in steps {
        match step {
            Step::Build { package, bin } => {
                built.insert(bin, run::build_release_bin(env, package, bin)?);
            }
            Step::BuildDebug { package, bin } => {
                built.insert(bin, run::build_debug_bin(env, package, bin)?);
            }
            Step::Run(child) => run::step(child.command(env, &built)?, &child.line())?,
            Step::Own(what) => {
                return Err(format!("xtask cannot run the step `{what}` generically").into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_command_lines() {
        let child = Child::release("strata-benches", "dwa_overhead", &["--layers", "12"]);
        assert_eq!(child.line(), "dwa_overhead --layers 12");
        let steps = [
            Step::Build {
                package: "strata-cli",
                bin: "strata",
            },
            Step::Run(Child::cargo(&["test", "--workspace"])),
            Step::Own("write docs/benchmarks.md".to_owned()),
        ];
        assert_eq!(
            describe(&steps),
            "cargo build --release -p strata-cli --bin strata\ncargo test --workspace\n\
             (xtask) write docs/benchmarks.md\n"
        );
    }

    #[test]
    fn a_binary_runs_only_after_its_build() {
        let env = TorchEnv {
            lib_dir: PathBuf::from("/nowhere"),
            venv: None,
        };
        let child = Child::release("strata-cli", "strata", &["info"]);
        let err = child.command(&env, &Built::new()).unwrap_err();
        assert!(err.contains("before building it"), "{err}");
        let built = Built::from([("strata", PathBuf::from("/t/strata"))]);
        let cmd = child.command(&env, &built).unwrap();
        assert_eq!(cmd.get_program(), "/t/strata");
        assert!(Child::python(&["x.py"]).command(&env, &built).is_err());
    }
}
