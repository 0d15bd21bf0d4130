//! The one error type shared by every strata crate.

use std::path::PathBuf;

/// Every fallible strata operation returns this error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, mistyped or impossible.
    #[error("{file}: field `{field}`: expected {expected}, found {found}")]
    Config {
        /// The configuration file (or override) that holds the value.
        file: String,
        /// The dotted field name, e.g. `model.n_head`.
        field: String,
        /// What a valid value looks like.
        expected: String,
        /// What was found instead.
        found: String,
    },
    /// A configuration file cannot be parsed (syntax, unknown or mistyped keys).
    #[error("{file}: {message}")]
    Parse {
        /// The file (or override) being parsed.
        file: String,
        /// The parser's explanation, naming the key and what was expected.
        message: String,
    },
    /// A corpus or other input data file is unusable.
    #[error("{path}: {message}")]
    Data {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint is missing, truncated, corrupt or does not fit the run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An I/O operation on a named path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Tensor shapes do not fit an operation.
    #[error("{op}: expected shape {expected}, got {got}")]
    Shape {
        /// The operation that checked the shape.
        op: String,
        /// The expected shape, `_` for any size.
        expected: String,
        /// The shape that was passed.
        got: String,
    },
    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// A request that is invalid for a reason not covered above.
    #[error("{0}")]
    Invalid(String),
    /// An error raised inside libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A new run was asked for in a run folder that already holds one.
    #[error("{}", run_folder_taken(.dir, .has_checkpoint))]
    RunFolderTaken {
        /// The run folder.
        dir: PathBuf,
        /// Whether the run there left a checkpoint to resume from.
        has_checkpoint: bool,
    },
    /// Replacing the run in a folder was refused (nothing deleted): the folder holds an entry
    /// strata did not write.
    #[error(
        "{} holds `{name}`, which strata did not write; replacing a run removes only a run's \
         own files, so nothing was deleted: move `{name}` elsewhere, or use another run folder",
        .dir.display()
    )]
    ForeignEntry {
        /// The run folder.
        dir: PathBuf,
        /// The entry (relative to `dir`) strata did not write.
        name: String,
    },
    /// An export was asked for in a folder that holds files already: an earlier export
    /// (`foreign` is `None`; replacing it was not asked for) or an entry an export does not
    /// write (never replaced).
    #[error("{}", export_folder_taken(.dir, .foreign.as_deref()))]
    ExportFolderTaken {
        /// The export folder.
        dir: PathBuf,
        /// The first entry (relative to `dir`) an export does not write, if any.
        foreign: Option<String>,
    },
    /// Resuming was asked of a run folder whose run stopped before its first checkpoint.
    #[error(
        "checkpoint {}: has no checkpoint yet: its run stopped before the first checkpoint, so \
         there is nothing to resume; start the run afresh (replacing it) instead",
        .dir.display()
    )]
    NothingToResume {
        /// The run folder.
        dir: PathBuf,
    },
    /// A run was asked both to continue from a checkpoint and to start afresh from one's
    /// weights.
    #[error(
        "resuming continues a run and starting from a checkpoint's weights (`init_from`) \
         starts a new one: ask for one of them"
    )]
    ResumeAndInitFrom,
    /// Training produced a NaN or infinite value; nothing was saved from the diverged state.
    #[error("{}", diverged(.step, .what, .last_good.as_deref()))]
    Diverged {
        /// The step at which it was noticed.
        step: u64,
        /// What was not finite.
        what: String,
        /// The last good checkpoint of the run, if any.
        last_good: Option<PathBuf>,
    },
    /// A run folder is locked by another process that is writing to it.
    #[error(
        "{} is in use: {holder} is writing to it; wait for it to finish, stop it, or use \
         another folder",
        .dir.display()
    )]
    RunFolderLocked {
        /// The run folder.
        dir: PathBuf,
        /// Who holds the lock (pid, what and command, when recorded).
        holder: String,
    },
    /// A rank of a multi-process run could not reach the others, lost one, or disagrees with
    /// them.
    #[error("distributed run, rank {rank}: {message}")]
    Distributed {
        /// This process's rank.
        rank: usize,
        /// What went wrong, and what to check.
        message: String,
    },
    /// A `key=value` override of a configuration file does not fit it.
    #[error("{file} with override {items}: {message}{}", quote_hint(.quoted.as_deref()))]
    Override {
        /// The configuration file.
        file: String,
        /// The override(s) at fault, space-separated.
        items: String,
        /// What is wrong, naming the key and what was expected.
        message: String,
        /// The override spelled as a quoted string, when that is what the field takes.
        quoted: Option<String>,
    },
}

/// The message of [`Error::RunFolderTaken`].
fn run_folder_taken(dir: &std::path::Path, has_checkpoint: &bool) -> String {
    if *has_checkpoint {
        format!(
            "{} already holds a run; resume it, replace it, or use another run folder",
            dir.display()
        )
    } else {
        format!(
            "{} holds a run that left no checkpoint (it stopped before its first one), so \
             there is nothing to resume; replace it to start afresh, or use another run folder",
            dir.display()
        )
    }
}

/// The message of [`Error::ExportFolderTaken`].
fn export_folder_taken(dir: &std::path::Path, foreign: Option<&str>) -> String {
    match foreign {
        Some(name) => format!(
            "{}: holds `{name}`, which an export does not write; expected a new or empty folder \
             (replacing touches only an earlier export's files)",
            dir.display()
        ),
        None => format!(
            "{}: holds an earlier export; replace it, or choose another folder",
            dir.display()
        ),
    }
}

/// The message of [`Error::Diverged`].
fn diverged(step: &u64, what: &str, last_good: Option<&std::path::Path>) -> String {
    let last_good = match last_good {
        Some(path) => format!(
            "the last good checkpoint is {} (resume from it with, say, a lower \
             train.learning_rate)",
            path.display()
        ),
        None => "this run has no good checkpoint to go back to".to_owned(),
    };
    format!(
        "training diverged at step {step}: {what}; nothing was saved from the diverged state, \
         and {last_good}"
    )
}

/// The quoting advice of [`Error::Override`].
fn quote_hint(quoted: Option<&str>) -> String {
    quoted.map_or_else(String::new, |q| format!(" (a string: quote it, {q})"))
}

/// Result alias used across strata.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds a [`Error::Config`] from anything printable.
    pub fn config(
        file: impl Into<String>,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        Self::Config {
            file: file.into(),
            field: field.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// Builds a [`Error::Data`] for a path.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Builds a [`Error::Checkpoint`] for a path.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Returns a closure that wraps an `io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
