//! The one error type shared by every strata crate.

use std::path::PathBuf;

/// Every fallible strata operation returns this error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, mistyped or impossible.
    #[error("{file}: field `{field}`: expected {expected}, found {found}")]
    Config {
        /// The configuration file (or `--set` override) that holds the value.
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
        /// The file (or `--set` override) being parsed.
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
