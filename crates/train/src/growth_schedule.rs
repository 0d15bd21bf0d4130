//! Growth during training: the `[[growth]]` schedule of a run config, the model config in
//! force at any step, and the learning-rate re-warmup after a ReLoRA restart.
//!
//! ```toml
//! [[growth]]
//! step = 1000
//! op = "insert_blocks"
//! after = [2, 4]
//! ```

use serde::{Deserialize, Serialize};
use strata_core::ModelConfig;
use strata_growth::GrowthOp;
use strata_tensor::{Error, Result};

/// One scheduled growth: apply `op` before training step `step`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthEvent {
    /// The step before which the model grows (1 to `max_iters - 1`).
    pub step: u64,
    /// What to do (`op = "widen_mlp"`, `"add_heads"`, `"widen_residual"`,
    /// `"insert_blocks"`, `"grow_lora_rank"`, `"relora_restart"`, `"grow_param_tokens"`,
    /// `"add_depth"`).
    #[serde(flatten)]
    pub op: GrowthOp,
}

/// Checks a schedule against the run: steps inside the run and in order, and every
/// operation valid for the model it meets. `file` names the config in errors.
pub fn validate(
    events: &[GrowthEvent],
    model: &ModelConfig,
    max_iters: u64,
    file: &str,
) -> Result<()> {
    let mut previous = 0;
    let mut config = model.clone();
    for (i, event) in events.iter().enumerate() {
        let field = format!("growth[{i}].step");
        if event.step == 0 || event.step >= max_iters {
            return Err(Error::config(
                file,
                field,
                format!(
                    "a step from 1 to max_iters - 1 = {}",
                    max_iters.saturating_sub(1)
                ),
                event.step,
            ));
        }
        if event.step < previous {
            return Err(Error::config(
                file,
                field,
                format!("steps in order (the previous growth is at step {previous})"),
                event.step,
            ));
        }
        previous = event.step;
        config = event.op.grown_config(&config).map_err(|e| {
            Error::config(
                file,
                format!("growth[{i}] ({})", event.op.label()),
                "a growth the model allows",
                e.to_string(),
            )
        })?;
    }
    Ok(())
}

/// The model after the first `applied` growth events.
pub fn model_after(
    events: &[GrowthEvent],
    model: &ModelConfig,
    applied: usize,
) -> Result<ModelConfig> {
    events
        .iter()
        .take(applied)
        .try_fold(model.clone(), |config, event| {
            event.op.grown_config(&config)
        })
}

/// The learning-rate factor at `step` after the applied events: a linear re-warmup from the
/// latest event with `rewarm_steps > 0` (a ReLoRA restart, depth methods added), 1 otherwise.
pub fn rewarm_factor(events: &[GrowthEvent], applied: usize, step: u64) -> f64 {
    let latest = events[..applied.min(events.len())]
        .iter()
        .rev()
        .map(|e| (e.step, e.op.rewarm_steps()))
        .find(|&(_, steps)| steps > 0);
    match latest {
        Some((at, len)) if step >= at => ((step - at + 1) as f64 / len as f64).min(1.0),
        _ => 1.0,
    }
}

/// The seed of the `index`-th growth of a run seeded by `seed`.
pub fn growth_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewarm_ramps_linearly_after_the_latest_restart() {
        let events = vec![
            GrowthEvent {
                step: 10,
                op: GrowthOp::ReloraRestart { rewarm_steps: 4 },
            },
            GrowthEvent {
                step: 20,
                op: GrowthOp::GrowLoraRank { rank: 8 },
            },
        ];
        assert_eq!(rewarm_factor(&events, 0, 10), 1.0);
        assert_eq!(rewarm_factor(&events, 1, 10), 0.25);
        assert_eq!(rewarm_factor(&events, 1, 12), 0.75);
        assert_eq!(rewarm_factor(&events, 2, 25), 1.0);
        let added = vec![GrowthEvent {
            step: 30,
            op: GrowthOp::AddDepth {
                dwa: None,
                depth: strata_core::DepthConfig {
                    mudd: true,
                    ..Default::default()
                },
                rewarm_steps: 2,
            },
        }];
        assert_eq!(rewarm_factor(&added, 1, 30), 0.5);
        assert_eq!(rewarm_factor(&added, 1, 31), 1.0);
    }
}
