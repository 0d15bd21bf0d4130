//! What one run config changes against another, as the `key=value` overrides that would make
//! it: how a study's report says what each run is, once the run itself was built as a value.

use crate::config::RunConfig;

impl RunConfig {
    /// The overrides (`section.key=value`, value in TOML syntax) that turn `base` into this
    /// config, in key order: every setting whose value differs, a whole array (such as
    /// `growth`) as one value; a setting `base` has and this config lacks reads `key=<unset>`.
    pub fn changes_from(&self, base: &RunConfig) -> Vec<String> {
        let (Ok(mine), Ok(theirs)) = (toml::Value::try_from(self), toml::Value::try_from(base))
        else {
            // Every field of a RunConfig serializes; nothing to compare otherwise.
            return Vec::new();
        };
        let mut out = Vec::new();
        differences("", Some(&mine), Some(&theirs), &mut out);
        out
    }
}

/// Appends the leaves where `mine` differs from `theirs` under the dotted `prefix`.
fn differences(
    prefix: &str,
    mine: Option<&toml::Value>,
    theirs: Option<&toml::Value>,
    out: &mut Vec<String>,
) {
    match (mine, theirs) {
        (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                differences(&path, a.get(key), b.get(key), out);
            }
        }
        (Some(a), Some(b)) if a == b => {}
        // A value displays on one line, tables inline: `{ a = 1 }`, `[{ b = 2 }]`.
        (Some(a), _) => out.push(format!("{prefix}={a}")),
        (None, Some(_)) => out.push(format!("{prefix}=<unset>")),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RunConfig;

    /// The shipped CPU recipe.
    const BASE: &str = include_str!("../../../configs/nanogpt-cpu.toml");

    fn parse(overrides: &[&str]) -> RunConfig {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::parse(BASE, "base.toml", "base", &overrides).unwrap()
    }

    #[test]
    fn the_changes_reapplied_to_the_base_give_the_config_back() {
        let base = parse(&[]);
        let run = parse(&[
            "train.seed=7",
            "model.n_layer=6",
            "train.checkpoint_interval=100",
            "growth=[{ step = 5, op = \"widen_mlp\", hidden = 1024, noise = 0.01 }]",
        ]);
        let changes = run.changes_from(&base);
        assert!(
            changes.contains(&"model.n_layer=6".to_owned()),
            "{changes:?}"
        );
        assert!(changes.contains(&"train.seed=7".to_owned()), "{changes:?}");
        let back = RunConfig::parse(BASE, "base.toml", "base", &changes).unwrap();
        assert_eq!(back, run);
        assert!(base.changes_from(&base).is_empty());
    }

    #[test]
    fn a_setting_the_run_drops_reads_unset() {
        let base = parse(&["train.checkpoint_interval=100"]);
        let run = parse(&[]);
        assert_eq!(
            run.changes_from(&base),
            ["train.checkpoint_interval=<unset>"]
        );
    }
}
