//! Checkpoint folders: round trips, replacement, and clear errors for damaged checkpoints.

use std::path::{Path, PathBuf};
use strata_train::checkpoint_io::{
    LoadedCheckpoint, check_writable, latest_checkpoint, read_checkpoint, update_latest,
    write_checkpoint,
};
use tch::{Device, Kind, Tensor};

/// Model tensors of several kinds, one of them a non-contiguous view.
fn model_tensors() -> Vec<(String, Tensor)> {
    let f32s = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
    let i64s = Tensor::arange(10, (Kind::Int64, Device::Cpu)).view([2, 5]) * 1_000_000_007;
    let bf16 = Tensor::randn([5], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    let transposed = Tensor::randn([3, 6], (Kind::Float, Device::Cpu)).tr();
    assert!(!transposed.is_contiguous());
    let scalar = Tensor::from(2.5f64);
    let trainable = Tensor::randn([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    vec![
        ("wte.weight".to_owned(), f32s),
        ("positions".to_owned(), i64s),
        ("blocks.0.bf16".to_owned(), bf16),
        ("lm_head.weight".to_owned(), transposed),
        ("scale".to_owned(), scalar),
        ("trainable".to_owned(), trainable),
    ]
}

/// Optimizer tensors.
fn optimizer_tensors() -> Vec<(String, Tensor)> {
    vec![
        (
            "m.wte.weight".to_owned(),
            Tensor::randn([4, 3], (Kind::Float, Device::Cpu)),
        ),
        (
            "v.wte.weight".to_owned(),
            Tensor::rand([4, 3], (Kind::Float, Device::Cpu)),
        ),
    ]
}

/// Asserts two named tensor lists are equal in names, order, kinds, shapes and bits.
fn assert_bitwise_equal(got: &[(String, Tensor)], want: &[(String, Tensor)]) {
    let names = |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want));
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert_eq!(a.kind(), b.kind(), "{name}");
        assert_eq!(a.size(), b.size(), "{name}");
        assert_eq!(bytes_of(a), bytes_of(b), "{name}: bits differ");
    }
}

/// The raw bytes of a tensor's elements (row-major).
fn bytes_of(t: &Tensor) -> Vec<u8> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let mut out = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut out, t.numel());
    out
}

/// Writes a checkpoint with the default tensors and `meta` to `<root>/checkpoints/<name>`.
fn write_default(root: &Path, name: &str, meta: serde_json::Value) -> PathBuf {
    let dir = root.join("checkpoints").join(name);
    write_checkpoint(&dir, &model_tensors(), &optimizer_tensors(), &meta).unwrap();
    dir
}

/// Entries of `dir` whose names mark temporary or replaced checkpoints.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The error message of a failed read.
fn read_error(dir: &Path) -> String {
    match read_checkpoint(dir) {
        Ok(_) => panic!("reading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trip_is_bitwise_identical() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("checkpoints").join("step-000500");
    let model = model_tensors();
    let optimizer = optimizer_tensors();
    let meta = serde_json::json!({"step": 500, "note": "hello", "nested": {"x": [1, 2.5, null]}});
    write_checkpoint(&dir, &model, &optimizer, &meta).unwrap();
    let LoadedCheckpoint {
        model: got_model,
        optimizer: got_optimizer,
        meta: got_meta,
        path,
    } = read_checkpoint(&dir).unwrap();
    assert_eq!(path, dir);
    assert_eq!(got_meta, meta);
    assert_bitwise_equal(&got_model, &model);
    assert_bitwise_equal(&got_optimizer, &optimizer);
    assert!(leftovers(&root.path().join("checkpoints")).is_empty());
}

#[test]
fn empty_optimizer_round_trips() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    let model = model_tensors();
    write_checkpoint(&dir, &model, &[], &serde_json::Value::Null).unwrap();
    let loaded = read_checkpoint(&dir).unwrap();
    assert!(loaded.optimizer.is_empty());
    assert_eq!(loaded.meta, serde_json::Value::Null);
    assert_bitwise_equal(&loaded.model, &model);
}

#[test]
fn overwriting_replaces_the_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(
        root.path(),
        "step-000100",
        serde_json::json!({"version": "old"}),
    );
    let replacement = vec![(
        "only".to_owned(),
        Tensor::ones([2], (Kind::Float, Device::Cpu)),
    )];
    write_checkpoint(
        &dir,
        &replacement,
        &[],
        &serde_json::json!({"version": "new"}),
    )
    .unwrap();
    let loaded = read_checkpoint(&dir).unwrap();
    assert_eq!(loaded.meta["version"], "new");
    assert_bitwise_equal(&loaded.model, &replacement);
    assert!(loaded.optimizer.is_empty());
    assert!(leftovers(&root.path().join("checkpoints")).is_empty());
}

#[test]
fn truncated_file_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(root.path(), "step-000001", serde_json::json!({}));
    let file = dir.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    let err = read_error(&dir);
    assert!(err.contains("model.safetensors is truncated"), "{err}");
    assert!(err.contains(&format!("expected {len} bytes")), "{err}");
    assert!(err.contains("step-000001"), "{err}");
}

#[test]
fn flipped_byte_is_detected_by_checksum() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(root.path(), "step-000002", serde_json::json!({}));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let path = dir.join(file);
        let original = std::fs::read(&path).unwrap();
        let mut bytes = original.clone();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_error(&dir);
        assert!(
            err.contains(&format!("{file} is corrupt: checksum")),
            "{err}"
        );
        assert!(err.contains("expected 0x"), "{err}");
        std::fs::write(&path, &original).unwrap();
    }
    read_checkpoint(&dir).unwrap();
}

#[test]
fn corrupt_header_is_detected_before_parsing() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(root.path(), "step-000003", serde_json::json!({}));
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = read_error(&dir);
    assert!(err.contains("model.safetensors is corrupt"), "{err}");
}

#[test]
fn missing_folder_and_files_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let err = read_error(&root.path().join("nope"));
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );

    let dir = write_default(root.path(), "step-000004", serde_json::json!({}));
    std::fs::remove_file(dir.join("optimizer.safetensors")).unwrap();
    let err = read_error(&dir);
    assert!(err.contains("optimizer.safetensors is missing"), "{err}");
}

#[test]
fn missing_meta_json_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(root.path(), "step-000005", serde_json::json!({}));
    std::fs::remove_file(dir.join("meta.json")).unwrap();
    let err = read_error(&dir);
    assert!(err.contains("meta.json is missing"), "{err}");
    assert!(err.contains("step-000005"), "{err}");
}

#[test]
fn garbage_meta_json_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(root.path(), "step-000006", serde_json::json!({}));
    std::fs::write(
        dir.join("meta.json"),
        b"{\"format\": \"strata-che\x00\xff garbage",
    )
    .unwrap();
    let err = read_error(&dir);
    assert!(err.contains("meta.json is not valid JSON"), "{err}");

    std::fs::write(dir.join("meta.json"), b"{\"step\": 6}").unwrap();
    let err = read_error(&dir);
    assert!(err.contains("not a strata checkpoint envelope"), "{err}");

    std::fs::write(
        dir.join("meta.json"),
        b"{\"format\": \"strata-checkpoint\", \"version\": 1}",
    )
    .unwrap();
    let err = read_error(&dir);
    assert!(err.contains("envelope is malformed"), "{err}");
}

#[test]
fn unknown_format_version_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_default(root.path(), "step-000007", serde_json::json!({}));
    let path = dir.join("meta.json");
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    envelope["version"] = serde_json::json!(99);
    std::fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();
    let err = read_error(&dir);
    assert!(err.contains("unknown format version 99"), "{err}");
}

#[test]
fn an_edited_meta_json_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let meta = serde_json::json!({"step": 8, "lr": 0.1});
    let dir = write_default(root.path(), "step-000008", meta.clone());
    let path = dir.join("meta.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"step\": 8"), "{text}");
    std::fs::write(&path, text.replace("\"step\": 8", "\"step\": 9")).unwrap();
    let err = read_error(&dir);
    assert!(
        err.contains("step-000008") && err.contains("meta.json") && err.contains("edited"),
        "{err}"
    );

    // Taking the checksum out does not help either.
    let mut envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
    envelope.as_object_mut().unwrap().remove("meta_crc32");
    std::fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();
    let err = read_error(&dir);
    assert!(err.contains("no meta_crc32"), "{err}");

    // Left alone, the file reads back.
    std::fs::write(&path, &text).unwrap();
    assert_eq!(read_checkpoint(&dir).unwrap().meta, meta);
}

#[test]
fn version_1_envelopes_without_a_metadata_checksum_still_read() {
    let root = tempfile::tempdir().unwrap();
    let meta = serde_json::json!({"step": 3});
    let dir = write_default(root.path(), "step-000003", meta.clone());
    let path = dir.join("meta.json");
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    envelope["version"] = serde_json::json!(1);
    envelope.as_object_mut().unwrap().remove("meta_crc32");
    std::fs::write(&path, serde_json::to_vec(&envelope).unwrap()).unwrap();
    assert_eq!(read_checkpoint(&dir).unwrap().meta, meta);
}

/// Whether this process can create files in a folder it made read-only (true for root).
fn read_only_is_bypassed(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let bypassed = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    bypassed
}

#[test]
fn write_into_unwritable_folder_fails_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let locked = root.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let (parent, dir) = if read_only_is_bypassed(&locked) {
        // Running as root: permissions do not stop us, so use a parent that is a regular file.
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = root.path().join("not-a-folder");
        std::fs::write(&file, b"").unwrap();
        (file.clone(), file.join("checkpoints").join("step-000010"))
    } else {
        (locked.clone(), locked.join("step-000010"))
    };
    let err = write_checkpoint(&dir, &model_tensors(), &[], &serde_json::json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&parent.display().to_string()), "{err}");
    assert!(!dir.exists());
    assert!(leftovers(root.path()).is_empty());
    assert!(leftovers(&locked).is_empty());

    let err = check_writable(&dir).unwrap_err().to_string();
    assert!(
        err.contains("is not writable") && err.contains(&dir.display().to_string()),
        "{err}"
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn failure_midway_removes_the_temporary_folder() {
    let root = tempfile::tempdir().unwrap();
    let checkpoints = root.path().join("checkpoints");
    let dir = write_default(
        root.path(),
        "step-000011",
        serde_json::json!({"keep": true}),
    );
    // Complex tensors have no safetensors dtype, so writing fails after the temp folder exists.
    let bad = vec![(
        "complex".to_owned(),
        Tensor::ones([2], (Kind::ComplexFloat, Device::Cpu)),
    )];
    let err = write_checkpoint(&dir, &bad, &[], &serde_json::json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(
        leftovers(&checkpoints).is_empty(),
        "{:?}",
        leftovers(&checkpoints)
    );
    assert_eq!(read_checkpoint(&dir).unwrap().meta["keep"], true);
}

#[test]
fn duplicate_tensor_names_are_rejected() {
    let root = tempfile::tempdir().unwrap();
    let t = || Tensor::ones([1], (Kind::Float, Device::Cpu));
    let dup = vec![("a".to_owned(), t()), ("a".to_owned(), t())];
    let err = write_checkpoint(&root.path().join("c"), &dup, &[], &serde_json::json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("appears twice"), "{err}");
    assert!(!root.path().join("c").exists());
}

#[test]
fn check_writable_creates_the_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b");
    check_writable(&dir).unwrap();
    assert!(dir.is_dir());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn latest_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path();
    assert_eq!(latest_checkpoint(run).unwrap(), None);
    let first = write_default(run, "step-000100", serde_json::json!({"step": 100}));
    update_latest(run, "step-000100").unwrap();
    assert_eq!(latest_checkpoint(run).unwrap(), Some(first));
    let second = write_default(run, "step-000200", serde_json::json!({"step": 200}));
    update_latest(run, "step-000200").unwrap();
    assert_eq!(latest_checkpoint(run).unwrap(), Some(second.clone()));
    assert_eq!(read_checkpoint(&second).unwrap().meta["step"], 200);
    assert!(leftovers(&run.join("checkpoints")).is_empty());

    assert!(update_latest(run, "../escape").is_err());
    update_latest(run, "step-999999").unwrap();
    let err = latest_checkpoint(run).unwrap_err().to_string();
    assert!(
        err.contains("step-999999") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn cuda_tensors_are_saved_from_the_gpu() {
    if !tch::Cuda::is_available() {
        eprintln!("skipping: no CUDA device");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("gpu");
    let gpu: Vec<(String, Tensor)> = model_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cuda(0))))
        .collect();
    write_checkpoint(&dir, &gpu, &[], &serde_json::json!({})).unwrap();
    let loaded = read_checkpoint(&dir).unwrap();
    assert!(loaded.model.iter().all(|(_, t)| t.device() == Device::Cpu));
    assert_bitwise_equal(&loaded.model, &gpu);
}
