//! Tokenizers: char-level (nanoGPT's `shakespeare_char`), raw bytes, and byte-level BPE.
//!
//! Every tokenizer serialises to one self-describing JSON document ([`Tokenizer::to_json`])
//! that restores it exactly ([`Tokenizer::from_json`]); a CRC32 of that document is the
//! [`Tokenizer::fingerprint`] that checkpoints record to catch a tokenizer mismatch.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_tensor::{Error, Result};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::ModelWrapper;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// Value of the `format` field that marks a strata tokenizer document.
const FORMAT: &str = "strata-tokenizer";
/// Version of the strata tokenizer document.
const VERSION: u32 = 1;
/// Number of byte-level symbols every BPE vocabulary starts from.
const BYTE_ALPHABET: usize = 256;
/// Approximate size in bytes of the chunks a long text is split into for BPE.
const BPE_CHUNK_BYTES: usize = 64 * 1024;

/// Which tokenizer a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One token per distinct character of the corpus, ids in sorted character order.
    #[default]
    Char,
    /// One token per UTF-8 byte; 256 ids.
    Byte,
    /// Byte-level BPE trained on the corpus with the `tokenizers` crate.
    Bpe,
}

impl TokenizerKind {
    /// The lowercase name used in configs and JSON (`char`, `byte`, `bpe`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Char => "char",
            Self::Byte => "byte",
            Self::Bpe => "bpe",
        }
    }
}

/// A trained tokenizer of any [`TokenizerKind`].
#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: Inner,
}

/// The kind-specific state of a [`Tokenizer`].
#[derive(Clone, Debug)]
enum Inner {
    Char(CharVocab),
    Byte,
    Bpe(Box<tokenizers::Tokenizer>),
}

/// Char-level vocabulary: id `i` is `chars[i]`.
#[derive(Clone, Debug)]
struct CharVocab {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl CharVocab {
    /// Builds the vocabulary from sorted, distinct characters.
    fn new(chars: Vec<char>) -> Self {
        let ids = chars.iter().zip(0u32..).map(|(&c, i)| (c, i)).collect();
        Self { chars, ids }
    }
}

/// The strata tokenizer document written by [`Tokenizer::to_json`].
#[derive(Serialize, Deserialize)]
struct Stored {
    format: String,
    version: u32,
    #[serde(flatten)]
    body: StoredBody,
}

/// The kind-specific part of [`Stored`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum StoredBody {
    Char { chars: String },
    Byte,
    Bpe { tokenizer: serde_json::Value },
}

impl Tokenizer {
    /// Trains a tokenizer of `kind` on `text`; `bpe_vocab_size` is used only for BPE.
    pub fn train(kind: TokenizerKind, text: &str, bpe_vocab_size: usize) -> Result<Tokenizer> {
        if text.is_empty() && kind != TokenizerKind::Byte {
            return Err(Error::Invalid(format!(
                "cannot train a {} tokenizer on empty text; expected a non-empty corpus",
                kind.name()
            )));
        }
        let inner = match kind {
            TokenizerKind::Char => {
                let chars: BTreeSet<char> = text.chars().collect();
                Inner::Char(CharVocab::new(chars.into_iter().collect()))
            }
            TokenizerKind::Byte => Inner::Byte,
            TokenizerKind::Bpe => Inner::Bpe(Box::new(train_bpe(text, bpe_vocab_size)?)),
        };
        let tokenizer = Tokenizer { inner };
        tracing::info!(
            kind = kind.name(),
            vocab_size = tokenizer.vocab_size(),
            "trained tokenizer"
        );
        Ok(tokenizer)
    }

    /// Encodes `text` to token ids; fails on a character a char-level vocabulary lacks.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Char(vocab) => text
                .chars()
                .enumerate()
                .map(|(pos, c)| {
                    vocab.ids.get(&c).copied().ok_or_else(|| {
                        Error::Invalid(format!(
                            "char-level tokenizer: character {c:?} (U+{:04X}) at character {pos} \
                             is not in the vocabulary of {} characters; expected only characters \
                             that occur in the training corpus",
                            c as u32,
                            vocab.chars.len()
                        ))
                    })
                })
                .collect(),
            Inner::Byte => Ok(text.bytes().map(u32::from).collect()),
            Inner::Bpe(tok) => encode_bpe(tok, text, BPE_CHUNK_BYTES),
        }
    }

    /// Decodes token ids to text; ids outside the vocabulary become U+FFFD (char, byte) or
    /// are dropped (BPE), and invalid UTF-8 is replaced lossily.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Inner::Char(vocab) => ids
                .iter()
                .map(|&id| {
                    vocab
                        .chars
                        .get(id as usize)
                        .copied()
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
            Inner::Byte => {
                let mut bytes = Vec::with_capacity(ids.len());
                for &id in ids {
                    match u8::try_from(id) {
                        Ok(b) => bytes.push(b),
                        Err(_) => bytes.extend_from_slice("\u{FFFD}".as_bytes()),
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Inner::Bpe(tok) => tok.decode(ids, false).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "BPE decode failed; returning empty text");
                String::new()
            }),
        }
    }

    /// Number of distinct token ids.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Char(vocab) => vocab.chars.len(),
            Inner::Byte => BYTE_ALPHABET,
            Inner::Bpe(tok) => tok.get_vocab_size(true),
        }
    }

    /// Which kind of tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        match &self.inner {
            Inner::Char(_) => TokenizerKind::Char,
            Inner::Byte => TokenizerKind::Byte,
            Inner::Bpe(_) => TokenizerKind::Bpe,
        }
    }

    /// The characters of a char-level vocabulary in id order (`None` for other kinds).
    pub fn chars(&self) -> Option<&[char]> {
        match &self.inner {
            Inner::Char(vocab) => Some(&vocab.chars),
            _ => None,
        }
    }

    /// The `tokenizers` crate's tokenizer of a BPE vocabulary (`None` for other kinds).
    pub fn bpe(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.inner {
            Inner::Bpe(tok) => Some(tok),
            _ => None,
        }
    }

    /// Serialises the tokenizer to a self-describing JSON document that [`Self::from_json`]
    /// restores exactly.
    #[allow(
        clippy::expect_used,
        reason = "serialising plain data (strings, numbers, maps with string keys) to JSON \
                  cannot fail; no libtorch value is involved"
    )]
    pub fn to_json(&self) -> String {
        let body = match &self.inner {
            Inner::Char(vocab) => StoredBody::Char {
                chars: vocab.chars.iter().collect(),
            },
            Inner::Byte => StoredBody::Byte,
            Inner::Bpe(tok) => StoredBody::Bpe {
                tokenizer: serde_json::to_value(tok.as_ref())
                    .expect("a tokenizers::Tokenizer always serialises to JSON"),
            },
        };
        let stored = Stored {
            format: FORMAT.to_string(),
            version: VERSION,
            body,
        };
        serde_json::to_string_pretty(&stored).expect("a tokenizer document always serialises")
    }

    /// Restores a tokenizer from [`Self::to_json`] output, or from a byte-level BPE
    /// `tokenizer.json` of the `tokenizers` crate; `source` names the origin in errors.
    pub fn from_json(json: &str, source: &Path) -> Result<Tokenizer> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            Error::data(
                source,
                format!("not valid JSON ({e}); expected a tokenizer"),
            )
        })?;
        let inner = if value.get("format").is_some() {
            let stored: Stored = serde_json::from_value(value).map_err(|e| {
                Error::data(
                    source,
                    format!("not a valid strata tokenizer ({e}); expected fields `format`, `version`, `kind` and the kind's data"),
                )
            })?;
            if stored.format != FORMAT || stored.version != VERSION {
                return Err(Error::data(
                    source,
                    format!(
                        "tokenizer format `{}` version {}; expected `{FORMAT}` version {VERSION}",
                        stored.format, stored.version
                    ),
                ));
            }
            match stored.body {
                StoredBody::Char { chars } => Inner::Char(char_vocab_from(&chars, source)?),
                StoredBody::Byte => Inner::Byte,
                StoredBody::Bpe { tokenizer } => {
                    Inner::Bpe(Box::new(bpe_from_value(tokenizer, source)?))
                }
            }
        } else if value.get("model").is_some() {
            Inner::Bpe(Box::new(bpe_from_value(value, source)?))
        } else {
            return Err(Error::data(
                source,
                format!(
                    "unrecognised tokenizer JSON; expected a strata tokenizer (`\"format\": \"{FORMAT}\"`) \
                     or a byte-level BPE tokenizer.json"
                ),
            ));
        };
        Ok(Tokenizer { inner })
    }

    /// Reads a tokenizer file written by [`Self::save`] (or any byte-level BPE tokenizer.json).
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let json = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::from_json(&json, path)
    }

    /// Writes `tokenizer.json`: the `tokenizers` crate's standard format for BPE, the strata
    /// document for char and byte tokenizers.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = match &self.inner {
            Inner::Bpe(tok) => tok.to_string(true).map_err(|e| {
                Error::Invalid(format!(
                    "{}: cannot serialise BPE tokenizer: {e}",
                    path.display()
                ))
            })?,
            _ => self.to_json(),
        };
        std::fs::write(path, json).map_err(Error::io(path))
    }

    /// A short stable hex hash (CRC32 of [`Self::to_json`]) that identifies the vocabulary.
    pub fn fingerprint(&self) -> String {
        format!("{:08x}", crc32fast::hash(self.to_json().as_bytes()))
    }
}

/// Trains a byte-level BPE tokenizer on `text` with at most `vocab_size` tokens.
fn train_bpe(text: &str, vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    if vocab_size < BYTE_ALPHABET {
        return Err(Error::Invalid(format!(
            "BPE vocab_size {vocab_size} is too small; expected at least {BYTE_ALPHABET} \
             (the byte alphabet) plus room for merges"
        )));
    }
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(byte_level()));
    tok.with_decoder(Some(byte_level()));
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::from(trainer);
    tok.train(
        &mut trainer,
        split_chunks(text, BPE_CHUNK_BYTES).into_iter(),
    )
    .map_err(|e| Error::Invalid(format!("BPE training failed: {e}")))?;
    let trained = tok.get_vocab_size(true);
    if trained < vocab_size {
        tracing::warn!(
            requested = vocab_size,
            trained,
            "BPE corpus too small for the requested vocab_size"
        );
    }
    Ok(tok)
}

/// Encodes `text` with a BPE tokenizer, in parallel over chunks of about `chunk_bytes`.
fn encode_bpe(tok: &tokenizers::Tokenizer, text: &str, chunk_bytes: usize) -> Result<Vec<u32>> {
    let encodings = tok
        .encode_batch_fast(split_chunks(text, chunk_bytes), false)
        .map_err(|e| Error::Invalid(format!("BPE tokenizer: encoding failed: {e}")))?;
    Ok(encodings
        .iter()
        .flat_map(|e| e.get_ids().iter().copied())
        .collect())
}

/// The byte-level pre-tokenizer/decoder configuration: no prefix space, so that
/// `decode(encode(s)) == s`.
pub(crate) fn byte_level() -> ByteLevel {
    ByteLevel::new(false, true, true)
}

/// Builds a char vocabulary from a stored string, checking it is sorted and distinct.
fn char_vocab_from(chars: &str, source: &Path) -> Result<CharVocab> {
    let list: Vec<char> = chars.chars().collect();
    if list.is_empty() {
        return Err(Error::data(
            source,
            "char tokenizer has an empty `chars`; expected at least one character",
        ));
    }
    if let Some(w) = list.windows(2).find(|w| w[0] >= w[1]) {
        return Err(Error::data(
            source,
            format!(
                "char tokenizer `chars` is not strictly sorted at {:?} then {:?}; expected sorted distinct characters",
                w[0], w[1]
            ),
        ));
    }
    Ok(CharVocab::new(list))
}

/// Builds a `tokenizers` BPE tokenizer from its JSON value, checking it is byte-level BPE.
fn bpe_from_value(value: serde_json::Value, source: &Path) -> Result<tokenizers::Tokenizer> {
    let tok: tokenizers::Tokenizer = serde_json::from_value(value).map_err(|e| {
        Error::data(
            source,
            format!("not a valid tokenizers BPE tokenizer ({e}); expected tokenizer.json content"),
        )
    })?;
    let is_bpe = matches!(tok.get_model(), ModelWrapper::BPE(_));
    let byte_pre = matches!(
        tok.get_pre_tokenizer(),
        Some(PreTokenizerWrapper::ByteLevel(_))
    );
    let byte_dec = matches!(tok.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
    if !(is_bpe && byte_pre && byte_dec) {
        return Err(Error::data(
            source,
            "expected a BPE model with a ByteLevel pre-tokenizer and ByteLevel decoder",
        ));
    }
    check_vocab_ids(&tok, source)?;
    Ok(tok)
}

/// Refuses a vocabulary whose ids are not `0..n`, each once: a repeated id makes two tokens
/// one (the vocabulary then changes size when saved), a gap gives ids beyond the embedding.
fn check_vocab_ids(tok: &tokenizers::Tokenizer, source: &Path) -> Result<()> {
    let mut ids: Vec<u32> = tok.get_vocab(true).into_values().collect();
    ids.sort_unstable();
    let bad = ids.iter().zip(0u32..).find(|&(&id, want)| id != want);
    if let Some((&id, want)) = bad {
        let problem = if want > 0 && id == want - 1 {
            format!("id {id} is used twice")
        } else {
            format!("id {want} is missing")
        };
        return Err(Error::data(
            source,
            format!(
                "BPE vocabulary ids must be 0 to {} with each used once, but {problem}",
                ids.len().saturating_sub(1)
            ),
        ));
    }
    Ok(())
}

/// Splits `text` into pieces of about `target` bytes, cutting only just before a `\n` that
/// follows a visible ASCII character: the byte-level pre-tokenizer splits there anyway, so
/// encoding the pieces gives exactly the tokens of encoding the whole text.
fn split_chunks(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut chunks = Vec::with_capacity(text.len() / target.max(1) + 1);
    let mut start = 0;
    let mut pos = target;
    while pos < bytes.len() {
        if bytes[pos] == b'\n' && bytes[pos - 1].is_ascii_graphic() {
            chunks.push(&text[start..pos]);
            start = pos;
            pos += target;
        } else {
            pos += 1;
        }
    }
    if start < text.len() || chunks.is_empty() {
        chunks.push(&text[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::{encode_bpe, split_chunks, train_bpe};

    #[test]
    fn chunked_bpe_encoding_equals_whole_text_encoding() {
        let text = "a\n\n\nb  \n c.\n\t\nd's \n\n e\r\nf 12\n\n\n\n  g!\nh\u{a0}\ni\n";
        let corpus = text.repeat(20);
        let tok = train_bpe(&corpus, 280).unwrap();
        let whole = tok.encode_fast(text, false).unwrap();
        for chunk_bytes in 1..text.len() + 1 {
            let ids = encode_bpe(&tok, text, chunk_bytes).unwrap();
            assert_eq!(ids, whole.get_ids(), "chunk_bytes {chunk_bytes}");
        }
    }

    #[test]
    fn split_chunks_covers_text_and_cuts_before_newlines() {
        let text = "ab\n\n cd\nef  \ngh\n";
        for target in 1..text.len() + 2 {
            let chunks = split_chunks(text, target);
            assert_eq!(chunks.concat(), text);
            for c in &chunks[1..] {
                assert!(c.starts_with('\n'));
            }
        }
        assert_eq!(split_chunks("", 4), vec![""]);
    }
}
