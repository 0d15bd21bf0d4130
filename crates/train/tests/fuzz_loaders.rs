//! Seeded fuzzing of every loader of user and checkpoint files: run configs (with `--set`
//! overrides), checkpoint `meta.json`, safetensors headers and tokenizer files. Valid inputs
//! are mutated (see `fuzz/mod.rs`); each loader must answer Ok or Err and never panic, what it
//! accepts must be usable (a config builds and runs its model, a checkpoint's model loads and
//! runs, a tokenizer encodes and round-trips), and inputs known to be invalid are refused.
//! About 4 s per target; `STRATA_FUZZ_ITERS=N` runs N inputs per target instead.

mod fuzz;

use serde_json::Value;
use std::path::{Path, PathBuf};
use strata_core::Gpt;
use strata_train::checkpoint::{self, CheckpointMeta};
use strata_train::checkpoint_io::{self, MODEL_FILE};
use strata_train::tokenizer::{Tokenizer, TokenizerKind};
use strata_train::{RunConfig, budget, growth_schedule};
use tch::{Device, Kind, Tensor, nn};

/// A small config exercising every section: growth, LoRA and DWA.
const RICH: &str = r#"
name = "rich"
[model]
n_layer = 2
n_head = 2
d_model = 16
block_size = 8
mlp = "swiglu"
norm = "rmsnorm"
positions = "rotary"
tied_embeddings = false
dropout = 0.1
[model.dwa]
dilation = 1
period = 1
[model.lora]
rank = 2
targets = ["attn", "mlp", "head"]
[data]
tokenizer = "bpe"
bpe_vocab_size = 300
val_fraction = 0.2
[train]
batch_size = 2
max_iters = 10
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 2
eps = 1e-8
weight_decay = 0.1
grad_clip = 1.0
eval_interval = 5
eval_iters = 1
threads = 1
[[growth]]
step = 5
op = "widen_mlp"
hidden = 64
noise = 0.01
"#;

/// Config texts to mutate: the shipped run configs and [`RICH`].
fn config_seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut texts: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sweep-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    texts.sort();
    texts.push(RICH.to_owned());
    texts
}

/// Every dotted key of a full config, for `--set` overrides.
fn config_keys() -> Vec<String> {
    let config = RunConfig::parse(RICH, "rich.toml", "rich", &[]).unwrap();
    let table: toml::Table = toml::from_str(&config.to_toml()).unwrap();
    let mut keys = Vec::new();
    fn walk(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => walk(&path, t, keys),
                _ => keys.push(path),
            }
        }
    }
    walk("", &table, &mut keys);
    keys
}

/// A config that parsed must be usable: valid again, its growth schedule checkable, its
/// memory need computable, and, when small, its model built and run on a batch.
fn use_config(config: &RunConfig) {
    config.validate("again").unwrap();
    let mut model = config.model.clone();
    if model.vocab_size == 0 {
        model.vocab_size = 300;
    }
    if model.validate("model").is_err() {
        return;
    }
    let need = budget::training_need(&model, &config.train);
    assert!(need.total() >= 0.0, "{need:?}");
    if growth_schedule::validate(&config.growth, &model, config.train.max_iters, "g").is_ok() {
        growth_schedule::model_after(&config.growth, &model, config.growth.len()).unwrap();
    }
    if budget::parameter_count(&model) > 2e5 || model.block_size > 64 || model.n_layer > 8 {
        return;
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let gpt = Gpt::new(&vs.root(), &model).unwrap();
    let t = model.block_size.min(4) as i64;
    let idx = Tensor::zeros([1, t], (Kind::Int64, Device::Cpu));
    let logits = gpt.forward(&idx, false).unwrap();
    assert_eq!(logits.size(), [1, t, model.vocab_size as i64]);
}

#[test]
fn run_configs_with_overrides_never_panic() {
    let seeds = config_seeds();
    let others: Vec<&[u8]> = seeds.iter().map(|s| s.as_bytes()).collect();
    let keys = config_keys();
    let (tried, accepted) = fuzz::run(
        "run config",
        0x70_6d_6c,
        3000,
        |m| {
            let seed = m.pick(&seeds).as_bytes();
            let text = if m.chance(0.7) {
                String::from_utf8_lossy(&m.bytes(seed, &others)).into_owned()
            } else {
                String::from_utf8_lossy(seed).into_owned()
            };
            let overrides: Vec<String> = (0..m.below(3))
                .map(|_| format!("{}={}", m.pick(&keys), m.pick(fuzz::INTERESTING)))
                .collect();
            (text, overrides)
        },
        |(text, overrides)| match RunConfig::parse(text, "fuzz.toml", "fuzz", overrides) {
            Ok(config) => {
                use_config(&config);
                true
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
                false
            }
        },
    );
    assert!(
        tried > 100 && accepted > 0,
        "{tried} tried, {accepted} accepted"
    );
}

/// A corpus for the checkpoint and tokenizer targets.
const TEXT: &str =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n";

/// A checkpoint of a tiny char-level model in `dir/run`; returns its folder.
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let tokenizer = Tokenizer::train(TokenizerKind::Char, TEXT, 0).unwrap();
    let text = format!(
        "[model]\nvocab_size = {}\nn_layer = 1\nn_head = 2\nd_model = 8\nblock_size = 8\n\
         [model.dwa]\n[train]\nbatch_size = 2\nmax_iters = 4\nlearning_rate = 1e-3\n\
         min_lr = 1e-4\nwarmup_iters = 1\neval_interval = 2\neval_iters = 1\ndevice = \"cpu\"\n",
        tokenizer.vocab_size()
    );
    let config = RunConfig::parse(&text, "tiny.toml", "tiny", &[]).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    Gpt::new(&vs.root(), &config.model).unwrap();
    let meta = CheckpointMeta {
        config,
        tokenizer: tokenizer.to_json(),
        tokenizer_fingerprint: tokenizer.fingerprint(),
        step: 2,
        seed: 1337,
        tokens_seen: 32,
        best_val_loss: Some(3.5),
        elapsed_s: 1.0,
        growth_applied: 0,
        train_flops: 1e6,
    };
    checkpoint::save(&dir.join("run"), &vs, Vec::new(), &meta).unwrap()
}

/// A loaded checkpoint must be usable: its model builds, takes the weights and runs.
fn use_checkpoint(dir: &Path) -> bool {
    let Ok(ckpt) = checkpoint::load(dir) else {
        return false;
    };
    let Ok((_vs, gpt)) = checkpoint::load_model(&ckpt, Device::Cpu) else {
        return false;
    };
    let ids = ckpt.tokenizer.encode("Speak").unwrap_or_else(|_| vec![0]);
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let t = ids.len().min(gpt.config().block_size);
    let idx = Tensor::from_slice(&ids[..t]).view([1, -1]);
    let logits = gpt.forward(&idx, false).unwrap();
    assert_eq!(logits.size()[1], t as i64);
    true
}

/// The raw `meta.json` of a checkpoint folder as JSON.
fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn checkpoint_meta_json_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tiny_checkpoint(tmp.path());
    assert!(use_checkpoint(&original));
    let envelope = std::fs::read(original.join("meta.json")).unwrap();
    let meta = read_json(&original.join("meta.json"))["meta"].clone();
    let model = checkpoint_io::read_checkpoint(&original).unwrap().model;
    let target = tmp.path().join("mutated");
    let (tried, accepted) = fuzz::run(
        "meta.json",
        0x6d_65_74_61,
        600,
        |m| {
            if m.chance(0.5) {
                (Some(m.bytes(&envelope, &[])), None)
            } else {
                let mut value = m.json(&meta);
                for _ in 0..m.below(2) {
                    value = m.json(&value);
                }
                (None, Some(value))
            }
        },
        |(bytes, value)| {
            let _ = std::fs::remove_dir_all(&target);
            match (bytes, value) {
                (Some(bytes), _) => {
                    copy_dir(&original, &target);
                    std::fs::write(target.join("meta.json"), bytes).unwrap();
                }
                (None, Some(value)) => {
                    // Written through the library's own writer, so the envelope's records
                    // and checksums are valid and the loader reads the mutated metadata.
                    checkpoint_io::write_checkpoint(&target, &model, &[], value).unwrap();
                }
                (None, None) => unreachable!(),
            }
            use_checkpoint(&target)
        },
    );
    assert!(
        tried > 50 && accepted > 0,
        "{tried} tried, {accepted} accepted"
    );
}

#[test]
fn checkpoint_meta_with_an_invalid_config_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tiny_checkpoint(tmp.path());
    let meta = read_json(&original.join("meta.json"))["meta"].clone();
    let model = checkpoint_io::read_checkpoint(&original).unwrap().model;
    let cases = [
        ("/config/model/n_head", serde_json::json!(0), "model.n_head"),
        (
            "/config/model/d_model",
            serde_json::json!(1 << 30),
            "model.d_model",
        ),
        (
            "/config/model/vocab_size",
            serde_json::json!(3),
            "model.vocab_size",
        ),
        ("/config/train/eps", serde_json::json!(-1.0), "train.eps"),
    ];
    for (pointer, bad, field) in cases {
        let mut value = meta.clone();
        *value.pointer_mut(pointer).unwrap() = bad;
        let dir = tmp.path().join(field);
        checkpoint_io::write_checkpoint(&dir, &model, &[], &value).unwrap();
        let err = checkpoint::load(&dir).err().unwrap().to_string();
        assert!(
            err.contains("meta.json") && err.contains(field),
            "{pointer}: {err}"
        );
    }
}

/// Copies the files of checkpoint folder `from` into a new folder `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Writes `bytes` as the model file of checkpoint `dir` and updates the envelope's record
/// of it (size and CRC-32) in place, leaving every other byte of `meta.json` as written (so
/// any checksum over the metadata still holds) and the loader gets as far as parsing the file.
fn replace_model_file(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join(MODEL_FILE), bytes).unwrap();
    let path = dir.join("meta.json");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let record = text.find("\"model\"").unwrap();
    for (key, value) in [
        ("\"bytes\"", bytes.len() as u64),
        ("\"crc32\"", u64::from(crc32fast::hash(bytes))),
    ] {
        let at = record + text[record..].find(key).unwrap();
        let start = at + text[at..].find(|c: char| c.is_ascii_digit()).unwrap();
        let end = start + text[start..].find(|c: char| !c.is_ascii_digit()).unwrap();
        text.replace_range(start..end, &value.to_string());
    }
    std::fs::write(&path, text).unwrap();
}

#[test]
fn safetensors_headers_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tiny_checkpoint(tmp.path());
    let file = std::fs::read(original.join(MODEL_FILE)).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let (head, data) = file.split_at(8 + header_len);
    let target = tmp.path().join("mutated");
    let (tried, accepted) = fuzz::run(
        "safetensors",
        0x73_61_66_65,
        1500,
        |m| {
            // Mostly the header (length prefix and JSON), sometimes the whole file.
            if m.chance(0.8) {
                let mut bytes = m.bytes(head, &[]);
                if m.chance(0.9) {
                    bytes.extend_from_slice(data);
                }
                bytes
            } else {
                m.bytes(&file, &[])
            }
        },
        |bytes| {
            let _ = std::fs::remove_dir_all(&target);
            copy_dir(&original, &target);
            replace_model_file(&target, bytes);
            let _ = Tensor::read_safetensors(target.join(MODEL_FILE));
            checkpoint_io::read_checkpoint(&target).is_ok() && use_checkpoint(&target)
        },
    );
    assert!(tried > 100, "{tried} tried, {accepted} accepted");
}

/// Tokenizer documents to mutate: char and byte (strata documents), BPE as a strata
/// document and as a `tokenizers` tokenizer.json.
fn tokenizer_seeds(dir: &Path) -> Vec<String> {
    let bpe = Tokenizer::train(TokenizerKind::Bpe, &TEXT.repeat(4), 270).unwrap();
    let path = dir.join("tokenizer.json");
    bpe.save(&path).unwrap();
    vec![
        Tokenizer::train(TokenizerKind::Char, TEXT, 0)
            .unwrap()
            .to_json(),
        Tokenizer::train(TokenizerKind::Byte, TEXT, 0)
            .unwrap()
            .to_json(),
        bpe.to_json(),
        std::fs::read_to_string(&path).unwrap(),
    ]
}

/// A tokenizer that loaded must be usable: encode, decode (any ids), round-trip its JSON.
fn use_tokenizer(tok: &Tokenizer) {
    let ids = tok.encode("Speak, speak.").unwrap_or_default();
    let _ = tok.decode(&ids);
    let _ = tok.decode(&[0, 1, 255, 256, 65_535, u32::MAX]);
    let back = Tokenizer::from_json(&tok.to_json(), Path::new("again")).unwrap();
    assert_eq!(back.fingerprint(), tok.fingerprint());
    assert_eq!(back.vocab_size(), tok.vocab_size());
}

#[test]
fn tokenizer_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = tokenizer_seeds(tmp.path());
    let values: Vec<Value> = seeds
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    let others: Vec<&[u8]> = seeds.iter().map(|s| s.as_bytes()).collect();
    let file = tmp.path().join("fuzz.json");
    let (tried, accepted) = fuzz::run(
        "tokenizer",
        0x74_6f_6b,
        1500,
        |m| {
            let i = m.below(seeds.len());
            if m.chance(0.5) {
                m.bytes(seeds[i].as_bytes(), &others)
            } else {
                serde_json::to_vec(&m.json(&values[i])).unwrap()
            }
        },
        |bytes| {
            std::fs::write(&file, bytes).unwrap();
            match Tokenizer::load(&file) {
                Ok(tok) => {
                    use_tokenizer(&tok);
                    true
                }
                Err(e) => {
                    assert!(e.to_string().contains("fuzz.json"), "{e}");
                    false
                }
            }
        },
    );
    assert!(
        tried > 100 && accepted > 0,
        "{tried} tried, {accepted} accepted"
    );
}

#[test]
fn invalid_tokenizer_documents_are_refused() {
    let source = Path::new("tok.json");
    for bad in [
        r#"{"format":"strata-tokenizer","version":1,"kind":"char","chars":"ba"}"#,
        r#"{"format":"strata-tokenizer","version":1,"kind":"char","chars":""}"#,
        r#"{"format":"strata-tokenizer","version":2,"kind":"byte"}"#,
        r#"{"format":"strata-tokenizer","version":1,"kind":"bpe","tokenizer":{}}"#,
        r#"{"model":{"type":"WordLevel","vocab":{},"unk_token":"x"}}"#,
        r#"[1, 2, 3]"#,
    ] {
        let err = Tokenizer::from_json(bad, source).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("tok.json")),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn bpe_vocabularies_with_repeated_or_missing_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = tokenizer_seeds(tmp.path()).pop().unwrap();
    let value: Value = serde_json::from_str(&saved).unwrap();
    Tokenizer::from_json(&saved, Path::new("ok.json")).unwrap();
    // Found by the fuzzer: a repeated id loads, but the vocabulary shrinks when saved.
    let own = value["model"]["vocab"]["ā"].as_u64().unwrap();
    let missing = format!("id {own} is missing");
    for (id, problem) in [(0, "id 0 is used twice"), (100_000, missing.as_str())] {
        let mut bad = value.clone();
        bad["model"]["vocab"]["ā"] = serde_json::json!(id);
        let err = Tokenizer::from_json(&bad.to_string(), Path::new("tok.json"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("tok.json") && err.contains(problem),
            "{id}: {err}"
        );
    }
}
