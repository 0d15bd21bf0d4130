//! Atomic, verified checkpoint folders.
//!
//! A checkpoint is a folder (e.g. `<run>/checkpoints/step-000500/`) holding
//! `model.safetensors`, `optimizer.safetensors` and `meta.json`. `meta.json` is an envelope
//! recording the format version, the byte size, CRC-32 and tensor names of both safetensors
//! files, and the caller's metadata with the CRC-32 of its bytes as written (`meta_crc32`), so
//! an edited `meta.json` is refused like a corrupt tensor file. Folders are written under a temporary name, synced and
//! renamed into place, so readers only ever see complete checkpoints; reading verifies sizes and
//! checksums before any tensor is parsed.
//!
//! One window remains when a checkpoint replaces another of the same name: between moving the
//! old folder away (to `.<name>.old-<pid>`) and renaming the new one in (from
//! `.<name>.tmp-<pid>`), both complete copies exist only under those hidden names.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};
use tch::{Device, Tensor};

/// File name of the model tensors inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// File name of the optimizer tensors inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// File name of the metadata envelope inside a checkpoint folder.
pub const META_FILE: &str = "meta.json";
/// File in `<run>/checkpoints/` naming the most recent checkpoint folder.
pub const LATEST_FILE: &str = "LATEST";
/// Value of the envelope's `format` field.
pub const FORMAT_NAME: &str = "strata-checkpoint";
/// Envelope version written by this build (version 2 adds `meta_crc32`).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest envelope version this build reads (without a metadata checksum).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Size, checksum and tensor names of one safetensors file, as recorded in `meta.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
    /// Tensor names, in the order the caller supplied them.
    pub tensors: Vec<String>,
}

/// The `meta.json` envelope.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    format: String,
    version: u32,
    model: FileRecord,
    optimizer: FileRecord,
    /// CRC-32 of the bytes of `meta` exactly as written (absent before version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta_crc32: Option<u32>,
    meta: Box<RawValue>,
}

/// A checkpoint read back by [`read_checkpoint`].
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// Model tensors (on the CPU), in the order they were written.
    pub model: Vec<(String, Tensor)>,
    /// Optimizer tensors (on the CPU), in the order they were written.
    pub optimizer: Vec<(String, Tensor)>,
    /// The caller's metadata, as passed to [`write_checkpoint`].
    pub meta: serde_json::Value,
    /// The checkpoint folder.
    pub path: PathBuf,
}

/// Writes a checkpoint folder at `dir` atomically, replacing any checkpoint of the same name.
pub fn write_checkpoint(
    dir: &Path,
    model: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    meta: &serde_json::Value,
) -> Result<()> {
    check_names(dir, MODEL_FILE, model)?;
    check_names(dir, OPTIMIZER_FILE, optimizer)?;
    write_folder_atomically(dir, |tmp| write_contents(dir, tmp, model, optimizer, meta))
}

/// Writes a folder at `dir` atomically: `fill` writes the files into a temporary sibling
/// folder, which is synced and renamed into place (replacing an existing `dir`, which is
/// restored if the rename fails); nothing is left behind on failure.
pub fn write_folder_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = split_dir(dir)?;
    std::fs::create_dir_all(&parent).map_err(|e| {
        Error::checkpoint(
            dir,
            format!("cannot create folder {}: {e}", parent.display()),
        )
    })?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(Error::io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| {
        Error::checkpoint(
            dir,
            format!("cannot create temporary folder {}: {e}", tmp.display()),
        )
    })?;
    let result = fill(&tmp)
        .and_then(|()| sync_dir(&tmp))
        .and_then(|()| install(dir, &tmp, &parent, &name, pid));
    if result.is_err()
        && tmp.exists()
        && let Err(e) = std::fs::remove_dir_all(&tmp)
    {
        tracing::warn!(folder = %tmp.display(), error = %e, "cannot remove temporary folder");
    }
    result
}

/// Writes the three files of a checkpoint into `tmp` and syncs them.
fn write_contents(
    dir: &Path,
    tmp: &Path,
    model: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    meta: &serde_json::Value,
) -> Result<()> {
    let meta = serde_json::to_string_pretty(meta)
        .and_then(RawValue::from_string)
        .map_err(|e| Error::checkpoint(dir, format!("cannot encode {META_FILE}: {e}")))?;
    let envelope = Envelope {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        model: write_tensors(dir, &tmp.join(MODEL_FILE), model)?,
        optimizer: write_tensors(dir, &tmp.join(OPTIMIZER_FILE), optimizer)?,
        meta_crc32: Some(crc32fast::hash(meta.get().as_bytes())),
        meta,
    };
    let json = serde_json::to_vec_pretty(&envelope)
        .map_err(|e| Error::checkpoint(dir, format!("cannot encode {META_FILE}: {e}")))?;
    let path = tmp.join(META_FILE);
    let mut file = File::create(&path).map_err(Error::io(&path))?;
    file.write_all(&json).map_err(Error::io(&path))?;
    file.sync_all().map_err(Error::io(&path))
}

/// Writes `tensors` (moved to the CPU, contiguous) to a synced safetensors file at `path`
/// (inside the folder `dir`, named in errors), returning its size, checksum and names.
pub fn write_tensors(dir: &Path, path: &Path, tensors: &[(String, Tensor)]) -> Result<FileRecord> {
    let file_name = file_label(path);
    let prepared = tensors
        .iter()
        .map(|(name, t)| {
            let cpu = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
            Ok((name.as_str(), cpu))
        })
        .collect::<std::result::Result<Vec<_>, tch::TchError>>()
        .map_err(|e| {
            Error::checkpoint(
                dir,
                format!("cannot copy tensors for {file_name} to the CPU: {e}"),
            )
        })?;
    Tensor::write_safetensors(&prepared, path)
        .map_err(|e| Error::checkpoint(dir, format!("cannot write {file_name}: {e}")))?;
    let (bytes, crc32) = size_and_crc(path)?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(path))?;
    Ok(FileRecord {
        bytes,
        crc32,
        tensors: tensors.iter().map(|(name, _)| name.clone()).collect(),
    })
}

/// Moves the finished `tmp` folder to `dir`, replacing (then deleting) an existing one.
fn install(dir: &Path, tmp: &Path, parent: &Path, name: &str, pid: u32) -> Result<()> {
    let old = parent.join(format!(".{name}.old-{pid}"));
    let replacing = dir.exists();
    if replacing {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(Error::io(&old))?;
        }
        std::fs::rename(dir, &old).map_err(|e| {
            Error::checkpoint(
                dir,
                format!(
                    "cannot move the existing checkpoint aside to {}: {e}",
                    old.display()
                ),
            )
        })?;
    }
    if let Err(e) = std::fs::rename(tmp, dir) {
        if replacing && let Err(back) = std::fs::rename(&old, dir) {
            tracing::error!(old = %old.display(), error = %back, "cannot restore the previous checkpoint");
        }
        return Err(Error::checkpoint(
            dir,
            format!("cannot rename {} into place: {e}", tmp.display()),
        ));
    }
    sync_dir(parent)?;
    if replacing && let Err(e) = std::fs::remove_dir_all(&old) {
        tracing::warn!(folder = %old.display(), error = %e, "cannot remove the replaced checkpoint");
    }
    Ok(())
}

/// Reads and verifies the checkpoint folder `dir`.
pub fn read_checkpoint(dir: &Path) -> Result<LoadedCheckpoint> {
    let (envelope, meta) = read_verified_envelope(dir)?;
    let model = read_tensors(dir, MODEL_FILE, &envelope.model)?;
    let optimizer = read_tensors(dir, OPTIMIZER_FILE, &envelope.optimizer)?;
    Ok(LoadedCheckpoint {
        model,
        optimizer,
        meta,
        path: dir.to_path_buf(),
    })
}

/// The caller's metadata of the checkpoint folder `dir`, verified against its checksum,
/// without reading any tensor (for the figures of a finished run: steps, time, config).
pub fn read_meta(dir: &Path) -> Result<serde_json::Value> {
    read_verified_envelope(dir).map(|(_, meta)| meta)
}

/// The envelope of the checkpoint folder `dir` and its verified metadata.
fn read_verified_envelope(dir: &Path) -> Result<(Envelope, serde_json::Value)> {
    if !dir.is_dir() {
        let message = if dir.exists() {
            "is not a folder".to_owned()
        } else {
            format!("folder does not exist{}", leftover_hint(dir))
        };
        return Err(Error::checkpoint(dir, message));
    }
    let envelope = read_envelope(dir)?;
    let meta = verified_meta(dir, &envelope)?;
    Ok((envelope, meta))
}

/// Reads and checks the `meta.json` envelope of `dir`.
fn read_envelope(dir: &Path) -> Result<Envelope> {
    let path = dir.join(META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::checkpoint(
                dir,
                format!("{META_FILE} is missing (expected checkpoint metadata)"),
            ));
        }
        Err(e) => {
            return Err(Error::checkpoint(
                dir,
                format!("cannot read {META_FILE}: {e}"),
            ));
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::checkpoint(dir, format!("{META_FILE} is not valid JSON: {e}")))?;
    if value.get("format").and_then(serde_json::Value::as_str) != Some(FORMAT_NAME) {
        return Err(Error::checkpoint(
            dir,
            format!(
                "{META_FILE} is not a strata checkpoint envelope (expected \"format\": \"{FORMAT_NAME}\")"
            ),
        ));
    }
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => {}
        Some(v) => {
            return Err(Error::checkpoint(
                dir,
                format!(
                    "{META_FILE} has unknown format version {v} (this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
                ),
            ));
        }
        None => {
            return Err(Error::checkpoint(
                dir,
                format!("{META_FILE} has no integer \"version\" (expected {FORMAT_VERSION})"),
            ));
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::checkpoint(dir, format!("{META_FILE} envelope is malformed: {e}")))
}

/// The caller's metadata of an envelope, after checking its bytes against `meta_crc32`.
fn verified_meta(dir: &Path, envelope: &Envelope) -> Result<serde_json::Value> {
    let raw = envelope.meta.get();
    match envelope.meta_crc32 {
        Some(expected) => {
            let crc = crc32fast::hash(raw.as_bytes());
            if crc != expected {
                return Err(Error::checkpoint(
                    dir,
                    format!(
                        "{META_FILE} is corrupt or was edited: its metadata has checksum {crc:#010x}, expected {expected:#010x} (meta_crc32); a checkpoint's {META_FILE} must not be changed by hand"
                    ),
                ));
            }
        }
        None if envelope.version >= 2 => {
            return Err(Error::checkpoint(
                dir,
                format!(
                    "{META_FILE} has no meta_crc32 (version {} envelopes carry the checksum of their metadata)",
                    envelope.version
                ),
            ));
        }
        None => tracing::warn!(
            checkpoint = %dir.display(),
            version = envelope.version,
            "{META_FILE} predates metadata checksums; its metadata is not verified"
        ),
    }
    serde_json::from_str(raw)
        .map_err(|e| Error::checkpoint(dir, format!("{META_FILE} envelope is malformed: {e}")))
}

/// Verifies size and checksum of `dir/file_name` against `record`, then loads its tensors.
fn read_tensors(dir: &Path, file_name: &str, record: &FileRecord) -> Result<Vec<(String, Tensor)>> {
    let path = dir.join(file_name);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::checkpoint(dir, format!("{file_name} is missing")));
        }
        Err(e) => {
            return Err(Error::checkpoint(
                dir,
                format!("cannot read {file_name}: {e}"),
            ));
        }
    };
    if size != record.bytes {
        let what = if size < record.bytes {
            "truncated"
        } else {
            "the wrong size"
        };
        return Err(Error::checkpoint(
            dir,
            format!(
                "{file_name} is {what}: {size} bytes, expected {} bytes",
                record.bytes
            ),
        ));
    }
    let (bytes, crc) = size_and_crc(&path)?;
    if bytes != record.bytes {
        return Err(Error::checkpoint(
            dir,
            format!(
                "{file_name} changed while being read: {bytes} bytes, expected {}",
                record.bytes
            ),
        ));
    }
    if crc != record.crc32 {
        return Err(Error::checkpoint(
            dir,
            format!(
                "{file_name} is corrupt: checksum {crc:#010x}, expected {:#010x}",
                record.crc32
            ),
        ));
    }
    let mut loaded = Tensor::read_safetensors(&path)
        .map_err(|e| Error::checkpoint(dir, format!("{file_name} cannot be parsed: {e}")))?;
    let mut ordered = Vec::with_capacity(record.tensors.len());
    for name in &record.tensors {
        let index = loaded.iter().position(|(n, _)| n == name).ok_or_else(|| {
            Error::checkpoint(
                dir,
                format!("{file_name} lacks tensor `{name}` listed in {META_FILE}"),
            )
        })?;
        ordered.push(loaded.swap_remove(index));
    }
    if let Some((extra, _)) = loaded.first() {
        return Err(Error::checkpoint(
            dir,
            format!("{file_name} holds tensor `{extra}` not listed in {META_FILE}"),
        ));
    }
    Ok(ordered)
}

/// Replaces `path` with `bytes` through a synced temporary file in the same folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(Error::io(&tmp))?;
        file.write_all(bytes).map_err(Error::io(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Points `<run_dir>/checkpoints/LATEST` at `checkpoint_name` (atomic replace).
pub fn update_latest(run_dir: &Path, checkpoint_name: &str) -> Result<()> {
    if checkpoint_name.is_empty()
        || checkpoint_name.contains(['/', '\\', '\n', '\r'])
        || checkpoint_name == "."
        || checkpoint_name == ".."
    {
        return Err(Error::Invalid(format!(
            "checkpoint name {checkpoint_name:?} must be a plain folder name"
        )));
    }
    let folder = run_dir.join("checkpoints");
    std::fs::create_dir_all(&folder).map_err(Error::io(&folder))?;
    write_atomic(
        &folder.join(LATEST_FILE),
        format!("{checkpoint_name}\n").as_bytes(),
    )?;
    sync_dir(&folder)
}

/// The checkpoint folder named by `<run_dir>/checkpoints/LATEST`, or `None` without one.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let folder = run_dir.join("checkpoints");
    let path = folder.join(LATEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let name = text.trim();
    if name.is_empty() || name.contains(['/', '\\', '\n']) {
        return Err(Error::checkpoint(
            &path,
            format!("expected one checkpoint folder name, found {text:?}"),
        ));
    }
    let dir = folder.join(name);
    if !dir.is_dir() {
        return Err(Error::checkpoint(
            &path,
            format!(
                "points at {name}, which does not exist{}",
                leftover_hint(&dir)
            ),
        ));
    }
    Ok(Some(dir))
}

/// Creates `dir` if needed and proves it writable with a probe file. A probe that is gone
/// when it is removed was cleared by another process readying the same folder (it removes
/// probes as stale temporaries): the write itself succeeded, so that is not a failure.
pub fn check_writable(dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::Invalid(format!(
            "output folder {} is not writable: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".strata-write-probe-{}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| f.write_all(b"probe"));
    let removed = match std::fs::remove_file(&probe) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    written.map_err(fail)?;
    removed.map_err(fail)
}

/// Splits a checkpoint folder path into (parent folder, folder name).
fn split_dir(dir: &Path) -> Result<(PathBuf, String)> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| {
            Error::checkpoint(
                dir,
                "expected a checkpoint folder path ending in a UTF-8 folder name",
            )
        })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_owned()))
}

/// Rejects empty or repeated tensor names (safetensors keys must be unique).
fn check_names(dir: &Path, file_name: &str, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut seen = HashSet::with_capacity(tensors.len());
    for (name, _) in tensors {
        if name.is_empty() || name == "__metadata__" {
            return Err(Error::checkpoint(
                dir,
                format!("{file_name}: invalid tensor name {name:?}"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::checkpoint(
                dir,
                format!("{file_name}: tensor name `{name}` appears twice"),
            ));
        }
    }
    Ok(())
}

/// Size in bytes and CRC-32 of a file, streamed in chunks.
fn size_and_crc(path: &Path) -> Result<(u64, u32)> {
    let mut file = File::open(path).map_err(Error::io(path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path)(e)),
        };
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize()))
}

/// Flushes a folder's entries (new names, renames) to disk; a no-op off Unix.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A note pointing at complete copies left by an interrupted replacement of `dir`, if any.
fn leftover_hint(dir: &Path) -> String {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return String::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return String::new();
    };
    let prefix = format!(".{name}.");
    let leftovers: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && (n.contains(".old-") || n.contains(".tmp-")))
        .collect();
    if leftovers.is_empty() {
        String::new()
    } else {
        format!(
            " (an interrupted write left {} in {}; a copy that reads back with read_checkpoint can be renamed to {name})",
            leftovers.join(", "),
            parent.display()
        )
    }
}

/// The file name of `path`, for messages.
fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
