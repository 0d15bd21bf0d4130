//! [`MergeConfig`]: what a merge builds (`strata merge` reads one), read from TOML.
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
//!
//! (The example lists every field; a real config sets only the parameters of its method:
//! [`MergeConfig::validate`] refuses the others, and linear weights that cannot be normalised.
//! Group globs are checked against the models' tensors by [`MergeConfig::check_groups_match`].)

use crate::methods::{MethodKind, MethodParams};
use crate::plan::LayerPlanSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};

/// A merge and/or layer-plan job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    /// The run folder to write (a folder the caller passes wins).
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
    /// Linear: divide by the sum of the weights (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// TIES: fraction of each delta's entries kept (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    /// DARE: probability of dropping a delta entry (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<f64>,
    /// SLERP: interpolation position (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// DARE: seed of the drop masks (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
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

/// Default of `normalize`.
const NORMALIZE: bool = true;
/// Default of `density`, `drop` and `t`.
const HALF: f64 = 0.5;

/// Linear weights whose sum is below this fraction of their magnitudes (`|Σw| < tol · Σ|w|`)
/// cannot be normalised: dividing by the sum would blow them up (`[0.1, 0.2, -0.3]` would give
/// weights of about 1e16).
pub const NEAR_ZERO_SUM: f64 = 1e-6;

/// Every method parameter and the methods that use it.
const PARAMETERS: [(&str, &[MethodKind]); 6] = [
    (
        "weights",
        &[
            MethodKind::Linear,
            MethodKind::TaskArithmetic,
            MethodKind::Ties,
            MethodKind::Dare,
        ],
    ),
    ("normalize", &[MethodKind::Linear]),
    ("density", &[MethodKind::Ties]),
    ("drop", &[MethodKind::Dare]),
    ("t", &[MethodKind::Slerp]),
    ("seed", &[MethodKind::Dare]),
];

/// True when `weights` sum to (nearly) zero relative to their magnitudes, so that normalising
/// by their sum is meaningless.
pub fn sum_is_near_zero(weights: &[f64]) -> bool {
    let magnitude: f64 = weights.iter().map(|w| w.abs()).sum();
    weights.iter().sum::<f64>().abs() <= NEAR_ZERO_SUM * magnitude
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
            let Some(layers) = &self.layers else {
                return err(
                    "method",
                    "a merge method (linear, task_arithmetic, ties, dare, slerp) or a [layers] plan",
                    "neither".to_owned(),
                );
            };
            if layers.source.is_none() && self.base.is_none() {
                return err(
                    "layers.source",
                    "the model to expand (or `base`)",
                    "nothing".to_owned(),
                );
            }
            return self.check_no_merge_fields(file);
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
        check_used(method, &self.set_parameters(), file, "")?;
        let params = self.defaults();
        check_params(&params, self.models.len(), file, "")?;
        for (i, group) in self.groups.iter().enumerate() {
            let prefix = format!("groups[{i}].");
            if group.tensors.is_empty() {
                return err(
                    &format!("{prefix}tensors"),
                    "a glob over tensor names",
                    "\"\"".to_owned(),
                );
            }
            check_used(method, &group.set_parameters(), file, &prefix)?;
            let mut p = params.clone();
            group.apply(&mut p);
            check_params(&p, self.models.len(), file, &prefix)?;
        }
        Ok(())
    }

    /// A layer plan alone: refuses every field that only a merge method reads.
    fn check_no_merge_fields(&self, file: &str) -> Result<()> {
        let mut set = self.set_parameters();
        if !self.models.is_empty() {
            set.push(("models", format!("{:?}", self.models)));
        }
        if !self.groups.is_empty() {
            set.push(("groups", format!("{} [[groups]] tables", self.groups.len())));
        }
        match set.first() {
            Some((name, value)) => Err(Error::config(
                file,
                *name,
                format!(
                    "no `{name}` without a merge `method` (a [layers] plan alone reads only \
                     `layers`, `base` and `out`)"
                ),
                format!("{name} = {value}"),
            )),
            None => Ok(()),
        }
    }

    /// The method parameters this config sets, each with its value as written.
    fn set_parameters(&self) -> Vec<(&'static str, String)> {
        let mut set = shared_parameters(
            self.weights.as_deref(),
            self.normalize,
            self.density,
            self.drop,
            self.t,
        );
        push_set(&mut set, "seed", self.seed);
        set
    }

    /// Refuses a group glob that matches none of `names` (the models' tensor names), naming
    /// the glob; `file` names the config in errors.
    pub fn check_groups_match(&self, names: &[&str], file: &str) -> Result<()> {
        for (i, group) in self.groups.iter().enumerate() {
            if !names.iter().any(|name| glob_match(&group.tensors, name)) {
                return Err(Error::config(
                    file,
                    format!("groups[{i}].tensors"),
                    "a glob that matches at least one tensor of the models (e.g. `h.*.mlp.*`, \
                     `wte.weight`)",
                    format!("\"{}\", which matches no tensor", group.tensors),
                ));
            }
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
            normalize: self.normalize.unwrap_or(NORMALIZE),
            density: self.density.unwrap_or(HALF),
            drop: self.drop.unwrap_or(HALF),
            t: self.t.unwrap_or(HALF),
            seed: self.seed.unwrap_or(0),
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
    /// The method parameters this group sets, each with its value as written.
    fn set_parameters(&self) -> Vec<(&'static str, String)> {
        shared_parameters(
            self.weights.as_deref(),
            self.normalize,
            self.density,
            self.drop,
            self.t,
        )
    }

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

/// The method parameters a config and a group override can both set, those set with their
/// values as written.
fn shared_parameters(
    weights: Option<&[f64]>,
    normalize: Option<bool>,
    density: Option<f64>,
    drop: Option<f64>,
    t: Option<f64>,
) -> Vec<(&'static str, String)> {
    let mut set = Vec::new();
    if let Some(v) = weights {
        set.push(("weights", format!("{v:?}")));
    }
    push_set(&mut set, "normalize", normalize);
    push_set(&mut set, "density", density);
    push_set(&mut set, "drop", drop);
    push_set(&mut set, "t", t);
    set
}

/// Adds `name` and its value to `set` when the value is there.
fn push_set<T: std::fmt::Display>(
    set: &mut Vec<(&'static str, String)>,
    name: &'static str,
    v: Option<T>,
) {
    if let Some(v) = v {
        set.push((name, v.to_string()));
    }
}

/// Refuses a parameter in `set` that `method` does not use, naming it, the method and the
/// methods that do use it; `prefix` locates a group's fields.
fn check_used(method: MethodKind, set: &[(&str, String)], file: &str, prefix: &str) -> Result<()> {
    for (name, value) in set {
        let users = PARAMETERS
            .iter()
            .find(|(parameter, _)| parameter == name)
            .map_or(&[][..], |(_, users)| *users);
        if !users.contains(&method) {
            let users: Vec<&str> = users.iter().map(|m| m.name()).collect();
            return Err(Error::config(
                file,
                format!("{prefix}{name}"),
                format!(
                    "no `{name}` with method `{}`, which does not use it (`{name}` is a \
                     parameter of {})",
                    method.name(),
                    users.join(", ")
                ),
                format!("{name} = {value}"),
            ));
        }
    }
    Ok(())
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
    if p.method == MethodKind::Linear && p.normalize && sum_is_near_zero(&p.weights) {
        return err(
            "weights",
            format!(
                "weights whose sum is not near zero (|Σw| ≥ {NEAR_ZERO_SUM:e} · Σ|w|), since \
                 `normalize` divides by it (or `normalize = false`)"
            ),
            format!(
                "{:?}, summing to {:e}",
                p.weights,
                p.weights.iter().sum::<f64>()
            ),
        );
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
