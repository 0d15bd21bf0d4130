//! [`SweepConfig`]: the grid of a sweep, read from TOML.
//!
//! ```toml
//! name = "sweep-cpu"
//! base = "nanogpt-cpu.toml"          # a run config, relative to this file
//! tokens = [250_000, 500_000]        # training-token budgets D
//! set = ["train.eval_iters=10"]      # overrides for every run
//!
//! [[sizes]]
//! n_layer = 2
//! d_model = 64
//! n_head = 2
//!
//! [[variants]]
//! name = "baseline"
//!
//! seeds = [1, 2, 3]                 # paired seeds (optional)
//!
//! [[variants]]
//! name = "denseformer-1x1"
//! set = ["model.dwa.dilation=1", "model.dwa.period=1"]
//! ```

use crate::multiplier::MultiplierSettings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};

/// One model size of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Blocks.
    pub n_layer: usize,
    /// Residual width.
    pub d_model: usize,
    /// Attention heads.
    pub n_head: usize,
}

/// An architecture variant: a name and the overrides that make it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Name in tables and plots; the first variant is the baseline of the multipliers.
    pub name: String,
    /// `key=value` overrides of the base config (as `RunConfig::load` applies them).
    #[serde(default)]
    pub set: Vec<String>,
}

/// A whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Name of the sweep (default: the file's stem).
    #[serde(default)]
    pub name: String,
    /// The run config every run starts from, relative to the sweep file.
    pub base: PathBuf,
    /// Overrides applied to every run.
    #[serde(default)]
    pub set: Vec<String>,
    /// Model sizes.
    pub sizes: Vec<Size>,
    /// Training-token budgets.
    pub tokens: Vec<u64>,
    /// Architecture variants; the first is the baseline.
    pub variants: Vec<Variant>,
    /// Seeds: every (variant, size, budget) is trained once per seed, and the variants of a
    /// seed are paired (the same token stream and the same initial values for every shared
    /// parameter), so multipliers get paired intervals over seeds. Empty: the base config's
    /// seed, one run per point.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Evaluations per run (at least the final one).
    #[serde(default = "default_evals")]
    pub evals_per_run: u64,
    /// Fit and multiplier settings.
    #[serde(default)]
    pub fit: MultiplierSettings,
}

/// Default evaluations per run.
fn default_evals() -> u64 {
    4
}

impl SweepConfig {
    /// Reads and checks a sweep file; `base` becomes relative to the working folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let file = path.display().to_string();
        let mut config: SweepConfig = toml::from_str(&text).map_err(|e| Error::Parse {
            file: file.clone(),
            message: e.to_string().trim().to_owned(),
        })?;
        if config.name.is_empty() {
            config.name = path
                .file_stem()
                .map_or_else(|| "sweep".to_owned(), |s| s.to_string_lossy().into_owned());
        }
        if config.base.is_relative() {
            config.base = path.parent().unwrap_or(Path::new(".")).join(&config.base);
        }
        config.validate(&file)?;
        Ok(config)
    }

    /// Checks the grid; `file` names the sweep in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: String| {
            Err(Error::config(file, field, expected, found))
        };
        if self.sizes.is_empty() {
            return err("sizes", "at least one [[sizes]] table", "none".to_owned());
        }
        if let Some((i, s)) =
            self.sizes.iter().enumerate().find(|(_, s)| {
                s.n_layer == 0 || s.n_head == 0 || !s.d_model.is_multiple_of(s.n_head)
            })
        {
            return err(
                &format!("sizes[{i}]"),
                "n_layer >= 1 and a d_model that n_head divides",
                format!("{s:?}"),
            );
        }
        if self.tokens.is_empty() || self.tokens.contains(&0) {
            return err(
                "tokens",
                "one or more positive token budgets",
                format!("{:?}", self.tokens),
            );
        }
        validate_variants(&self.variants, "variants", file)?;
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        if let Some(w) = seeds.windows(2).find(|w| w[0] == w[1]) {
            return err("seeds", "distinct seeds", format!("{} twice", w[0]));
        }
        if self.evals_per_run == 0 {
            return err("evals_per_run", "at least 1", "0".to_owned());
        }
        Ok(())
    }
}

/// Checks a list of variants (the sweep's `variants`, a comparison's `arms`): at least one,
/// distinct names made of letters, digits, `-`, `_` and `.` (they name run folders);
/// `field` and `file` name them in errors.
pub fn validate_variants(variants: &[Variant], field: &str, file: &str) -> Result<()> {
    let err = |field: &str, expected: &str, found: String| {
        Err(Error::config(file, field, expected, found))
    };
    if variants.is_empty() {
        return err(
            field,
            &format!("at least one [[{field}]] table"),
            "none".to_owned(),
        );
    }
    let mut names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return err(field, "distinct names", format!("`{}` twice", w[0]));
    }
    if let Some(v) = variants.iter().find(|v| {
        v.name.is_empty()
            || !v
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }) {
        return err(
            &format!("{field}.name"),
            "a name of letters, digits, `-`, `_` and `.` (it names run folders)",
            format!("`{}`", v.name),
        );
    }
    Ok(())
}
