//! Integration tests for the char, byte and BPE tokenizers.

use std::path::{Path, PathBuf};

use strata_train::tokenizer::{Tokenizer, TokenizerKind};

/// The Tiny Shakespeare corpus shipped with the repository.
fn shakespeare_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/tinyshakespeare.txt")
}

fn shakespeare() -> String {
    std::fs::read_to_string(shakespeare_path()).expect("data/tinyshakespeare.txt is readable")
}

/// A few KB of training text for BPE.
fn sample_text() -> String {
    let text = shakespeare();
    let mut end = 6000;
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text[..end].to_string()
}

/// Text never seen in training: emoji, non-Latin scripts, odd whitespace.
const UNSEEN: &str = "  Zebra-quux 42!\n\n\n\tλόγος — Привет, мир; 日本語テキスト 🦀🚀\r\nend ";

fn bpe(vocab: usize) -> Tokenizer {
    Tokenizer::train(TokenizerKind::Bpe, &sample_text(), vocab).expect("BPE trains")
}

#[test]
fn char_vocab_of_hello_is_sorted_distinct_chars() {
    let tok = Tokenizer::train(TokenizerKind::Char, "hello", 0).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::Char);
    assert_eq!(tok.vocab_size(), 4);
    // sorted vocabulary: e=0, h=1, l=2, o=3
    assert_eq!(tok.encode("hello").unwrap(), vec![1, 0, 2, 2, 3]);
    assert_eq!(tok.encode("oleh").unwrap(), vec![3, 2, 0, 1]);
}

#[test]
fn char_round_trip() {
    let corpus = "The quick brown fox, jumps!\nOver the lazy dog? é ß 🦀";
    let tok = Tokenizer::train(TokenizerKind::Char, corpus, 0).unwrap();
    for s in ["fox jumps over", "é🦀ß\n!?", "", corpus] {
        let ids = tok.encode(s).unwrap();
        assert_eq!(ids.len(), s.chars().count());
        assert_eq!(tok.decode(&ids), s);
    }
}

#[test]
fn char_unknown_char_error_names_the_char() {
    let tok = Tokenizer::train(TokenizerKind::Char, "hello", 0).unwrap();
    let err = tok.encode("hellz").unwrap_err().to_string();
    assert!(err.contains("'z'"), "{err}");
    assert!(err.contains("U+007A"), "{err}");
}

#[test]
fn char_training_on_empty_text_fails() {
    let err = Tokenizer::train(TokenizerKind::Char, "", 0).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn byte_round_trips_any_utf8() {
    let tok = Tokenizer::train(TokenizerKind::Byte, "", 0).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::Byte);
    assert_eq!(tok.vocab_size(), 256);
    for s in [UNSEEN, "héllo 🌍 Привет 日本語 \0\u{7f}", ""] {
        let ids = tok.encode(s).unwrap();
        let bytes: Vec<u32> = s.bytes().map(u32::from).collect();
        assert_eq!(ids, bytes);
        assert_eq!(tok.decode(&ids), s);
    }
}

#[test]
fn byte_decode_is_lossy() {
    let tok = Tokenizer::train(TokenizerKind::Byte, "", 0).unwrap();
    // 0xFF is never valid UTF-8, 300 is not a byte
    assert_eq!(tok.decode(&[104, 0xFF, 105, 300]), "h\u{FFFD}i\u{FFFD}");
}

#[test]
fn bpe_round_trips_seen_and_unseen_text() {
    let tok = bpe(320);
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert!(
        tok.vocab_size() > 256 && tok.vocab_size() <= 320,
        "{}",
        tok.vocab_size()
    );
    let seen = sample_text();
    let ids = tok.encode(&seen).unwrap();
    assert!(
        ids.len() * 4 < seen.len() * 3,
        "merges should compress: {} ids",
        ids.len()
    );
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    assert_eq!(tok.decode(&ids), seen);
    for s in [UNSEEN, "", " ", "\n", "a"] {
        assert_eq!(tok.decode(&tok.encode(s).unwrap()), s, "{s:?}");
    }
}

#[test]
fn bpe_training_is_deterministic() {
    let a = bpe(300);
    let b = bpe(300);
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.encode(UNSEEN).unwrap(), b.encode(UNSEEN).unwrap());
}

#[test]
fn bpe_vocab_below_byte_alphabet_is_an_error() {
    let err = Tokenizer::train(TokenizerKind::Bpe, "hello", 100).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("100") && msg.contains("256"), "{msg}");
}

#[test]
fn json_round_trip_restores_identical_encodings() {
    let src = Path::new("checkpoint/tokenizer.json");
    let toks = [
        Tokenizer::train(TokenizerKind::Char, &sample_text(), 0).unwrap(),
        Tokenizer::train(TokenizerKind::Byte, "", 0).unwrap(),
        bpe(300),
    ];
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.";
    for tok in toks {
        let json = tok.to_json();
        let back = Tokenizer::from_json(&json, src).unwrap();
        assert_eq!(back.kind(), tok.kind());
        assert_eq!(back.vocab_size(), tok.vocab_size());
        assert_eq!(back.to_json(), json);
        assert_eq!(back.fingerprint(), tok.fingerprint());
        let ids = tok.encode(text).unwrap();
        assert_eq!(back.encode(text).unwrap(), ids);
        assert_eq!(back.decode(&ids), text);
    }
}

#[test]
fn fingerprint_differs_between_vocabularies() {
    let hello = Tokenizer::train(TokenizerKind::Char, "hello", 0).unwrap();
    let help = Tokenizer::train(TokenizerKind::Char, "help!", 0).unwrap();
    let byte = Tokenizer::train(TokenizerKind::Byte, "", 0).unwrap();
    let (b300, b280) = (bpe(300), bpe(280));
    let prints = [
        hello.fingerprint(),
        help.fingerprint(),
        byte.fingerprint(),
        b300.fingerprint(),
        b280.fingerprint(),
    ];
    for (i, a) in prints.iter().enumerate() {
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        for b in &prints[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // stable: the same vocabulary trained again has the same fingerprint
    let again = Tokenizer::train(TokenizerKind::Char, "olleh", 0).unwrap();
    assert_eq!(again.fingerprint(), hello.fingerprint());
}

#[test]
fn bpe_save_writes_a_standard_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let tok = bpe(300);
    tok.save(&path).unwrap();

    let hf = tokenizers::Tokenizer::from_file(&path).expect("HF tokenizers loads the file");
    for s in [UNSEEN, sample_text().as_str()] {
        let ours = tok.encode(s).unwrap();
        let theirs = hf.encode(s, false).unwrap();
        assert_eq!(theirs.get_ids(), ours.as_slice());
        assert_eq!(hf.decode(&ours, false).unwrap(), s);
    }

    let loaded = Tokenizer::load(&path).unwrap();
    assert_eq!(loaded.kind(), TokenizerKind::Bpe);
    assert_eq!(loaded.fingerprint(), tok.fingerprint());
}

#[test]
fn char_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let tok = Tokenizer::train(TokenizerKind::Char, "hello world\n", 0).unwrap();
    tok.save(&path).unwrap();
    let back = Tokenizer::load(&path).unwrap();
    assert_eq!(back.fingerprint(), tok.fingerprint());
    assert_eq!(back.encode("low\n").unwrap(), tok.encode("low\n").unwrap());
}

#[test]
fn from_json_errors_name_the_source() {
    let src = Path::new("runs/x/tokenizer.json");
    for bad in [
        "not json",
        "{\"hello\": 1}",
        "{\"format\": \"strata-tokenizer\", \"version\": 1, \"kind\": \"word\"}",
        "{\"format\": \"strata-tokenizer\", \"version\": 99, \"kind\": \"byte\"}",
        "{\"format\": \"strata-tokenizer\", \"version\": 1, \"kind\": \"char\", \"chars\": \"ba\"}",
        "{\"format\": \"strata-tokenizer\", \"version\": 1, \"kind\": \"char\", \"chars\": \"\"}",
    ] {
        let err = Tokenizer::from_json(bad, src).unwrap_err().to_string();
        assert!(err.contains("runs/x/tokenizer.json"), "{bad}: {err}");
        assert!(err.contains("expected"), "{bad}: {err}");
    }
}

#[test]
fn shakespeare_char_vocab_is_65() {
    let text = shakespeare();
    let tok = Tokenizer::train(TokenizerKind::Char, &text, 0).unwrap();
    assert_eq!(tok.vocab_size(), 65);
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids.len(), text.chars().count());
    // nanoGPT's shakespeare_char: '\n' is id 0, ' ' is id 1
    assert_eq!(tok.encode("\n ").unwrap(), vec![0, 1]);
}

#[test]
fn shakespeare_bpe_chunked_encoding_matches_whole_text() {
    let text = shakespeare();
    let start = std::time::Instant::now();
    let tok = Tokenizer::train(TokenizerKind::Bpe, &text, 512).unwrap();
    let ids = tok.encode(&text).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(tok.vocab_size(), 512);
    assert!(elapsed.as_secs() < 120, "train + encode took {elapsed:?}");
    assert_eq!(tok.decode(&ids), text);

    // encoding in chunks must give exactly the tokens of encoding the whole text at once
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
    let whole = hf.encode_fast(text.as_str(), false).unwrap();
    assert_eq!(whole.get_ids(), ids.as_slice());
}
