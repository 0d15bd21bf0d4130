//! [`CompareConfig`]: a paired comparison, read from TOML.
//!
//! ```toml
//! name = "compare-dwa"
//! base = "nanogpt-cpu.toml"        # a run config, relative to this file
//! set = ["model.n_layer=12"]       # overrides for every run
//! seeds = [1, 2, 3, 4, 5]          # at least 2: the pairs give the noise estimate
//! budgets = [500, 1000, 2000]      # training steps (or tokens with budget_unit = "tokens")
//! baseline_extra_budgets = [3000]  # the baseline alone trains these too
//! target_loss = 1.70               # optional: steps to reach it, per arm
//! aa = true                        # add the baseline again under the label `<baseline>-aa`
//!
//! [[arms]]
//! name = "baseline"                # the first arm is the baseline
//!
//! [[arms]]
//! name = "denseformer-1x1"
//! set = ["model.dwa.dilation=1", "model.dwa.period=1"]
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_sweep::Variant;
use strata_sweep::config::validate_variants;
use strata_tensor::{Error, Result};

/// What the numbers in `budgets` count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetUnit {
    /// Optimizer steps.
    #[default]
    Iters,
    /// Training tokens (rounded up to whole steps).
    Tokens,
}

/// A whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// Name of the comparison (default: the file's stem).
    #[serde(default)]
    pub name: String,
    /// The run config every run starts from, relative to the comparison file.
    pub base: PathBuf,
    /// Overrides applied to every run.
    #[serde(default)]
    pub set: Vec<String>,
    /// Seeds; every arm trains once per seed, and runs of one seed are paired.
    pub seeds: Vec<u64>,
    /// Training budgets, in `budget_unit`.
    pub budgets: Vec<u64>,
    /// What `budgets` count.
    #[serde(default)]
    pub budget_unit: BudgetUnit,
    /// Budgets the baseline (and its A/A twin) trains in addition, so that its curve reaches
    /// past the variants' losses at the largest budget.
    #[serde(default)]
    pub baseline_extra_budgets: Vec<u64>,
    /// The arms; the first is the baseline.
    pub arms: Vec<Variant>,
    /// Report the steps each arm needs to reach this validation loss.
    #[serde(default)]
    pub target_loss: Option<f64>,
    /// Add an A/A arm: the baseline again under the label `<baseline>-aa`.
    #[serde(default)]
    pub aa: bool,
    /// Evaluations per run (at least the final one).
    #[serde(default = "default_evals")]
    pub evals_per_run: u64,
    /// Bootstrap resamples of the seed pairs.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[serde(default)]
    pub bootstrap_seed: u64,
}

/// Default evaluations per run.
fn default_evals() -> u64 {
    4
}

/// Default bootstrap resamples.
fn default_bootstrap() -> usize {
    2000
}

/// Override keys a variant may not set: they change the data, the token stream, the
/// evaluation or the budget, so its runs would not be comparable with the baseline's.
const NOT_COMPARABLE: [(&str, &str); 10] = [
    ("data.", "the corpus or tokenizer"),
    ("model.vocab_size", "the vocabulary"),
    ("model.block_size", "the context, hence the token stream"),
    ("train.batch_size", "the token stream"),
    ("train.seed", "the seed pairing"),
    ("train.max_iters", "the budget (set `budgets`)"),
    ("train.lr_decay_iters", "the budget's schedule"),
    ("train.eval_interval", "the evaluation points"),
    ("train.eval_iters", "the evaluation set"),
    ("name", "the run names"),
];

impl CompareConfig {
    /// Reads and checks a comparison file; `base` becomes relative to the working folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let file = path.display().to_string();
        let mut config: CompareConfig = toml::from_str(&text).map_err(|e| Error::Parse {
            file: file.clone(),
            message: e.to_string().trim().to_owned(),
        })?;
        if config.name.is_empty() {
            config.name = path.file_stem().map_or_else(
                || "compare".to_owned(),
                |s| s.to_string_lossy().into_owned(),
            );
        }
        if config.base.is_relative() {
            config.base = path.parent().unwrap_or(Path::new(".")).join(&config.base);
        }
        config.validate(&file)?;
        Ok(config)
    }

    /// The baseline arm.
    pub fn baseline(&self) -> &Variant {
        &self.arms[0]
    }

    /// The A/A arm's label.
    pub fn aa_name(&self) -> String {
        format!("{}-aa", self.baseline().name)
    }

    /// Every arm that is trained: the configured ones, then the A/A twin when asked for.
    pub fn all_arms(&self) -> Vec<Variant> {
        let mut arms = self.arms.clone();
        if self.aa {
            arms.push(Variant {
                name: self.aa_name(),
                set: self.baseline().set.clone(),
            });
        }
        arms
    }

    /// Keeps the baseline and the named variants (in the file's order): part of a comparison
    /// trained now, the rest later into the same study folder. An unknown name is refused,
    /// listing the comparison's arms; `file` names the comparison in errors.
    pub fn keep_arms(&mut self, names: &[String], file: &str) -> Result<()> {
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.arms.iter().any(|a| &a.name == *n))
        {
            let known: Vec<String> = self.arms.iter().map(|a| format!("`{}`", a.name)).collect();
            return Err(Error::config(
                file,
                "arms.name",
                format!("one of the comparison's arms ({})", known.join(", ")),
                format!("`{unknown}`"),
            ));
        }
        let baseline = self.baseline().name.clone();
        self.arms
            .retain(|a| a.name == baseline || names.contains(&a.name));
        self.validate(file)
    }

    /// Checks the comparison; `file` names it in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: String| {
            Err(Error::config(file, field, expected, found))
        };
        if self.seeds.len() < 2 {
            return err(
                "seeds",
                "at least 2 seeds (with one seed there is no paired noise estimate, so no \
                 interval and no verdict)",
                format!("{:?}", self.seeds),
            );
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        if seeds.windows(2).any(|w| w[0] == w[1]) {
            return err("seeds", "distinct seeds", format!("{:?}", self.seeds));
        }
        for (field, budgets, least) in [
            ("budgets", &self.budgets, 1),
            ("baseline_extra_budgets", &self.baseline_extra_budgets, 0),
        ] {
            if budgets.len() < least || budgets.contains(&0) {
                return err(
                    field,
                    "positive budgets (at least one in `budgets`)",
                    format!("{budgets:?}"),
                );
            }
        }
        validate_variants(&self.arms, "arms", file)?;
        if self.arms.len() < 2 && !self.aa {
            return err(
                "arms",
                "a baseline and at least one variant (or `aa = true`)",
                format!("{} arm", self.arms.len()),
            );
        }
        if self.aa && self.arms.iter().any(|a| a.name == self.aa_name()) {
            return err(
                "arms.name",
                &format!("no arm named `{}` (the A/A arm's label)", self.aa_name()),
                format!("`{}`", self.aa_name()),
            );
        }
        for (i, arm) in self.arms.iter().enumerate() {
            if let Some((item, why)) = not_comparable(&arm.set) {
                return err(
                    &format!("arms[{i}].set"),
                    &format!(
                        "overrides that keep the runs comparable (`{item}` changes {why}, so \
                         `{}` would not be comparable with the baseline)",
                        arm.name
                    ),
                    format!("`{item}`"),
                );
            }
        }
        if let Some(t) = self.target_loss
            && !(t > 0.0 && t.is_finite())
        {
            return err("target_loss", "a positive loss", t.to_string());
        }
        if self.evals_per_run == 0 {
            return err("evals_per_run", "at least 1", "0".to_owned());
        }
        if self.bootstrap < 100 {
            return err(
                "bootstrap",
                "at least 100 resamples",
                self.bootstrap.to_string(),
            );
        }
        Ok(())
    }
}

/// The first override of `set` that makes runs incomparable, with what it changes.
pub fn not_comparable(set: &[String]) -> Option<(&str, &'static str)> {
    set.iter().find_map(|item| {
        let key = item
            .split_once('=')
            .map_or(item.as_str(), |(k, _)| k)
            .trim();
        NOT_COMPARABLE
            .iter()
            .find(|(prefix, _)| {
                if prefix.ends_with('.') {
                    key.starts_with(prefix) || key == prefix.trim_end_matches('.')
                } else {
                    key == *prefix
                }
            })
            .map(|(_, why)| (item.as_str(), *why))
    })
}
