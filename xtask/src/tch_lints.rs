//! `cargo xtask tch-lints [--check]`: writes the workspace's `clippy.toml`, which lists every
//! tch method that panics on a libtorch error and has an `f_` twin returning `Result`. The
//! library crates deny `clippy::disallowed_methods` in their own code (see their lib.rs), so a
//! panicking tch call there fails `cargo clippy`. The list is read from the tch sources that
//! cargo downloaded, so it follows a tch upgrade; `--check` (and a unit test) fail when the
//! committed file is stale.

use crate::plan::Step;
use crate::run::Failure;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file this command writes, relative to the workspace root.
pub const CLIPPY_TOML: &str = "clippy.toml";

/// Methods left out of the list, each with the reason written into the file.
const EXEMPT: [(&str, &str); 1] = [(
    "kind",
    "`Tensor::kind` is left out: it fails only on an undefined tensor, which strata never makes.",
)];

/// Owners whose panicking methods are listed: the type as tch declares it (`impl X` or
/// `impl<'a> X<'a>`) and the path clippy resolves.
const OWNERS: [(&str, &str); 2] = [("Tensor", "tch::Tensor"), ("Path", "tch::nn::Path")];

/// Files whose top-level panicking functions are listed, with the path clippy resolves.
const FREE_FUNCTIONS: [(&str, &str); 1] = [("nn/init.rs", "tch::nn")];

/// The `pub fn` names of one owner (or of the top level, `None`) in tch's source `text`.
fn public_functions(text: &str, owner: Option<&str>) -> BTreeSet<String> {
    let mut current: Option<String> = None;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("impl") {
            // `impl Tensor {`, `impl<'a> Path<'a> {`; trait impls (`... for X`) do not count.
            let header = header.trim_start_matches(|c| c != ' ').trim();
            current = (!header.contains(" for ")).then(|| {
                header
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            });
            continue;
        }
        if line.starts_with('}') {
            current = None;
            continue;
        }
        let (indented, rest) = match line.trim_start().strip_prefix("pub fn ") {
            Some(rest) => (line.starts_with(' '), rest),
            None => continue,
        };
        let wanted = match owner {
            Some(owner) => indented && current.as_deref() == Some(owner),
            None => !indented,
        };
        if wanted {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The panicking names among `names`: `x` (or the operator form `g_x`) where `f_x` exists.
fn panicking(names: &BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .filter(|n| !n.starts_with("f_"))
        .filter(|n| {
            let base = n.strip_prefix("g_").unwrap_or(n);
            names.contains(&format!("f_{base}"))
        })
        .filter(|n| !EXEMPT.iter().any(|(e, _)| e == n))
        .cloned()
        .collect()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Failure::from(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Failure::from(format!("{}: {e}", dir.display())))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The text of `clippy.toml` for the tch sources in `src` (tch's `src` folder).
pub fn render(src: &Path) -> Result<String, Failure> {
    let mut texts = Vec::new();
    for file in rust_files(src)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Failure::from(format!("{}: {e}", file.display())))?;
        texts.push((file, text));
    }
    let mut entries = Vec::new();
    for (owner, path) in OWNERS {
        let mut names = BTreeSet::new();
        for (_, text) in &texts {
            names.extend(public_functions(text, Some(owner)));
        }
        entries.extend(panicking(&names).into_iter().map(|n| (path, n)));
    }
    for (file, path) in FREE_FUNCTIONS {
        let text = &texts
            .iter()
            .find(|(f, _)| f.ends_with(file))
            .ok_or_else(|| Failure::from(format!("{}: no {file}", src.display())))?
            .1;
        entries.extend(
            panicking(&public_functions(text, None))
                .into_iter()
                .map(|n| (path, n)),
        );
    }
    if entries.len() < 100 {
        return Err(format!(
            "{}: found only {} panicking tch functions; has tch's source layout changed?",
            src.display(),
            entries.len()
        )
        .into());
    }
    let mut out = String::from(
        "# Generated by `cargo xtask tch-lints` from tch's sources; do not edit by hand.\n\
         # Library crates return libtorch failures as errors instead of panicking: every tch\n\
         # function listed here panics on a libtorch error and has an `f_` twin that returns\n\
         # `Result`. The library crates deny `clippy::disallowed_methods` outside tests (see\n\
         # their lib.rs); the CLI, tests, benches and xtask allow it (Cargo.toml's lints).\n",
    );
    for (_, reason) in EXEMPT {
        out.push_str(&format!("# {reason}\n"));
    }
    out.push_str("disallowed-methods = [\n");
    for (path, name) in entries {
        let base = name.strip_prefix("g_").unwrap_or(&name);
        out.push_str(&format!(
            "  {{ path = \"{path}::{name}\", reason = \"use `f_{base}` and return the error\" }},\n"
        ));
    }
    out.push_str("]\n");
    Ok(out)
}

/// tch's `src` folder, from `cargo metadata` (the version Cargo.lock pins).
pub fn tch_source() -> Result<PathBuf, Failure> {
    let output = Command::new(crate::run::cargo_program())
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(crate::run::workspace_root())
        .output()
        .map_err(|e| Failure::from(format!("cargo metadata: {e}")))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Failure::from(format!("cargo metadata: {e}")))?;
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "tch")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| Failure::from("cargo metadata lists no tch package".to_owned()))?;
    Ok(Path::new(manifest)
        .parent()
        .map(|dir| dir.join("src"))
        .unwrap_or_default())
}

/// Whether `cargo xtask tch-lints` was asked to `--check` rather than write.
fn parse(args: &[String]) -> Result<bool, Failure> {
    match args {
        [] => Ok(false),
        [flag] if flag == "--check" => Ok(true),
        _ => Err("usage: cargo xtask tch-lints [--check]".to_owned().into()),
    }
}

/// The steps of `cargo xtask tch-lints [--check]`.
pub fn plan(args: &[String]) -> Result<Vec<Step>, Failure> {
    let what = if parse(args)? {
        "compare them with"
    } else {
        "write"
    };
    Ok(vec![Step::Own(format!(
        "read tch's sources (cargo metadata) and {what} {CLIPPY_TOML}"
    ))])
}

/// `cargo xtask tch-lints [--check]`.
pub fn tch_lints(args: &[String]) -> Result<(), Failure> {
    let check = parse(args)?;
    let text = render(&tch_source()?)?;
    let target = crate::run::workspace_root().join(CLIPPY_TOML);
    if check {
        let committed = std::fs::read_to_string(&target).unwrap_or_default();
        if committed != text {
            return Err(format!(
                "{} is stale for this tch: run `cargo xtask tch-lints`",
                target.display()
            )
            .into());
        }
        return Ok(());
    }
    std::fs::write(&target, text)
        .map_err(|e| Failure::from(format!("{}: {e}", target.display())))?;
    eprintln!("xtask: wrote {}", target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panicking_twins_are_found_per_owner_and_trait_impls_are_skipped() {
        let text = "\
impl Tensor {
    pub fn f_abs(&self) -> Result<Tensor, TchError> { todo!() }
    pub fn abs(&self) -> Tensor { self.f_abs().unwrap() }
    pub fn f_mul(&self, o: &Tensor) -> Result<Tensor, TchError> { todo!() }
    pub fn g_mul(&self, o: &Tensor) -> Tensor { self.f_mul(o).unwrap() }
    pub fn f_kind(&self) -> Result<Kind, TchError> { todo!() }
    pub fn kind(&self) -> Kind { self.f_kind().unwrap() }
    pub fn size(&self) -> Vec<i64> { todo!() }
}
impl<'a> Path<'a> {
    pub fn f_zeros(&self) -> Result<Tensor, TchError> { todo!() }
    pub fn zeros(&self) -> Tensor { todo!() }
}
impl Add for Tensor {
    pub fn f_neg(&self) -> Result<Tensor, TchError> { todo!() }
    pub fn neg(&self) -> Tensor { todo!() }
}
pub fn f_init() -> Result<Tensor, TchError> { todo!() }
pub fn init() -> Tensor { todo!() }
";
        let tensor = panicking(&public_functions(text, Some("Tensor")));
        assert_eq!(tensor, ["abs", "g_mul"]);
        assert_eq!(panicking(&public_functions(text, Some("Path"))), ["zeros"]);
        assert_eq!(panicking(&public_functions(text, None)), ["init"]);
    }

    #[test]
    fn the_committed_clippy_toml_matches_the_pinned_tch() {
        let text = render(&tch_source().unwrap()).unwrap();
        let committed =
            std::fs::read_to_string(crate::run::workspace_root().join(CLIPPY_TOML)).unwrap();
        assert!(
            committed == text,
            "clippy.toml is stale for this tch: run `cargo xtask tch-lints`"
        );
        for listed in [
            "tch::Tensor::matmul",
            "tch::Tensor::g_add",
            "tch::nn::Path::var",
        ] {
            assert!(text.contains(&format!("\"{listed}\"")), "{listed} missing");
        }
        assert!(!text.contains("\"tch::Tensor::f_matmul\""));
        assert!(!text.contains("\"tch::Tensor::kind\""));
    }
}
