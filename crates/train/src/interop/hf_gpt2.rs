//! The Hugging Face GPT-2 layout: `config.json` as `transformers`' `GPT2Config`, and
//! `model.safetensors` with `GPT2LMHeadModel`'s tensor names (`transformer.h.0.attn.c_attn.weight`,
//! ...), whose linear weights are `Conv1D`s stored `[in, out]`.
//!
//! A strata model is expressible in this layout when it is the GPT-2 architecture: learned
//! positions, LayerNorm, a GELU MLP (exact or tanh-approximated), full-width heads and no
//! depth method, sharing, adapter, QK-norm or soft-capping. A bias-free model exports zero
//! biases; an import whose biases are all zero comes back bias-free, so a round trip keeps
//! the config.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use strata_core::schema::{self, Location, Slot};
use strata_core::{MlpKind, ModelConfig, NormKind, PositionKind};
use strata_tensor::{Error, Result};
use tch::{Kind, Tensor};

/// The prefix of the transformer body's tensors in `GPT2LMHeadModel`.
const BODY_PREFIX: &str = "transformer.";
/// Attention buffers that older `transformers` versions saved with the weights.
const BUFFER_SUFFIXES: [&str; 2] = [".attn.bias", ".attn.masked_bias"];

/// The first field of `config` that GPT-2 cannot express, with what GPT-2 needs there.
pub fn inexpressible(config: &ModelConfig) -> Option<(&'static str, &'static str)> {
    let checks: [(bool, &str, &str); 10] = [
        (
            config.positions != PositionKind::Learned,
            "model.positions",
            "\"learned\" (GPT-2 has learned position embeddings)",
        ),
        (
            config.norm != NormKind::Layernorm,
            "model.norm",
            "\"layernorm\"",
        ),
        (
            !matches!(config.mlp, MlpKind::Gelu | MlpKind::GeluTanh),
            "model.mlp",
            "\"gelu\" or \"gelu_tanh\"",
        ),
        (
            config.attn_width() != config.d_model,
            "model.head_dim",
            "d_model / n_head",
        ),
        (config.qk_norm, "model.qk_norm", "false"),
        (
            config.logit_softcap.is_some(),
            "model.logit_softcap",
            "none",
        ),
        (config.dwa.is_some(), "model.dwa", "none (no DWA)"),
        (
            !config.depth.is_off(),
            "model.depth",
            "no depth method (value residual, LAuReL, hyper-connections, attention residuals)",
        ),
        (
            config.sharing.is_some(),
            "model.sharing",
            "none (a weight set per layer)",
        ),
        (
            config.lora.is_some(),
            "model.lora",
            "none (merge the adapters first)",
        ),
    ];
    checks
        .into_iter()
        .find(|(fails, _, _)| *fails)
        .map(|(_, field, needs)| (field, needs))
}

/// `config.json` for `config` (a model [`inexpressible`] accepts).
pub fn config_json(config: &ModelConfig) -> Value {
    let activation = match config.mlp {
        MlpKind::GeluTanh => "gelu_new",
        _ => "gelu",
    };
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.mlp_hidden(),
        "activation_function": activation,
        "layer_norm_epsilon": config.norm_eps(),
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": config.tied_embeddings,
        "use_cache": true,
        "torch_dtype": "float32",
    })
}

/// The GPT-2 form of `config`: the same model with every bias GPT-2 has.
fn with_biases(config: &ModelConfig) -> ModelConfig {
    ModelConfig {
        bias: true,
        ..config.clone()
    }
}

/// The `GPT2LMHeadModel` name of the strata tensor at `location`/`slot`.
fn hf_name(location: Location, slot: Slot) -> String {
    match location {
        Location::Head => location.name(slot),
        _ => format!("{BODY_PREFIX}{}", location.name(slot)),
    }
}

/// True for the weights GPT-2 stores transposed (`Conv1D`, `[in, out]`).
fn is_conv1d(location: Location, slot: Slot) -> bool {
    matches!(location, Location::Block { layer, .. } if !layer.is_norm()) && slot == Slot::Weight
}

/// The tensors of `GPT2LMHeadModel` from a strata model's named tensors (zero biases where
/// `config.bias` is off).
pub fn export_tensors(
    config: &ModelConfig,
    tensors: &[(String, Tensor)],
    source: &Path,
) -> Result<Vec<(String, Tensor)>> {
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    schema::schema(&with_biases(config))
        .into_iter()
        .map(|spec| {
            let name = spec.name();
            let tensor = match by_name.get(name.as_str()) {
                Some(t) => t.f_to_kind(Kind::Float)?,
                None if spec.slot == Slot::Bias && !config.bias => {
                    Tensor::f_zeros(spec.shape.as_slice(), (Kind::Float, tch::Device::Cpu))?
                }
                None => {
                    return Err(Error::checkpoint(
                        source,
                        format!("tensor `{name}` is missing; expected every tensor of the model"),
                    ));
                }
            };
            let tensor = if is_conv1d(spec.location, spec.slot) {
                tensor.f_tr()?.f_contiguous()?
            } else {
                tensor
            };
            Ok((hf_name(spec.location, spec.slot), tensor))
        })
        .collect()
}

/// A field of `config.json`, or an error naming the file and the field.
fn field<'a>(value: &'a Value, key: &str, file: &Path) -> Result<&'a Value> {
    value.get(key).filter(|v| !v.is_null()).ok_or_else(|| {
        Error::config(
            file.display().to_string(),
            key,
            "a value (a GPT-2 config.json names it)",
            "nothing",
        )
    })
}

/// A positive integer field of `config.json`.
fn count(value: &Value, key: &str, file: &Path) -> Result<usize> {
    let v = field(value, key, file)?;
    v.as_u64()
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| {
            Error::config(
                file.display().to_string(),
                key,
                "a positive integer",
                v.to_string(),
            )
        })
}

/// The strata model of a GPT-2 `config.json` (biases on; [`import_tensors`] turns them off
/// when they are all zero).
pub fn model_from_config(value: &Value, file: &Path) -> Result<ModelConfig> {
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let wrong = |key: &str, expected: &str, got: String| {
        Error::config(file.display().to_string(), key, expected, got)
    };
    if let Some(kind) = text("model_type").filter(|k| *k != "gpt2") {
        return Err(wrong("model_type", "\"gpt2\"", format!("{kind:?}")));
    }
    let mlp = match text("activation_function").unwrap_or("gelu_new") {
        "gelu" => MlpKind::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => MlpKind::GeluTanh,
        other => {
            return Err(wrong(
                "activation_function",
                "\"gelu\", \"gelu_new\" or \"gelu_pytorch_tanh\"",
                format!("{other:?}"),
            ));
        }
    };
    let flag =
        |key: &str, default: bool| value.get(key).and_then(Value::as_bool).unwrap_or(default);
    if !flag("scale_attn_weights", true) {
        return Err(wrong(
            "scale_attn_weights",
            "true (strata scales by 1/sqrt(head_dim))",
            "false".into(),
        ));
    }
    if flag("scale_attn_by_inverse_layer_idx", false) {
        return Err(wrong(
            "scale_attn_by_inverse_layer_idx",
            "false",
            "true".into(),
        ));
    }
    let d_model = count(value, "n_embd", file)?;
    let n_head = count(value, "n_head", file)?;
    if !d_model.is_multiple_of(n_head) {
        return Err(wrong(
            "n_head",
            &format!("a divisor of n_embd = {d_model}"),
            n_head.to_string(),
        ));
    }
    let mlp_hidden = match value.get("n_inner").filter(|v| !v.is_null()) {
        Some(_) => count(value, "n_inner", file)?,
        None => 4 * d_model,
    };
    let dropout = value
        .get("resid_pdrop")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let config = ModelConfig {
        vocab_size: count(value, "vocab_size", file)?,
        n_layer: count(value, "n_layer", file)?,
        n_head,
        d_model,
        block_size: count(value, "n_positions", file)?,
        mlp,
        mlp_hidden: (mlp_hidden != 4 * d_model).then_some(mlp_hidden),
        norm: NormKind::Layernorm,
        norm_eps: value
            .get("layer_norm_epsilon")
            .and_then(Value::as_f64)
            .filter(|&eps| eps != strata_core::layers::DEFAULT_EPS),
        positions: PositionKind::Learned,
        bias: true,
        tied_embeddings: flag("tie_word_embeddings", true),
        dropout,
        ..ModelConfig::default()
    };
    config.validate(&file.display().to_string())?;
    Ok(config)
}

/// The strata tensors of a `GPT2LMHeadModel` (`tensors` as read from its safetensors file,
/// with or without the `transformer.` prefix), in f32; returns the config with `bias` off
/// when every bias is zero.
pub fn import_tensors(
    config: &ModelConfig,
    tensors: Vec<(String, Tensor)>,
    file: &Path,
) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let mut by_name: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(n, t)| {
            (
                n.strip_prefix(BODY_PREFIX).map(str::to_owned).unwrap_or(n),
                t,
            )
        })
        .collect();
    let mut out = Vec::new();
    for spec in schema::schema(config) {
        let name = spec.name();
        let tensor = by_name.remove(&name).ok_or_else(|| {
            Error::checkpoint(
                file,
                format!(
                    "tensor `{}` is missing; expected every tensor of GPT-2 with this config.json",
                    hf_name(spec.location, spec.slot)
                ),
            )
        })?;
        let tensor = tensor.f_to_kind(Kind::Float)?;
        let tensor = if is_conv1d(spec.location, spec.slot) {
            tensor.f_tr()?.f_contiguous()?
        } else {
            tensor
        };
        if tensor.size() != spec.shape {
            return Err(Error::checkpoint(
                file,
                format!(
                    "tensor `{}` has shape {:?}; this config.json needs {:?}",
                    hf_name(spec.location, spec.slot),
                    tensor.size(),
                    spec.shape
                ),
            ));
        }
        out.push((name, tensor));
    }
    // A tied head may be saved next to the embedding; the attention masks are buffers.
    let ignored = |n: &str| {
        (n == "lm_head.weight" && config.tied_embeddings)
            || BUFFER_SUFFIXES.iter().any(|s| n.ends_with(s))
    };
    by_name.retain(|n, _| !ignored(n));
    if let Some(extra) = by_name.keys().min() {
        return Err(Error::checkpoint(
            file,
            format!("tensor `{extra}` has no place in GPT-2 with this config.json"),
        ));
    }
    let mut biases_zero = true;
    for (_, t) in out.iter().filter(|(n, _)| n.ends_with(".bias")) {
        biases_zero &= t.f_abs()?.f_max()?.f_double_value(&[])? == 0.0;
    }
    if !biases_zero {
        return Ok((config.clone(), out));
    }
    out.retain(|(n, _)| !n.ends_with(".bias"));
    let config = ModelConfig {
        bias: false,
        ..config.clone()
    };
    Ok((config, out))
}
