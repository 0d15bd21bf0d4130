//! Turning a [`RunConfig`] into tokens: corpus, tokenizer, splits and the model config.

use crate::config::RunConfig;
use crate::data::{Corpus, TokenSplits};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use strata_core::ModelConfig;
use strata_tensor::{Error, Result};

/// Tiny Shakespeare (public domain), embedded so that a bare binary has a default corpus.
pub const TINY_SHAKESPEARE: &str = include_str!("../../../data/tinyshakespeare.txt");

/// How the default corpus is named in logs and errors.
pub const EMBEDDED_NAME: &str = "<embedded tinyshakespeare.txt>";

/// A run's data, ready for training or evaluation.
pub struct PreparedData {
    /// The tokenizer (trained on the corpus, or restored from a checkpoint).
    pub tokenizer: Tokenizer,
    /// Train and validation tokens.
    pub splits: TokenSplits,
    /// Where the corpus came from.
    pub source: PathBuf,
}

/// Loads the corpus named by `config.data.path`, or the embedded one.
pub fn load_corpus(config: &RunConfig) -> Result<Corpus> {
    match &config.data.path {
        Some(path) => Corpus::load(path),
        None => Ok(Corpus {
            text: TINY_SHAKESPEARE.to_owned(),
            sources: vec![PathBuf::from(EMBEDDED_NAME)],
        }),
    }
}

/// Loads and tokenizes the corpus; trains the tokenizer unless `tokenizer` is given.
pub fn prepare_data(config: &RunConfig, tokenizer: Option<Tokenizer>) -> Result<PreparedData> {
    let corpus = load_corpus(config)?;
    let source = config
        .data
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(EMBEDDED_NAME));
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => Tokenizer::train(
            config.data.tokenizer,
            &corpus.text,
            config.data.bpe_vocab_size,
        )?,
    };
    let tokens = tokenizer.encode(&corpus.text).map_err(|e| match e {
        Error::Invalid(message) => Error::data(&source, message),
        other => other,
    })?;
    let splits = TokenSplits::new(
        &tokens,
        config.data.val_fraction,
        config.model.block_size,
        &source,
    )?;
    tracing::info!(
        source = %source.display(),
        tokens = tokens.len(),
        vocab = tokenizer.vocab_size(),
        "corpus ready"
    );
    Ok(PreparedData {
        tokenizer,
        splits,
        source,
    })
}

/// The model config with the vocabulary taken from the tokenizer; validated against `file`.
pub fn resolve_model(
    config: &RunConfig,
    tokenizer: &Tokenizer,
    file: &Path,
) -> Result<ModelConfig> {
    let mut model = config.model.clone();
    let vocab = tokenizer.vocab_size();
    let file = file.display().to_string();
    if model.vocab_size == 0 {
        model.vocab_size = vocab;
    } else if model.vocab_size < vocab {
        return Err(Error::config(
            file,
            "model.vocab_size",
            format!("at least the tokenizer's {vocab} tokens (or 0 to take it from the tokenizer)"),
            model.vocab_size,
        ));
    }
    model.validate(&file)?;
    Ok(model)
}
