//! One writer per folder: an advisory lock on `<folder>/strata.lock`.
//!
//! Every process that writes into a run folder (`train`, `merge`), a sweep folder (`sweep`)
//! or a comparison folder holds a [`RunLock`] while it writes. The lock is the operating
//! system's advisory file lock (`flock` on Unix), so the kernel releases it when the holder
//! exits, however it exits: a killed run never leaves a stale lock behind. The file records
//! the holder's pid and command line, which a refused second writer names.
//!
//! The lock file is removed when the lock is released. An acquirer that locked a file which
//! another process removed in the meantime notices (the path no longer names the file it
//! locked) and tries again, so two processes never both believe they hold the lock.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use strata_tensor::{Error, Result};

/// File name of the lock inside a locked folder.
pub const LOCK_FILE: &str = "strata.lock";

/// Attempts at locking a lock file that keeps being replaced under us.
const ATTEMPTS: usize = 20;

/// Who holds a lock, as recorded in the lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id of the holder.
    pub pid: u32,
    /// The holder's command line.
    pub command: String,
    /// What the holder does in the folder (`train`, `merge`, `sweep`, ...).
    pub what: String,
}

impl LockHolder {
    /// This process, doing `what`.
    fn this_process(what: &str) -> Self {
        let args: Vec<String> = std::env::args().collect();
        Self {
            pid: std::process::id(),
            command: args.join(" "),
            what: what.to_owned(),
        }
    }
}

/// An exclusive, advisory lock on a folder, released (and its file removed) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks `dir` (created if needed) for this process, which will do `what` there; fails,
    /// naming the folder and the holder's pid and command, when another writer holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let path = dir.join(LOCK_FILE);
        for _ in 0..ATTEMPTS {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(Error::io(&path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(refusal(dir, &mut file)),
                Err(TryLockError::Error(e)) => {
                    return Err(Error::Invalid(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )));
                }
            }
            if !still_linked(&file, &path) {
                continue;
            }
            let holder = LockHolder::this_process(what);
            let text = serde_json::to_string(&holder).map_err(|e| Error::Invalid(e.to_string()))?;
            file.set_len(0).map_err(Error::io(&path))?;
            file.rewind().map_err(Error::io(&path))?;
            file.write_all(format!("{text}\n").as_bytes())
                .map_err(Error::io(&path))?;
            file.flush().map_err(Error::io(&path))?;
            tracing::debug!(lock = %path.display(), what, "locked");
            return Ok(Self { file, path });
        }
        Err(Error::Invalid(format!(
            "cannot lock {}: the lock file keeps being replaced by other processes",
            path.display()
        )))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock; closing the file releases it.
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(lock = %self.path.display(), error = %e, "cannot remove the lock file");
        }
        if let Err(e) = self.file.unlock() {
            tracing::warn!(lock = %self.path.display(), error = %e, "cannot release the lock");
        }
    }
}

/// The error for a folder locked by another process.
fn refusal(dir: &Path, file: &mut File) -> Error {
    let holder = match read_holder(file) {
        Some(h) => format!("process {} ({}: `{}`)", h.pid, h.what, h.command),
        None => "another process (its pid is not recorded yet)".to_owned(),
    };
    Error::RunFolderLocked {
        dir: dir.to_path_buf(),
        holder,
    }
}

/// Parses the holder recorded in an open lock file.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// True when `path` still names the file `file` has open (a releasing holder removes the
/// lock file, and whoever locked the removed file must start again).
fn still_linked(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        path.exists()
    }
}
