//! The one error type of the daemon. Each variant is a kind of refusal that
//! maps to exactly one gRPC status (see `service::status`); the message is
//! written for the person who reads it and says what to do.

use std::path::PathBuf;

/// Shorthand used throughout the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A module, transaction or target does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed: a bad id, name, stage or JSON.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well-formed but the transaction's stage forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A compare-and-set guard (`expect_stage`, `expect_seq`) did not match.
    #[error("{0}")]
    Aborted(String),
    /// The caller is not allowed to talk to this daemon.
    #[error("{0}")]
    PermissionDenied(String),
    /// A configured limit was exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// The file system refused an operation on the tree.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the daemon was doing, e.g. "appending to".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file in the tree has content the daemon cannot use.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with the action and path it happened on.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for an `InvalidArgument` with a formatted message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
