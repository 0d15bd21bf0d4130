//! Where libtorch comes from, and the variables that child cargo and strata processes need to
//! build against it and load it: `LIBTORCH` when the user set it, else torch 2.11.0 from PyPI
//! in a cached virtual environment (found or created by [`crate::venv`]).

use crate::venv;
use std::path::{Path, PathBuf};

/// The torch release that tch 0.24 binds.
pub const TORCH_VERSION: &str = "2.11.0";

/// A libtorch to build against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchEnv {
    /// The folder holding `libtorch*.so`.
    pub lib_dir: PathBuf,
    /// The virtual environment, when torch comes from PyPI (None for a user `LIBTORCH`).
    pub venv: Option<PathBuf>,
}

/// Where libtorch is to come from, decided from environment variables alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An unpacked libtorch that the user named with `LIBTORCH`.
    Libtorch {
        /// `$LIBTORCH`.
        root: PathBuf,
        /// `$LIBTORCH_LIB/lib`, else `$LIBTORCH/lib` (torch-sys's own rule).
        lib_dir: PathBuf,
    },
    /// The cached virtual environment, existing or still to be created.
    Venv(PathBuf),
}

/// Reads an environment variable: the process's own in [`ensure`], a map in the tests.
pub type Getter<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `value` unless it is unset or empty.
fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// The cache folder: `$STRATA_CACHE_DIR`, else `$XDG_CACHE_HOME/strata`, else
/// `$HOME/.cache/strata` (empty values count as unset).
pub fn cache_dir(get: Getter) -> PathBuf {
    if let Some(dir) = nonempty(get("STRATA_CACHE_DIR")) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = nonempty(get("XDG_CACHE_HOME")) {
        return Path::new(&xdg).join("strata");
    }
    match nonempty(get("HOME")) {
        Some(home) => Path::new(&home).join(".cache").join("strata"),
        None => std::env::temp_dir().join("strata-cache"),
    }
}

/// Where libtorch comes from: a non-empty `LIBTORCH` wins over the cached virtual environment
/// `<cache>/torch-2.11.0`.
pub fn source(get: Getter) -> Source {
    match nonempty(get("LIBTORCH")) {
        Some(root) => {
            let lib_root = nonempty(get("LIBTORCH_LIB")).unwrap_or_else(|| root.clone());
            Source::Libtorch {
                root: PathBuf::from(root),
                lib_dir: Path::new(&lib_root).join("lib"),
            }
        }
        None => Source::Venv(cache_dir(get).join(format!("torch-{TORCH_VERSION}"))),
    }
}

/// Checks a user's `LIBTORCH`: its lib folder must hold libtorch, and its `build-version`, when
/// present, must name torch 2.11.0 (unless `bypass`, torch-sys's
/// `LIBTORCH_BYPASS_VERSION_CHECK`).
pub fn check_libtorch(root: &Path, lib_dir: &Path, bypass: bool) -> Result<(), String> {
    let alternative = "or unset LIBTORCH to let xtask install torch from PyPI into its cache";
    if !lib_dir.join("libtorch_cpu.so").exists() && !lib_dir.join("libtorch.so").exists() {
        return Err(format!(
            "LIBTORCH is set to {}, but {} holds no libtorch_cpu.so: point LIBTORCH at an \
             unpacked libtorch {TORCH_VERSION} (the folder with lib/ and include/), {alternative}.",
            root.display(),
            lib_dir.display()
        ));
    }
    if bypass {
        return Ok(());
    }
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        let version = text.trim();
        if !version.starts_with(TORCH_VERSION) {
            return Err(format!(
                "LIBTORCH ({}) is libtorch {version}, but strata (tch 0.24) needs \
                 {TORCH_VERSION}: point LIBTORCH at libtorch {TORCH_VERSION}, {alternative}.",
                root.display()
            ));
        }
    }
    Ok(())
}

/// The linker argument that bakes `lib_dir` into every binary and test as an rpath.
fn rpath_arg(lib_dir: &Path) -> String {
    format!("link-arg=-Wl,-rpath,{}", lib_dir.display())
}

/// Whether a list of rustc flags already holds the rpath argument for `lib_dir`.
fn holds_rpath<'a>(flags: impl Iterator<Item = &'a str>, lib_dir: &Path) -> bool {
    let arg = rpath_arg(lib_dir);
    let joined = format!("-C{arg}");
    let flags: Vec<&str> = flags.collect();
    flags.windows(2).any(|w| w[0] == "-C" && w[1] == arg) || flags.iter().any(|f| *f == joined)
}

/// RUSTFLAGS for the children: `-C link-arg=-Wl,-rpath,<lib>`, appended after a space to the
/// user's own flags. Flags that already hold it are kept byte for byte, so that running xtask
/// after `eval "$(cargo xtask env)"` does not change the string and invalidate the build.
pub fn rustflags(user: Option<&str>, lib_dir: &Path) -> String {
    let ours = format!("-C {}", rpath_arg(lib_dir));
    match user {
        Some(user) if !user.trim().is_empty() => {
            if holds_rpath(user.split_whitespace(), lib_dir) {
                user.to_owned()
            } else {
                format!("{user} {ours}")
            }
        }
        _ => ours,
    }
}

/// The same for `CARGO_ENCODED_RUSTFLAGS` (flags separated by 0x1f), which cargo uses instead of
/// RUSTFLAGS whenever it is set.
pub fn encoded_rustflags(user: &str, lib_dir: &Path) -> String {
    if !user.is_empty() && holds_rpath(user.split('\x1f'), lib_dir) {
        return user.to_owned();
    }
    let ours = format!("-C\x1f{}", rpath_arg(lib_dir));
    if user.is_empty() {
        ours
    } else {
        format!("{user}\x1f{ours}")
    }
}

/// `new` prepended to the `:`-separated list `existing`, from which earlier copies of `new` are
/// dropped (so that applying it twice changes nothing).
pub fn prepend_path(new: &Path, existing: Option<&str>) -> String {
    let new = new.display().to_string();
    let mut out = new.clone();
    for entry in existing.unwrap_or("").split(':') {
        if !entry.is_empty() && entry != new {
            out.push(':');
            out.push_str(entry);
        }
    }
    out
}

/// Drops from a `:`-separated library path the folders that `cargo run` put in front of the
/// caller's own value: those under the running executable's folder (`exe_dir`), and the
/// toolchain's `lib` and `lib/rustlib/...` folders (`toolchain`: the folder above cargo's
/// `bin`).
pub fn strip_cargo_run_dirs(
    list: &str,
    exe_dir: Option<&Path>,
    toolchain: Option<&Path>,
) -> String {
    let added_by_cargo = |entry: &str| {
        let entry = Path::new(entry);
        exe_dir.is_some_and(|d| entry.starts_with(d))
            || toolchain.is_some_and(|t| {
                let lib = t.join("lib");
                entry == lib || entry.starts_with(lib.join("rustlib"))
            })
    };
    list.split(':')
        .filter(|e| !e.is_empty() && !added_by_cargo(e))
        .collect::<Vec<_>>()
        .join(":")
}

/// The process's environment variable `key`, as the user set it: `LD_LIBRARY_PATH` without the
/// folders that `cargo run` added when it started xtask.
pub fn inherited(key: &str) -> Option<String> {
    let value = std::env::var(key).ok()?;
    if key != "LD_LIBRARY_PATH" {
        return Some(value);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Some(value);
    };
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    let toolchain = Path::new(&cargo).parent().and_then(Path::parent);
    Some(strip_cargo_run_dirs(&value, exe_dir, toolchain))
}

/// The variables a child cargo or strata process needs: `(name, Some(value))` to set,
/// `(name, None)` to remove. `get` reads the caller's environment.
pub fn child_vars(env: &TorchEnv, get: Getter) -> Vec<(String, Option<String>)> {
    let mut vars = Vec::new();
    if let Some(venv) = &env.venv {
        vars.push(("LIBTORCH_USE_PYTORCH".to_owned(), Some("1".to_owned())));
        vars.push((
            "PATH".to_owned(),
            Some(prepend_path(&venv.join("bin"), get("PATH").as_deref())),
        ));
    } else if get("LIBTORCH_USE_PYTORCH").is_some() {
        // torch-sys prefers Python's torch over LIBTORCH whenever this is set.
        vars.push(("LIBTORCH_USE_PYTORCH".to_owned(), None));
    }
    vars.push((
        "LD_LIBRARY_PATH".to_owned(),
        Some(prepend_path(
            &env.lib_dir,
            get("LD_LIBRARY_PATH").as_deref(),
        )),
    ));
    match get("CARGO_ENCODED_RUSTFLAGS") {
        Some(encoded) => vars.push((
            "CARGO_ENCODED_RUSTFLAGS".to_owned(),
            Some(encoded_rustflags(&encoded, &env.lib_dir)),
        )),
        None => vars.push((
            "RUSTFLAGS".to_owned(),
            Some(rustflags(get("RUSTFLAGS").as_deref(), &env.lib_dir)),
        )),
    }
    vars
}

/// Finds libtorch: `LIBTORCH` if set, else the cached virtual environment, created (torch
/// 2.11.0 from PyPI, a few minutes) when it does not exist yet.
pub fn ensure() -> Result<TorchEnv, String> {
    let get = |k: &str| std::env::var(k).ok();
    // Children run in the workspace root and binaries anywhere: relative paths would break.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    match source(&get) {
        Source::Libtorch { root, lib_dir } => {
            let (root, lib_dir) = (absolute(root), absolute(lib_dir));
            let bypass = get("LIBTORCH_BYPASS_VERSION_CHECK").is_some();
            check_libtorch(&root, &lib_dir, bypass)?;
            Ok(TorchEnv {
                lib_dir,
                venv: None,
            })
        }
        Source::Venv(dir) => {
            let dir = absolute(dir);
            if dir.exists() {
                venv::verify(&dir)
            } else {
                venv::create(&venv::find_python()?, &dir)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A getter over fixed values.
    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn cache_dir_prefers_strata_then_xdg_then_home() {
        let all = vars(&[
            ("STRATA_CACHE_DIR", "/s"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir(&all), PathBuf::from("/s"));
        let xdg = vars(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir(&xdg), PathBuf::from("/x/strata"));
        let empty = vars(&[
            ("STRATA_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", ""),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir(&empty), PathBuf::from("/h/.cache/strata"));
        assert_eq!(
            cache_dir(&vars(&[])),
            std::env::temp_dir().join("strata-cache")
        );
    }

    #[test]
    fn libtorch_takes_precedence_over_the_cache() {
        let both = vars(&[("LIBTORCH", "/opt/libtorch"), ("STRATA_CACHE_DIR", "/s")]);
        assert_eq!(
            source(&both),
            Source::Libtorch {
                root: PathBuf::from("/opt/libtorch"),
                lib_dir: PathBuf::from("/opt/libtorch/lib"),
            }
        );
        let split = vars(&[("LIBTORCH", "/opt/lt"), ("LIBTORCH_LIB", "/usr/local")]);
        assert_eq!(
            source(&split),
            Source::Libtorch {
                root: PathBuf::from("/opt/lt"),
                lib_dir: PathBuf::from("/usr/local/lib"),
            }
        );
        let unset = vars(&[("LIBTORCH", ""), ("STRATA_CACHE_DIR", "/s")]);
        assert_eq!(
            source(&unset),
            Source::Venv(PathBuf::from("/s/torch-2.11.0"))
        );
    }

    #[test]
    fn a_user_libtorch_is_checked_for_its_library_and_version() {
        let root = std::env::temp_dir().join(format!("xtask-libtorch-{}", std::process::id()));
        let lib = root.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        let err = check_libtorch(&root, &lib, false).unwrap_err();
        assert!(err.contains("holds no libtorch_cpu.so"), "{err}");
        std::fs::write(lib.join("libtorch_cpu.so"), b"").unwrap();
        check_libtorch(&root, &lib, false).unwrap();
        std::fs::write(root.join("build-version"), "2.10.0+cpu\n").unwrap();
        let err = check_libtorch(&root, &lib, false).unwrap_err();
        assert!(
            err.contains("2.10.0+cpu") && err.contains("needs 2.11.0"),
            "{err}"
        );
        check_libtorch(&root, &lib, true).unwrap();
        std::fs::write(root.join("build-version"), "2.11.0+cpu\n").unwrap();
        check_libtorch(&root, &lib, false).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn rustflags_are_exactly_the_rpath_or_appended_to_user_flags() {
        let lib = Path::new("/c/torch-2.11.0/lib/python3.11/site-packages/torch/lib");
        let ours = "-C link-arg=-Wl,-rpath,/c/torch-2.11.0/lib/python3.11/site-packages/torch/lib";
        assert_eq!(rustflags(None, lib), ours);
        assert_eq!(rustflags(Some(""), lib), ours);
        assert_eq!(rustflags(Some("  "), lib), ours);
        assert_eq!(
            rustflags(Some("-C target-cpu=native"), lib),
            format!("-C target-cpu=native {ours}")
        );
        // Already there (e.g. after `eval "$(cargo xtask env)"`): unchanged, byte for byte.
        let user = format!("-C target-cpu=native  {ours}");
        assert_eq!(rustflags(Some(&user), lib), user);
        assert_eq!(rustflags(Some(ours), lib), ours);
        // A different folder that merely starts with ours does not count.
        let longer =
            "-C link-arg=-Wl,-rpath,/c/torch-2.11.0/lib/python3.11/site-packages/torch/lib64";
        assert_eq!(rustflags(Some(longer), lib), format!("{longer} {ours}"));
    }

    #[test]
    fn encoded_rustflags_use_the_unit_separator() {
        let lib = Path::new("/t/lib");
        assert_eq!(
            encoded_rustflags("", lib),
            "-C\x1flink-arg=-Wl,-rpath,/t/lib"
        );
        assert_eq!(
            encoded_rustflags("-Dwarnings", lib),
            "-Dwarnings\x1f-C\x1flink-arg=-Wl,-rpath,/t/lib"
        );
        let already = "-Dwarnings\x1f-C\x1flink-arg=-Wl,-rpath,/t/lib";
        assert_eq!(encoded_rustflags(already, lib), already);
    }

    #[test]
    fn paths_are_prepended_once() {
        let lib = Path::new("/t/lib");
        assert_eq!(prepend_path(lib, Some("/a:/b")), "/t/lib:/a:/b");
        assert_eq!(prepend_path(lib, Some("")), "/t/lib");
        assert_eq!(prepend_path(lib, None), "/t/lib");
        assert_eq!(prepend_path(lib, Some("/t/lib:/a")), "/t/lib:/a");
        assert_eq!(prepend_path(lib, Some("/a:/t/lib")), "/t/lib:/a");
    }

    #[test]
    fn the_folders_cargo_run_added_are_stripped() {
        let list = "/w/target/xtask/debug:/w/target/xtask/debug/deps:\
                    /r/toolchains/stable/lib/rustlib/x86_64-unknown-linux-gnu/lib:\
                    /r/toolchains/stable/lib:/opt/cuda/lib64:/usr/lib";
        let stripped = strip_cargo_run_dirs(
            list,
            Some(Path::new("/w/target/xtask/debug")),
            Some(Path::new("/r/toolchains/stable")),
        );
        assert_eq!(stripped, "/opt/cuda/lib64:/usr/lib");
        assert_eq!(strip_cargo_run_dirs("/a:/b", None, None), "/a:/b");
    }

    #[test]
    fn child_vars_for_a_venv_and_for_libtorch() {
        let venv = TorchEnv {
            lib_dir: PathBuf::from("/v/lib/python3.11/site-packages/torch/lib"),
            venv: Some(PathBuf::from("/v")),
        };
        let user = vars(&[
            ("PATH", "/usr/bin"),
            ("LD_LIBRARY_PATH", "/opt/x"),
            ("RUSTFLAGS", "-C opt-level=1"),
        ]);
        let got = child_vars(&venv, &user);
        let want = |k: &str, v: &str| (k.to_owned(), Some(v.to_owned()));
        assert_eq!(
            got,
            vec![
                want("LIBTORCH_USE_PYTORCH", "1"),
                want("PATH", "/v/bin:/usr/bin"),
                want(
                    "LD_LIBRARY_PATH",
                    "/v/lib/python3.11/site-packages/torch/lib:/opt/x"
                ),
                want(
                    "RUSTFLAGS",
                    "-C opt-level=1 -C link-arg=-Wl,-rpath,/v/lib/python3.11/site-packages/torch/lib"
                ),
            ]
        );

        let libtorch = TorchEnv {
            lib_dir: PathBuf::from("/opt/libtorch/lib"),
            venv: None,
        };
        let user = vars(&[("LIBTORCH_USE_PYTORCH", "1"), ("PATH", "/usr/bin")]);
        let got = child_vars(&libtorch, &user);
        assert_eq!(
            got,
            vec![
                ("LIBTORCH_USE_PYTORCH".to_owned(), None),
                want("LD_LIBRARY_PATH", "/opt/libtorch/lib"),
                want("RUSTFLAGS", "-C link-arg=-Wl,-rpath,/opt/libtorch/lib"),
            ]
        );
        let encoded = vars(&[("CARGO_ENCODED_RUSTFLAGS", "")]);
        let got = child_vars(&libtorch, &encoded);
        assert_eq!(
            got.last().unwrap(),
            &want(
                "CARGO_ENCODED_RUSTFLAGS",
                "-C\x1flink-arg=-Wl,-rpath,/opt/libtorch/lib"
            )
        );
    }
}
