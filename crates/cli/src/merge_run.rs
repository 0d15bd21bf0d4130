//! `strata merge`: merges fine-tuned checkpoints and/or applies a layer plan, and writes the
//! result as a normal run folder whose checkpoint `eval`, `sample`, `info` and
//! `train --init-from` accept.

use std::path::{Path, PathBuf};
use strata_core::{Gpt, ModelConfig, ParamCount};
use strata_merge::{LayerPlan, MergeConfig, State, expand, merge_states, state_from};
use strata_tensor::{Error, Result};
use strata_train::checkpoint::{self, Checkpoint, CheckpointMeta};
use strata_train::run_folder;
use tch::{Device, nn};

/// What a merge wrote.
#[derive(Clone, Debug)]
pub struct MergeOutcome {
    /// The checkpoint folder inside the run folder.
    pub checkpoint: PathBuf,
    /// The new model's config.
    pub model: ModelConfig,
    /// The new model's parameter counts.
    pub params: ParamCount,
}

/// Runs the merge `config` (read from `config_file`) into `out` (or the config's `out`).
pub fn merge(
    config: &MergeConfig,
    config_file: &Path,
    out: Option<&Path>,
    overwrite: bool,
) -> Result<MergeOutcome> {
    let out_dir = out
        .map(Path::to_path_buf)
        .or_else(|| config.out.clone())
        .ok_or_else(|| {
            Error::config(
                config_file.display().to_string(),
                "out",
                "the run folder to write (or --out)",
                "nothing",
            )
        })?;
    let (source, state) = merged_state(config, config_file)?;
    let mut run = source.meta.config.clone();
    let (model, state) = match &config.layers {
        Some(layers) => {
            let plan = LayerPlan::from_spec(layers, run.model.n_layer)
                .map_err(|e| in_file(config_file, "layers", e))?;
            let expanded = expand(&run.model, &state, &plan, layers.tied, layers.dwa)?;
            (expanded.config, expanded.state)
        }
        None => (run.model.clone(), state),
    };
    let _lock = run_folder::prepare(&out_dir, "merge", false, overwrite, None)?;
    let vs = nn::VarStore::new(Device::Cpu);
    let gpt = Gpt::new(&vs.root(), &model)?;
    let tensors: Vec<(String, tch::Tensor)> = state.into_iter().collect();
    checkpoint::restore_weights(&vs, &tensors, config_file)?;
    run.model = model.clone();
    // The merged model is a new starting point: no growth of its sources is pending.
    run.growth.clear();
    run.name = out_dir
        .file_name()
        .map_or_else(|| "merged".to_owned(), |n| n.to_string_lossy().into_owned());
    let meta = CheckpointMeta {
        config: run.clone(),
        tokenizer: source.meta.tokenizer.clone(),
        tokenizer_fingerprint: source.meta.tokenizer_fingerprint.clone(),
        step: 0,
        seed: run.train.seed,
        tokens_seen: 0,
        best_val_loss: None,
        elapsed_s: 0.0,
        growth_applied: 0,
        train_flops: 0.0,
    };
    let checkpoint = checkpoint::save(&out_dir, &vs, Vec::new(), &meta)?;
    write_text(&out_dir.join("config.toml"), &run.to_toml())?;
    let recipe = toml::to_string(config).map_err(|e| Error::Invalid(e.to_string()))?;
    write_text(&out_dir.join("merge.toml"), &recipe)?;
    tracing::info!(out = %out_dir.display(), model = %model.variant_name(), "merged");
    Ok(MergeOutcome {
        checkpoint,
        params: gpt.param_count(),
        model,
    })
}

/// The checkpoint whose run config and tokenizer the result keeps, and the merged tensors
/// (or, without a method, the tensors of the model to expand); `config_file` names the config
/// in errors.
fn merged_state(config: &MergeConfig, config_file: &Path) -> Result<(Checkpoint, State)> {
    let Some(_) = config.method else {
        let path = config
            .layers
            .as_ref()
            .and_then(|l| l.source.clone())
            .or_else(|| config.base.clone())
            .ok_or_else(|| {
                Error::Invalid("merge: a layer plan needs `layers.source` or `base`".to_owned())
            })?;
        let source = checkpoint::load(&path)?;
        let state = state_from(&source.loaded.model)?;
        return Ok((source, state));
    };
    let base = config.base.as_deref().map(checkpoint::load).transpose()?;
    let models = config
        .models
        .iter()
        .map(|p| checkpoint::load(p))
        .collect::<Result<Vec<_>>>()?;
    let reference = base.as_ref().unwrap_or(&models[0]);
    for other in base.iter().chain(&models) {
        ensure_same_kind(reference, other)?;
    }
    let base_state = base
        .as_ref()
        .map(|b| state_from(&b.loaded.model))
        .transpose()?;
    let states = models
        .iter()
        .map(|m| state_from(&m.loaded.model))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = states[0].keys().map(String::as_str).collect();
    config.check_groups_match(&names, &config_file.display().to_string())?;
    let merged = merge_states(base_state.as_ref(), &states, |name| config.params_for(name))?;
    let keep = match base {
        Some(base) => base,
        None => models
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid("merge: no models to merge".to_owned()))?,
    };
    Ok((keep, merged))
}

/// Fails unless two checkpoints share architecture and tokenizer.
fn ensure_same_kind(reference: &Checkpoint, other: &Checkpoint) -> Result<()> {
    let (a, b) = (&reference.meta.config.model, &other.meta.config.model);
    if let Some(diff) = b.first_difference(a) {
        return Err(Error::checkpoint(
            &other.loaded.path,
            format!(
                "has another architecture than {}: {diff}",
                reference.loaded.path.display()
            ),
        ));
    }
    if other.meta.tokenizer_fingerprint != reference.meta.tokenizer_fingerprint {
        return Err(Error::checkpoint(
            &other.loaded.path,
            format!(
                "has another tokenizer than {}",
                reference.loaded.path.display()
            ),
        ));
    }
    Ok(())
}

/// Prefixes an error with the config file and section it concerns.
fn in_file(file: &Path, section: &str, err: Error) -> Error {
    Error::config(
        file.display().to_string(),
        section,
        "a valid layer plan",
        err,
    )
}

/// Writes a small text file.
fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(path))
}
