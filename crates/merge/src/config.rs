//! [`MergeConfig`]: what `strata merge --config merge.toml` builds, read from TOML.
//!
//! ```toml
//! out = "runs/merged"                 # the run folder written (a normal checkpoint)
//! base = "runs/base"                  # the common base (task_arithmetic, ties, dare)
//! models = ["runs/ft-a", "runs/ft-b"] # the fine-tunes (checkpoint or run folders)
//! method = "ties"                     # linear | task_arithmetic | ties | dare | slerp
//! weights = [1.0, 1.0]                # soup weights or λ_i, one per model
//! density = 0.5                       # ties: fraction of each delta kept
//! drop = 0.5                          # dare: drop probability
//! t = 0.5                             # slerp: position between models[0] and models[1]
//! seed = 0                            # dare masks
//!
//! [[groups]]                          # per-tensor-group overrides, later groups win
//! tensors = "h.*.mlp.*"               # glob over tensor names (`*` matches anything)
//! t = 0.3
//!
//! [layers]                            # optional: a layer plan applied to the result
//! plan = "1-1-2-2"                    # or slices = [[0, 2], [1, 3]], or solar = { drop = 1 }
//! tied = false
//! source = "runs/base"                # only without `method`: the model to expand
//! ```

use crate::methods::{MethodKind, MethodParams};
use crate::plan::LayerPlanSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};

/// A merge and/or layer-plan job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    /// The run folder to write (the command line's `--out` wins).
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// The common base model of the fine-tunes.
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// The models to merge.
    #[serde(default)]
    pub models: Vec<PathBuf>,
    /// The merge method; absent for a layer plan alone.
    #[serde(default)]
    pub method: Option<MethodKind>,
    /// Soup weights (linear) or λ_i, one per model (default: 1/n for linear, 1 otherwise).
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Linear: divide by the sum of the weights.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// TIES: fraction of each delta's entries kept.
    #[serde(default = "half")]
    pub density: f64,
    /// DARE: probability of dropping a delta entry.
    #[serde(default = "half")]
    pub drop: f64,
    /// SLERP: interpolation position.
    #[serde(default = "half")]
    pub t: f64,
    /// DARE: seed of the drop masks.
    #[serde(default)]
    pub seed: u64,
    /// Per-tensor-group parameter overrides.
    #[serde(default)]
    pub groups: Vec<GroupOverride>,
    /// A layer plan applied to the merged model (or to `layers.source`).
    #[serde(default)]
    pub layers: Option<LayerPlanSpec>,
}

/// Parameters for the tensors whose names match a glob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOverride {
    /// Glob over tensor names; `*` matches any run of characters.
    pub tensors: String,
    /// Soup weights or λ_i for this group.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Linear normalisation for this group.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// TIES density for this group.
    #[serde(default)]
    pub density: Option<f64>,
    /// DARE drop probability for this group.
    #[serde(default)]
    pub drop: Option<f64>,
    /// SLERP position for this group.
    #[serde(default)]
    pub t: Option<f64>,
}

fn yes() -> bool {
    true
}

fn half() -> f64 {
    0.5
}

impl MergeConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Parse {
            file: file.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks that the fields fit together; `file` names the config in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |field: &str, expected: &str, found: String| {
            Err(Error::config(file, field, expected, found))
        };
        let Some(method) = self.method else {
            if self.layers.is_none() {
                return err(
                    "method",
                    "a merge method (linear, task_arithmetic, ties, dare, slerp) or a [layers] plan",
                    "neither".to_owned(),
                );
            }
            let Some(layers) = self.layers.as_ref() else {
                return err("layers", "a [layers] plan", "nothing".to_owned());
            };
            if layers.source.is_none() && self.base.is_none() {
                return err(
                    "layers.source",
                    "the model to expand (or `base`)",
                    "nothing".to_owned(),
                );
            }
            return Ok(());
        };
        if self.models.is_empty() {
            return err(
                "models",
                "the checkpoints or run folders to merge",
                "an empty list".to_owned(),
            );
        }
        let needs_base = matches!(
            method,
            MethodKind::TaskArithmetic | MethodKind::Ties | MethodKind::Dare
        );
        if needs_base && self.base.is_none() {
            return err(
                "base",
                &format!("the common base model ({method:?} merges deltas from it)"),
                "nothing".to_owned(),
            );
        }
        if method == MethodKind::Slerp && self.models.len() != 2 {
            return err(
                "models",
                "exactly 2 models for slerp",
                format!("{} models", self.models.len()),
            );
        }
        if self.layers.as_ref().is_some_and(|l| l.source.is_some()) {
            return err(
                "layers.source",
                "no source with a merge method (the plan applies to the merged model)",
                "a source".to_owned(),
            );
        }
        let params = self.defaults();
        check_params(&params, self.models.len(), file, "")?;
        for (i, group) in self.groups.iter().enumerate() {
            if group.tensors.is_empty() {
                return err(
                    &format!("groups[{i}].tensors"),
                    "a glob over tensor names",
                    "\"\"".to_owned(),
                );
            }
            let mut p = params.clone();
            group.apply(&mut p);
            check_params(&p, self.models.len(), file, &format!("groups[{i}]."))?;
        }
        Ok(())
    }

    /// The method's parameters before any group override.
    fn defaults(&self) -> MethodParams {
        let method = self.method.unwrap_or(MethodKind::Linear);
        let n = self.models.len().max(1);
        let default_weight = if method == MethodKind::Linear {
            1.0 / n as f64
        } else {
            1.0
        };
        MethodParams {
            method,
            weights: self
                .weights
                .clone()
                .unwrap_or_else(|| vec![default_weight; n]),
            normalize: self.normalize,
            density: self.density,
            drop: self.drop,
            t: self.t,
            seed: self.seed,
        }
    }

    /// The parameters for tensor `name`: the defaults, then every matching group in order.
    pub fn params_for(&self, name: &str) -> MethodParams {
        let mut params = self.defaults();
        for group in &self.groups {
            if glob_match(&group.tensors, name) {
                group.apply(&mut params);
            }
        }
        params
    }
}

impl GroupOverride {
    /// Overwrites the parameters this group sets.
    fn apply(&self, p: &mut MethodParams) {
        if let Some(w) = &self.weights {
            p.weights = w.clone();
        }
        if let Some(v) = self.normalize {
            p.normalize = v;
        }
        if let Some(v) = self.density {
            p.density = v;
        }
        if let Some(v) = self.drop {
            p.drop = v;
        }
        if let Some(v) = self.t {
            p.t = v;
        }
    }
}

/// Checks parameter ranges and the number of weights; `prefix` locates a group's fields.
fn check_params(p: &MethodParams, models: usize, file: &str, prefix: &str) -> Result<()> {
    let err = |field: &str, expected: String, found: String| {
        Err(Error::config(
            file,
            format!("{prefix}{field}"),
            expected,
            found,
        ))
    };
    if p.weights.len() != models {
        return err(
            "weights",
            format!("{models} entries (one per model)"),
            format!("{} entries", p.weights.len()),
        );
    }
    if let Some(w) = p.weights.iter().find(|w| !w.is_finite()) {
        return err("weights", "finite numbers".to_owned(), w.to_string());
    }
    if !(p.density > 0.0 && p.density <= 1.0) {
        return err(
            "density",
            "a fraction in (0, 1]".to_owned(),
            p.density.to_string(),
        );
    }
    if !(0.0..1.0).contains(&p.drop) {
        return err(
            "drop",
            "a probability in [0, 1)".to_owned(),
            p.drop.to_string(),
        );
    }
    if !(0.0..=1.0).contains(&p.t) {
        return err("t", "a position in [0, 1]".to_owned(), p.t.to_string());
    }
    Ok(())
}

/// True when `text` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_wildcards() {
        assert!(glob_match("h.*.mlp.*", "h.3.mlp.c_fc.weight"));
        assert!(!glob_match("h.*.mlp.*", "h.3.attn.c_attn.weight"));
        assert!(glob_match("*", "wte.weight"));
        assert!(glob_match("wte.weight", "wte.weight"));
        assert!(!glob_match("wte", "wte.weight"));
        assert!(glob_match("*weight", "ln_f.weight"));
        assert!(glob_match("h.*.*.bias", "h.1.attn.c_proj.bias"));
    }
}
