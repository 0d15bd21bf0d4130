//! Finding or creating the libtorch that strata builds against: `LIBTORCH` when the user set
//! it, else a cached Python virtual environment with torch 2.11.0 (created on first use).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The torch release that tch 0.24 binds.
pub const TORCH_VERSION: &str = "2.11.0";

/// Where libtorch comes from and how child processes must be set up to use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchEnv {
    /// The folder holding `libtorch*.so`.
    pub lib_dir: PathBuf,
    /// The virtual environment, when torch comes from PyPI (None for a user `LIBTORCH`).
    pub venv: Option<PathBuf>,
}

/// The cache folder: `$STRATA_CACHE_DIR`, else `$XDG_CACHE_HOME/strata`, else
/// `~/.cache/strata`.
pub fn cache_dir(strata: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> PathBuf {
    let nonempty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    nonempty(strata)
        .or_else(|| nonempty(xdg).map(|x| x.join("strata")))
        .or_else(|| nonempty(home).map(|h| h.join(".cache").join("strata")))
        .unwrap_or_else(|| std::env::temp_dir().join("strata-cache"))
}

/// The RUSTFLAGS that bake the torch library folder into every binary and test as an rpath,
/// appended to the user's own flags (once: flags that already hold it are kept as they are,
/// so that the build is not invalidated by a changed flag string).
pub fn rustflags(user: Option<&str>, lib_dir: &Path) -> String {
    let ours = format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display());
    match user.map(str::trim).filter(|s| !s.is_empty()) {
        Some(user) if user.contains(&ours) => user.to_owned(),
        Some(user) => format!("{user} {ours}"),
        None => ours,
    }
}

/// `new` prepended to a `:`-separated path list.
pub fn prepend_path(new: &Path, existing: Option<&str>) -> String {
    match existing.filter(|s| !s.is_empty()) {
        Some(rest) => format!("{}:{rest}", new.display()),
        None => new.display().to_string(),
    }
}

/// The environment variables a child cargo or binary needs.
pub fn child_vars(env: &TorchEnv) -> Vec<(String, String)> {
    let var = |k: &str| std::env::var(k).ok();
    let mut vars = vec![
        (
            "LD_LIBRARY_PATH".to_owned(),
            prepend_path(&env.lib_dir, var("LD_LIBRARY_PATH").as_deref()),
        ),
        (
            "RUSTFLAGS".to_owned(),
            rustflags(var("RUSTFLAGS").as_deref(), &env.lib_dir),
        ),
    ];
    if let Some(venv) = &env.venv {
        vars.push(("LIBTORCH_USE_PYTORCH".to_owned(), "1".to_owned()));
        vars.push((
            "PATH".to_owned(),
            prepend_path(&venv.join("bin"), var("PATH").as_deref()),
        ));
    }
    vars
}

/// Checks `python -c` output `"<version> <torch dir>"` and returns the torch lib folder.
pub fn parse_probe(output: &str) -> Result<PathBuf, String> {
    let line = output.lines().last().unwrap_or("").trim();
    let (version, dir) = line
        .split_once(' ')
        .ok_or_else(|| format!("unexpected answer from python: `{line}`"))?;
    if !version.starts_with(TORCH_VERSION) {
        return Err(format!(
            "found torch {version}, but strata (tch 0.24) needs torch {TORCH_VERSION}"
        ));
    }
    Ok(Path::new(dir.trim()).join("lib"))
}

/// The marker written once a virtual environment has been verified; it holds the lib folder.
fn marker(venv: &Path) -> PathBuf {
    venv.join("strata-verified")
}

/// Asks the venv's python which torch it has; returns the lib folder.
fn probe(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python3");
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, torch; print(torch.__version__, os.path.dirname(torch.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{} cannot import torch", python.display()));
    }
    parse_probe(&String::from_utf8_lossy(&out.stdout))
}

/// A verified virtual environment at `venv`, if there is one.
pub fn existing_venv(venv: &Path) -> Option<TorchEnv> {
    let lib_dir = match std::fs::read_to_string(marker(venv)) {
        Ok(text) => PathBuf::from(text.trim()),
        Err(_) => {
            let lib_dir = probe(venv).ok()?;
            std::fs::write(marker(venv), lib_dir.display().to_string()).ok()?;
            lib_dir
        }
    };
    lib_dir.join("libtorch_cpu.so").exists().then(|| TorchEnv {
        lib_dir,
        venv: Some(venv.to_path_buf()),
    })
}

/// The first `python3` (or `python`) on PATH that runs.
fn find_python() -> Result<String, String> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(candidate.to_owned());
        }
    }
    Err(
        "python3 was not found on PATH. strata installs torch from PyPI into a cached \
         virtual environment and needs Python 3.9 or newer for that: install it (Debian/Ubuntu: \
         `sudo apt install python3 python3-venv`), or point LIBTORCH at an unpacked libtorch \
         2.11.0."
            .to_owned(),
    )
}

/// Runs `cmd`, streaming its output; `what` names the step in errors.
fn run_step(cmd: &mut Command, what: &str, hint: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}\n{hint}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}).\n{hint}"))
    }
}

/// Creates the virtual environment at `venv` atomically: built in a sibling folder, verified,
/// then renamed into place; the partial folder is removed on failure.
fn create_venv(venv: &Path) -> Result<TorchEnv, String> {
    let python = find_python()?;
    let parent = venv.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create the cache folder {}: {e}", parent.display()))?;
    let partial = parent.join(format!(
        "{}.partial-{}",
        venv.file_name().and_then(|n| n.to_str()).unwrap_or("torch"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    eprintln!(
        "xtask: installing torch {TORCH_VERSION} from PyPI into {} (about 3.5 GB, a few minutes, once)",
        venv.display()
    );
    let result = (|| {
        run_step(
            Command::new(&python).arg("-m").arg("venv").arg(&partial),
            "creating a Python virtual environment",
            "The venv module is missing: install it (Debian/Ubuntu: `sudo apt install python3-venv`) \
             and run the command again.",
        )?;
        let pip_hint = format!(
            "To do it by hand: `{python} -m venv {v} && {v}/bin/pip install torch=={TORCH_VERSION}`. \
             It needs network access to PyPI and about 3.5 GB of free disk. Or set LIBTORCH to an \
             unpacked libtorch {TORCH_VERSION}.",
            v = venv.display()
        );
        run_step(
            Command::new(partial.join("bin").join("python3")).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                &format!("torch=={TORCH_VERSION}"),
            ]),
            "pip install torch",
            &pip_hint,
        )?;
        probe(&partial)?;
        std::fs::rename(&partial, venv)
            .map_err(|e| format!("cannot move {} into place: {e}", partial.display()))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    // The venv's scripts name the partial folder; the interpreter and torch do not care, and
    // the verification below runs through the final path.
    existing_venv(venv)
        .ok_or_else(|| format!("{} was created but torch does not import", venv.display()))
}

/// Finds libtorch: `LIBTORCH` if set, else the cached venv, created when missing.
pub fn ensure() -> Result<TorchEnv, String> {
    if let Some(dir) = std::env::var_os("LIBTORCH").filter(|v| !v.is_empty()) {
        let lib_dir = PathBuf::from(dir).join("lib");
        if !lib_dir.join("libtorch_cpu.so").exists() && !lib_dir.join("libtorch.so").exists() {
            return Err(format!(
                "LIBTORCH is set, but {} holds no libtorch: point LIBTORCH at an unpacked \
                 libtorch {TORCH_VERSION} (the folder with lib/ and include/), or unset it to let \
                 strata install torch from PyPI.",
                lib_dir.display()
            ));
        }
        return Ok(TorchEnv {
            lib_dir,
            venv: None,
        });
    }
    let var = |k: &str| std::env::var(k).ok();
    let venv = cache_dir(
        var("STRATA_CACHE_DIR").as_deref(),
        var("XDG_CACHE_HOME").as_deref(),
        var("HOME").as_deref(),
    )
    .join(format!("torch-{TORCH_VERSION}"));
    if let Some(env) = existing_venv(&venv) {
        return Ok(env);
    }
    if venv.exists() {
        return Err(format!(
            "{} exists but holds no working torch {TORCH_VERSION}: remove it and run again.",
            venv.display()
        ));
    }
    create_venv(&venv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_prefers_strata_then_xdg_then_home() {
        assert_eq!(
            cache_dir(Some("/s"), Some("/x"), Some("/h")),
            PathBuf::from("/s")
        );
        assert_eq!(
            cache_dir(None, Some("/x"), Some("/h")),
            PathBuf::from("/x/strata")
        );
        assert_eq!(
            cache_dir(Some(""), None, Some("/h")),
            PathBuf::from("/h/.cache/strata")
        );
    }

    #[test]
    fn rustflags_append_the_rpath_to_user_flags() {
        let lib = Path::new("/t/lib");
        assert_eq!(rustflags(None, lib), "-C link-arg=-Wl,-rpath,/t/lib");
        assert_eq!(
            rustflags(Some(" -C target-cpu=native "), lib),
            "-C target-cpu=native -C link-arg=-Wl,-rpath,/t/lib"
        );
        let already = "-C link-arg=-Wl,-rpath,/t/lib";
        assert_eq!(rustflags(Some(already), lib), already);
    }

    #[test]
    fn paths_are_prepended() {
        let lib = Path::new("/t/lib");
        assert_eq!(prepend_path(lib, Some("/a:/b")), "/t/lib:/a:/b");
        assert_eq!(prepend_path(lib, Some("")), "/t/lib");
        assert_eq!(prepend_path(lib, None), "/t/lib");
    }

    #[test]
    fn probe_output_is_checked_for_the_version() {
        let ok = parse_probe("2.11.0+cu130 /v/site-packages/torch\n").unwrap();
        assert_eq!(ok, PathBuf::from("/v/site-packages/torch/lib"));
        let err = parse_probe("2.5.1 /v/torch").unwrap_err();
        assert!(
            err.contains("2.5.1") && err.contains(TORCH_VERSION),
            "{err}"
        );
        assert!(parse_probe("garbage").is_err());
    }

    #[test]
    fn a_marked_venv_is_accepted_only_when_its_library_exists() {
        let root = std::env::temp_dir().join(format!("xtask-venv-test-{}", std::process::id()));
        let venv = root.join("torch");
        let lib = root.join("site").join("torch").join("lib");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(venv.join("strata-verified"), lib.display().to_string()).unwrap();
        assert_eq!(existing_venv(&venv), None, "no libtorch_cpu.so yet");
        std::fs::write(lib.join("libtorch_cpu.so"), b"").unwrap();
        let env = existing_venv(&venv).unwrap();
        assert_eq!(env.lib_dir, lib);
        assert_eq!(env.venv.as_deref(), Some(venv.as_path()));
        let vars = child_vars(&env);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("LIBTORCH_USE_PYTORCH").as_deref(), Some("1"));
        assert!(
            get("PATH")
                .unwrap()
                .starts_with(&format!("{}/bin", venv.display()))
        );
        assert!(
            get("RUSTFLAGS")
                .unwrap()
                .ends_with(&format!("-rpath,{}", lib.display()))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
