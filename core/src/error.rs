//! The one error type of the daemon. Each variant is named for what went
//! wrong, not for a transport's code: `ttmd`'s `service::status` maps each
//! to exactly one gRPC status, in one place. The message is written for the
//! person who reads it and says what to do.

use std::path::PathBuf;

/// Shorthand used throughout the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names a module, transaction or target that does not exist.
    #[error("{0}")]
    Unknown(String),
    /// The request itself is malformed: a bad id, name, stage or JSON.
    #[error("{0}")]
    Malformed(String),
    /// The request is well-formed but the state of things forbids it: the
    /// transaction's stage, a finished transaction, no active transaction.
    #[error("{0}")]
    Refused(String),
    /// A symlink in the tree points where the daemon will not follow: an
    /// absolute `active` link outside its module.
    #[error("{0}")]
    UnsafeLink(String),
    /// A compare-and-set guard (`expect_stage`, `expect_seq`) did not match:
    /// another writer got there first.
    #[error("{0}")]
    Conflict(String),
    /// A request id was used again for a different request (another RPC,
    /// event type or parameters); a true repeat returns the first answer.
    #[error("{0}")]
    RequestIdReused(String),
    /// The transaction lives on another host (cluster mode) and this
    /// change cannot be sent there: evidence files stay on their home.
    #[error("{0}")]
    HomedElsewhere(String),
    /// A fence (`--fence NAME=TOKEN`) is not current: the lease was lost,
    /// released or granted to someone else since.
    #[error("{0}")]
    Fenced(String),
    /// A lease is held by another transaction and the caller chose not to
    /// wait (`--no-wait`).
    #[error("{0}")]
    LeaseBusy(String),
    /// A wait for a lease ran out (`--wait-timeout`).
    #[error("{0}")]
    WaitTimedOut(String),
    /// The operation needs coordination (cluster mode, SPEC §16–17) and the
    /// etcd cluster, or the home host of the transaction, cannot be
    /// reached; refused at once rather than done locally only.
    #[error("{0}")]
    CoordinationUnavailable(String),
    /// The caller is not allowed to talk to this daemon.
    #[error("{0}")]
    NotAllowed(String),
    /// A configured limit was exceeded.
    #[error("{0}")]
    OverLimit(String),
    /// A change would make `state.json` larger than `limits.state`; refused
    /// before anything is written, so no reply carrying a state grows past
    /// what gRPC clients accept.
    #[error("{0}")]
    StateTooLarge(String),
    /// An upload ended without the client's end-of-upload message, or with
    /// one that does not match what arrived: cancelled or cut short, so
    /// nothing was stored.
    #[error("{0}")]
    UploadIncomplete(String),
    /// The request names a tree this daemon does not serve; the client
    /// should talk to (or start) that tree's own daemon instead.
    #[error("{0}")]
    WrongTree(String),
    /// The client speaks another generation of the API than the daemon.
    #[error("{0}")]
    ApiMismatch(String),
    /// The tree is mounted read-only: the daemon serves reads only. The
    /// message carries the OS error and how to make the tree writable.
    #[error("{0}")]
    ReadOnlyTree(String),
    /// The daemon is stopping; the caller may retry once it is back.
    #[error("ttmd is shutting down; reconnect when it is back")]
    ShuttingDown,
    /// What a stream was following was removed while it followed.
    #[error("{0}")]
    Gone(String),
    /// A follower fell so far behind that changes it should have seen were
    /// dropped; it has to start over.
    #[error("{0}")]
    FellBehind(String),
    /// The daemon itself went wrong (a worker panicked or was cancelled):
    /// not the request's fault, and a bug to report.
    #[error("{0}")]
    Bug(String),
    /// A path the daemon was told to use is not safe to use: something
    /// other than a socket where the socket goes, a directory others may
    /// write to or another user owns.
    #[error("{0}")]
    UnsafePath(String),
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

    /// Shorthand for an `Malformed` with a formatted message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }
}
