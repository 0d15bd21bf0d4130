//! Any strata tokenizer as a Hugging Face `tokenizer.json` that `tokenizers` and
//! `transformers`' `PreTrainedTokenizerFast` load and that encodes to the same ids: BPE as
//! trained; a char vocabulary as a BPE model over its characters without merges (the whole
//! text one word, so each character is a token); bytes as a byte-level BPE over the 256 byte
//! symbols without merges.

use crate::tokenizer::{Tokenizer, byte_level};
use strata_tensor::{Error, Result};
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BPE, Vocab};

/// The `tokenizers` tokenizer equivalent to `tokenizer`.
pub fn to_hf(tokenizer: &Tokenizer) -> Result<tokenizers::Tokenizer> {
    if let Some(bpe) = tokenizer.bpe() {
        return Ok(bpe.clone());
    }
    let symbols: Vec<char> = match tokenizer.chars() {
        Some(chars) => chars.to_vec(),
        None => byte_symbols().to_vec(),
    };
    let vocab: Vocab = symbols
        .iter()
        .zip(0u32..)
        .map(|(c, id)| (c.to_string(), id))
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .map_err(|e| Error::Invalid(format!("cannot build the Hugging Face tokenizer: {e}")))?;
    let mut hf = tokenizers::Tokenizer::new(model);
    if tokenizer.chars().is_some() {
        hf.with_decoder(Some(Fuse::new()));
    } else {
        hf.with_pre_tokenizer(Some(byte_level()));
        hf.with_decoder(Some(byte_level()));
    }
    Ok(hf)
}

/// GPT-2's printable symbol for each byte (byte-level BPE's alphabet, in byte order): the
/// printable Latin-1 bytes stand for themselves, the others for `U+0100` onwards in order.
pub fn byte_symbols() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut symbols = ['\0'; 256];
    let mut next = 256u32;
    for (b, symbol) in (0u32..).zip(symbols.iter_mut()) {
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *symbol = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    #[test]
    fn the_byte_symbols_are_byte_level_bpes_alphabet() {
        let ours: std::collections::HashSet<char> = byte_symbols().into_iter().collect();
        assert_eq!(ours.len(), 256);
        assert_eq!(ours, ByteLevel::alphabet().into_iter().collect());
        assert_eq!(byte_symbols()[b'A' as usize], 'A');
        assert_eq!(byte_symbols()[b' ' as usize], 'Ġ');
        assert_eq!(byte_symbols()[b'\n' as usize], 'Ċ');
    }
}
