//! The cached Python virtual environment with torch 2.11.0: verification, remembered in a
//! marker file so that a verified environment costs a few file reads instead of a torch
//! import, and atomic creation (built beside its final path, verified, then renamed).

use crate::run;
use crate::torch_env::{TORCH_VERSION, TorchEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The marker file that a verified virtual environment holds.
const MARKER: &str = "strata-verified";

/// The oldest Python that torch 2.11.0 has wheels for.
const MIN_PYTHON: (u32, u32) = (3, 10);

/// Asks a Python for its version and whether it can create virtual environments (the `venv`
/// module and the `ensurepip` that it runs, which Debian ships in `python3-venv`).
const PYTHON_CHECK: &str = "import sys; print('%d.%d' % sys.version_info[:2])\n\
                            try:\n    import venv, ensurepip\n    print('venv ok')\n\
                            except ImportError:\n    print('venv missing')";

/// Asks the virtual environment's Python for its torch.
const TORCH_PROBE: &str =
    "import os, torch; print('STRATA_TORCH', torch.__version__, os.path.dirname(torch.__file__))";

/// A torch found in a virtual environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// `torch.__version__`, e.g. `2.11.0+cu130`.
    pub version: String,
    /// The torch package's `lib` folder.
    pub lib_dir: PathBuf,
}

/// Whether `torch.__version__` is 2.11.0 (`2.11.0`, or `2.11.0+<build>` such as `+cu130`).
pub fn is_wanted_version(version: &str) -> bool {
    version == TORCH_VERSION
        || version
            .strip_prefix(TORCH_VERSION)
            .is_some_and(|rest| rest.starts_with('+'))
}

/// Reads the probe's answer, the line `STRATA_TORCH <version> <torch package folder>`, and
/// checks the version.
pub fn parse_probe(output: &str) -> Result<Verified, String> {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("STRATA_TORCH "))
        .ok_or_else(|| format!("unexpected answer from python: `{}`", output.trim()))?;
    let (version, dir) = line
        .split_once(' ')
        .ok_or_else(|| format!("unexpected answer from python: `{line}`"))?;
    if !is_wanted_version(version) {
        return Err(format!(
            "it has torch {version}, but strata (tch 0.24) needs torch {TORCH_VERSION}"
        ));
    }
    Ok(Verified {
        version: version.to_owned(),
        lib_dir: Path::new(dir.trim()).join("lib"),
    })
}

/// The marker's text for `v`.
pub fn marker_text(v: &Verified) -> String {
    format!("version={}\nlib={}\n", v.version, v.lib_dir.display())
}

/// Reads a marker's text; None when it is not one.
pub fn parse_marker(text: &str) -> Option<Verified> {
    let mut version = None;
    let mut lib_dir = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("version=") {
            version = Some(v.to_owned());
        } else if let Some(l) = line.strip_prefix("lib=") {
            lib_dir = Some(PathBuf::from(l));
        }
    }
    Some(Verified {
        version: version?,
        lib_dir: lib_dir?,
    })
}

/// Whether what a marker recorded still holds: the venv's python3 is there, the library is
/// there, and torch's `version.py` still names the recorded version, which must be 2.11.0.
pub fn marker_holds(venv: &Path, v: &Verified) -> bool {
    let version_py = v.lib_dir.parent().map(|torch| torch.join("version.py"));
    let recorded = format!("__version__ = '{}'", v.version);
    is_wanted_version(&v.version)
        && venv.join("bin").join("python3").exists()
        && v.lib_dir.join("libtorch_cpu.so").exists()
        && version_py
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|text| text.lines().any(|l| l.trim() == recorded))
}

/// Runs the virtual environment's Python to find its torch.
fn probe(venv: &Path) -> Result<Verified, String> {
    let python = venv.join("bin").join("python3");
    let out = Command::new(&python)
        .args(["-c", TORCH_PROBE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!(
            "its python cannot import torch ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    parse_probe(&String::from_utf8_lossy(&out.stdout))
}

/// Writes `text` to `path` by way of a temporary file, so that readers never see half of it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Checks the virtual environment at `venv`: through its marker when that still holds (a few
/// file reads), else by importing torch in it, after which the marker is written.
pub fn verify(venv: &Path) -> Result<TorchEnv, String> {
    let marker = venv.join(MARKER);
    let marked = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|text| parse_marker(&text))
        .filter(|v| marker_holds(venv, v));
    let verified = match marked {
        Some(v) => v,
        None => {
            let v = probe(venv).map_err(|e| {
                format!(
                    "{} is not a usable torch {TORCH_VERSION} environment: {e}.\nRemove it \
                     (`rm -rf {}`) and run the command again to reinstall it, or set LIBTORCH to \
                     an unpacked libtorch {TORCH_VERSION}.",
                    venv.display(),
                    venv.display()
                )
            })?;
            // Not being able to remember the check only makes the next run slower.
            let _ = write_atomically(&marker, &marker_text(&v));
            v
        }
    };
    Ok(TorchEnv {
        lib_dir: verified.lib_dir,
        venv: Some(venv.to_path_buf()),
    })
}

/// What a Python said to [`PYTHON_CHECK`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonInfo {
    /// (major, minor).
    pub version: (u32, u32),
    /// Whether it can create virtual environments.
    pub venv: bool,
}

/// Reads the answer to [`PYTHON_CHECK`].
pub fn parse_python_check(output: &str) -> Option<PythonInfo> {
    let mut lines = output.lines().map(str::trim);
    let (major, minor) = lines.next()?.split_once('.')?;
    let version = (major.parse().ok()?, minor.parse().ok()?);
    Some(PythonInfo {
        version,
        venv: lines.next() == Some("venv ok"),
    })
}

/// The Python to create the virtual environment with: the first of `python3`, `python`,
/// `python3.14` ... `python3.10` on PATH that is Python 3.10 or newer and has the venv module.
pub fn find_python() -> Result<PathBuf, String> {
    let candidates = [
        "python3",
        "python",
        "python3.14",
        "python3.13",
        "python3.12",
        "python3.11",
        "python3.10",
    ];
    let mut too_old = None;
    let mut without_venv = None;
    for name in candidates {
        let Ok(out) = Command::new(name)
            .args(["-c", PYTHON_CHECK])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let Some(info) = parse_python_check(&String::from_utf8_lossy(&out.stdout)) else {
            continue;
        };
        if info.version < MIN_PYTHON {
            too_old.get_or_insert((name, info.version));
        } else if !info.venv {
            without_venv.get_or_insert((name, info.version));
        } else {
            return Ok(PathBuf::from(name));
        }
    }
    let fallback = format!(
        "Alternatively, set LIBTORCH to an unpacked libtorch {TORCH_VERSION} (the folder with \
         lib/ and include/)."
    );
    if let Some((name, (major, minor))) = without_venv {
        return Err(format!(
            "`{name}` (Python {major}.{minor}) cannot create virtual environments: its venv/ensurepip \
             module is missing. Install it: `sudo apt install python3-venv` on Debian/Ubuntu (or \
             python{major}.{minor}-venv), then run the command again.\n{fallback}"
        ));
    }
    if let Some((name, (major, minor))) = too_old {
        return Err(format!(
            "`{name}` is Python {major}.{minor}, but torch {TORCH_VERSION} needs Python 3.10 or \
             newer: install a newer Python 3 (e.g. `sudo apt install python3 python3-venv` on \
             Debian 12 / Ubuntu 22.04 or later) and make it `python3` on PATH.\n{fallback}"
        ));
    }
    Err(format!(
        "python3 was not found on PATH. strata installs torch {TORCH_VERSION} from PyPI into a \
         cached virtual environment and needs Python 3.10+ for that: install it (Debian/Ubuntu: \
         `sudo apt install python3 python3-venv`) and run the command again.\n{fallback}"
    ))
}

/// Replaces every `from` in `haystack` with `to`.
fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if !from.is_empty() && haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Points the scripts in `partial/bin` (pip's `#!` lines, `activate`) and `pyvenv.cfg` at the
/// final folder, which is where they will be once `partial` is renamed.
fn retarget_scripts(partial: &Path, venv: &Path) -> std::io::Result<()> {
    let from = partial.as_os_str().as_encoded_bytes();
    let to = venv.as_os_str().as_encoded_bytes();
    let mut files = vec![partial.join("pyvenv.cfg")];
    for entry in std::fs::read_dir(partial.join("bin"))? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.metadata()?.len() < (1 << 20) {
            files.push(entry.path());
        }
    }
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        if bytes.windows(from.len()).any(|w| w == from) {
            // Overwriting in place keeps the file's permissions.
            std::fs::write(&file, replace_bytes(&bytes, from, to))?;
        }
    }
    Ok(())
}

/// Removes the `<name>.partial-<pid>` folders beside `venv`: left by installs that were killed,
/// since a running install holds the lock that the caller holds now.
fn remove_partials(venv: &Path) {
    let (Some(parent), Some(name)) = (venv.parent(), venv.file_name()) else {
        return;
    };
    let prefix = format!("{}.partial-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            eprintln!(
                "xtask: removing {} (left by an interrupted install)",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs one installation step, its output shown on stderr (stdout may be `eval`ed).
fn install_step(cmd: &mut Command, what: &str, hint: &str) -> Result<(), String> {
    cmd.stdin(Stdio::null()).stdout(run::stderr_as_stdout());
    let status = run::wait(cmd).map_err(|e| format!("{what}: {e}\n{hint}"))?;
    let outcome = run::describe(&status);
    if status.success() {
        Ok(())
    } else if outcome == "interrupted" {
        Err(format!("{what}: interrupted"))
    } else {
        Err(format!("{what} failed ({outcome}).\n{hint}"))
    }
}

/// Builds the environment in `partial`, verifies it and renames it to `venv`.
fn build(python: &Path, partial: &Path, venv: &Path) -> Result<(), String> {
    let started = Instant::now();
    install_step(
        Command::new(python)
            .args(["-m", "venv", "--prompt"])
            .arg(venv.file_name().unwrap_or(partial.as_os_str()))
            .arg(partial),
        &format!("{} -m venv {}", python.display(), partial.display()),
        "If it says that ensurepip is not available, install the venv module (Debian/Ubuntu: \
         `sudo apt install python3-venv`) and run the command again.",
    )?;
    let by_hand = format!(
        "To install it by hand: `{} -m venv {v} && {v}/bin/python3 -m pip install \
         torch=={TORCH_VERSION}`.\nThis needs access to PyPI and about 3.5 GB of free disk in {}; \
         set STRATA_CACHE_DIR to use another folder. Or set LIBTORCH to an unpacked libtorch \
         {TORCH_VERSION} instead.",
        python.display(),
        venv.parent().unwrap_or(Path::new(".")).display(),
        v = venv.display(),
    );
    install_step(
        Command::new(partial.join("bin").join("python3")).args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            &format!("torch=={TORCH_VERSION}"),
        ]),
        &format!("pip install torch=={TORCH_VERSION}"),
        &by_hand,
    )?;
    let v = probe(partial).map_err(|e| format!("the new environment is unusable: {e}"))?;
    eprintln!(
        "xtask: installed torch {} in {:.0} s",
        v.version,
        started.elapsed().as_secs_f64()
    );
    retarget_scripts(partial, venv)
        .map_err(|e| format!("cannot update the scripts in {}: {e}", partial.display()))?;
    std::fs::rename(partial, venv).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            venv.display()
        )
    })
}

/// Creates the virtual environment `venv` with torch 2.11.0 from PyPI, atomically: under a
/// lock, built in `<venv>.partial-<pid>`, verified, renamed into place; the partial folder is
/// removed whatever goes wrong.
pub fn create(python: &Path, venv: &Path) -> Result<TorchEnv, String> {
    let parent = venv.parent().unwrap_or(Path::new("."));
    let name = venv
        .file_name()
        .map_or_else(|| "torch".into(), |n| n.to_string_lossy());
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create the cache folder {}: {e}", parent.display()))?;
    let lock_path = parent.join(format!("{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "xtask: waiting for another xtask that is installing torch into {}",
            venv.display()
        );
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    }
    if venv.exists() {
        return verify(venv);
    }
    remove_partials(venv);
    let partial = parent.join(format!("{name}.partial-{}", std::process::id()));
    eprintln!(
        "xtask: installing torch {TORCH_VERSION} from PyPI into {} with {} (about 3.5 GB; a few \
         minutes, once)",
        venv.display(),
        python.display()
    );
    if let Err(e) = build(python, &partial, venv) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    verify(venv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh, empty folder for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes an executable shell script.
    fn script(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The body of a fake venv `python3`: `-m pip ...` installs a fake torch `version` (fails
    /// when the file `fail-pip` exists beside the venv); `-c ...` answers the torch probe.
    fn fake_venv_python(version: &str) -> String {
        format!(
            "venv=$(cd \"$(dirname \"$0\")/..\" && pwd)\n\
             torch=\"$venv/lib/python3.11/site-packages/torch\"\n\
             case \"$1\" in\n\
             -m) [ -e \"$venv/../fail-pip\" ] && exit 3\n\
                 mkdir -p \"$torch/lib\" && : > \"$torch/lib/libtorch_cpu.so\"\n\
                 echo \"__version__ = '{version}'\" > \"$torch/version.py\";;\n\
             -c) [ -d \"$torch\" ] || {{ echo 'No module named torch' >&2; exit 1; }}\n\
                 echo \"STRATA_TORCH {version} $torch\";;\n\
             esac\n"
        )
    }

    #[test]
    fn the_probe_answer_is_checked_for_the_version() {
        let ok = parse_probe("noise\nSTRATA_TORCH 2.11.0+cu130 /v/site-packages/torch\n").unwrap();
        assert_eq!(ok.version, "2.11.0+cu130");
        assert_eq!(ok.lib_dir, PathBuf::from("/v/site-packages/torch/lib"));
        assert_eq!(
            parse_probe("STRATA_TORCH 2.11.0 /my torch/torch")
                .unwrap()
                .lib_dir,
            PathBuf::from("/my torch/torch/lib")
        );
        let err = parse_probe("STRATA_TORCH 2.5.1 /v/torch").unwrap_err();
        assert!(
            err.contains("2.5.1") && err.contains("needs torch 2.11.0"),
            "{err}"
        );
        assert!(parse_probe("STRATA_TORCH 2.11.01 /v/torch").is_err());
        assert!(is_wanted_version("2.11.0") && is_wanted_version("2.11.0+cpu"));
        assert!(!is_wanted_version("2.11.0a0") && !is_wanted_version("2.1.0"));
        assert!(parse_probe("garbage").is_err());
    }

    #[test]
    fn markers_round_trip() {
        let v = Verified {
            version: "2.11.0+cpu".into(),
            lib_dir: "/a b/torch/lib".into(),
        };
        assert_eq!(parse_marker(&marker_text(&v)), Some(v));
        assert_eq!(parse_marker("/old/style/marker\n"), None);
    }

    #[test]
    fn python_answers_are_read() {
        assert_eq!(
            parse_python_check("3.11\nvenv ok\n"),
            Some(PythonInfo {
                version: (3, 11),
                venv: true
            })
        );
        let debian = parse_python_check("3.9\nvenv missing\n").unwrap();
        assert!(debian.version < MIN_PYTHON && !debian.venv);
        assert!(parse_python_check("3.12\nvenv ok").unwrap().version >= MIN_PYTHON);
        assert_eq!(parse_python_check(""), None);
    }

    #[test]
    fn a_venv_is_probed_once_then_trusted_through_its_marker() {
        let _spawning = crate::SPAWNING.lock();
        let root = scratch("verify");
        let venv = root.join("torch-2.11.0");
        let python = venv.join("bin").join("python3");
        script(&python, &fake_venv_python("2.11.0+cpu"));
        // No torch installed yet: rejected, with the way out in the message.
        let err = verify(&venv).unwrap_err();
        assert!(
            err.contains("No module named torch") && err.contains("rm -rf"),
            "{err}"
        );
        assert!(!venv.join(MARKER).exists());

        assert!(
            Command::new(&python)
                .args(["-m", "pip"])
                .status()
                .unwrap()
                .success()
        );
        let env = verify(&venv).unwrap();
        let lib = venv.join("lib/python3.11/site-packages/torch/lib");
        assert_eq!(env.lib_dir, lib);
        assert_eq!(env.venv.as_deref(), Some(venv.as_path()));
        let marker = std::fs::read_to_string(venv.join(MARKER)).unwrap();
        assert_eq!(parse_marker(&marker).unwrap().lib_dir, lib);

        // With the marker, python is not run any more: a broken interpreter goes unnoticed...
        let answer = std::fs::read_to_string(&python).unwrap();
        script(&python, "exit 1\n");
        assert_eq!(verify(&venv).unwrap().lib_dir, lib);
        // ...until the files the marker vouches for change: torch replaced by another version.
        let version_py = lib.parent().unwrap().join("version.py");
        std::fs::write(&version_py, "__version__ = '2.10.0+cpu'\n").unwrap();
        assert!(verify(&venv).is_err());
        std::fs::write(&python, answer.replace("2.11.0+cpu", "2.10.0+cpu")).unwrap();
        let err = verify(&venv).unwrap_err();
        assert!(err.contains("torch 2.10.0+cpu"), "{err}");
        // The library deleted: the marker no longer holds.
        std::fs::write(&version_py, "__version__ = '2.11.0+cpu'\n").unwrap();
        std::fs::write(&python, &answer).unwrap();
        assert!(verify(&venv).is_ok());
        std::fs::remove_file(lib.join("libtorch_cpu.so")).unwrap();
        script(&python, "exit 1\n");
        assert!(verify(&venv).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A fake system python whose `-m venv DIR` creates a fake venv.
    fn fake_system_python(root: &Path) -> PathBuf {
        let template = root.join("venv-python");
        script(&template, &fake_venv_python("2.11.0+cpu"));
        let python = root.join("python3");
        script(
            &python,
            &format!(
                "[ \"$1 $2 $3 $4\" = \"-m venv --prompt torch-2.11.0\" ] || exit 2\n\
                 mkdir -p \"$5/bin\" && cp {} \"$5/bin/python3\"\n\
                 printf '#!%s/bin/python3\\nimport pip\\n' \"$5\" > \"$5/bin/pip\"\n\
                 echo \"command = python3 -m venv $5\" > \"$5/pyvenv.cfg\"\n",
                template.display()
            ),
        );
        python
    }

    #[test]
    fn creation_is_atomic() {
        let _spawning = crate::SPAWNING.lock();
        let root = scratch("create");
        let python = fake_system_python(&root);
        let cache = root.join("cache");
        let venv = cache.join("torch-2.11.0");
        let leftovers = |cache: &Path| {
            std::fs::read_dir(cache)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".partial-"))
                .collect::<Vec<_>>()
        };

        // pip fails: no venv, no partial folder, and the message says what to do.
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("fail-pip"), b"").unwrap();
        let err = create(&python, &venv).unwrap_err();
        assert!(
            err.contains("pip install torch==2.11.0 failed")
                && err.contains("3.5 GB")
                && err.contains("LIBTORCH")
                && err.contains(&format!("{}/bin/python3 -m pip install", venv.display())),
            "{err}"
        );
        assert!(!venv.exists());
        assert_eq!(leftovers(&cache), Vec::<String>::new());

        // A partial folder left by a killed install is cleaned up; then the install goes through.
        std::fs::remove_file(cache.join("fail-pip")).unwrap();
        let stale = cache.join("torch-2.11.0.partial-4000000000");
        std::fs::create_dir_all(&stale).unwrap();
        let env = create(&python, &venv).unwrap();
        assert_eq!(
            env.lib_dir,
            venv.join("lib/python3.11/site-packages/torch/lib")
        );
        assert_eq!(leftovers(&cache), Vec::<String>::new());
        assert!(venv.join(MARKER).exists());
        // The scripts name the final folder, not the partial one they were built in.
        let pip = std::fs::read_to_string(venv.join("bin").join("pip")).unwrap();
        assert_eq!(
            pip.lines().next().unwrap(),
            format!("#!{}/bin/python3", venv.display())
        );
        let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap();
        assert!(!cfg.contains(".partial-"), "{cfg}");
        // Once there, it is reused rather than rebuilt.
        std::fs::write(cache.join("fail-pip"), b"").unwrap();
        assert_eq!(create(&python, &venv).unwrap(), env);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failing_venv_module_leaves_nothing_behind() {
        let _spawning = crate::SPAWNING.lock();
        let root = scratch("novenv");
        let python = root.join("python3");
        script(&python, "mkdir -p \"$5\"; exit 1\n");
        let venv = root.join("cache").join("torch-2.11.0");
        let err = create(&python, &venv).unwrap_err();
        assert!(err.contains("apt install python3-venv"), "{err}");
        assert!(!venv.exists());
        let left: Vec<_> = std::fs::read_dir(root.join("cache"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(left.is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bytes_are_replaced() {
        assert_eq!(
            replace_bytes(b"#!/a/p/bin /a/p", b"/a/p", b"/b"),
            b"#!/b/bin /b"
        );
        assert_eq!(replace_bytes(b"abc", b"x", b"y"), b"abc");
    }
}
