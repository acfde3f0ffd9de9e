//! What a daemon needs to know to serve a tree. There is no config file yet:
//! every field has a default, and `main` fills them from flags and the
//! environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::Durability;

/// Settings of one daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tree served (`$TETRA_DIR`).
    pub root: PathBuf,
    /// The socket path, reported in `Hello` and the lock file.
    pub socket: PathBuf,
    /// Whether writes are synced before they are acknowledged.
    pub durability: Durability,
    /// Size limits on requests.
    pub limits: Limits,
    /// How often an idle followed stream gets a heartbeat.
    pub heartbeat: Duration,
}

/// Size limits; each refusal names the limit it hit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of a transaction description.
    pub description: usize,
    /// Bytes of a JSON payload (update patch, event data).
    pub payload: usize,
    /// Bytes of one ctx file.
    pub ctx_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            description: 64 * 1024,
            payload: 1024 * 1024,
            ctx_file: 16 * 1024 * 1024 * 1024,
        }
    }
}

impl Config {
    /// A config with defaults for everything but the tree and socket.
    pub fn new(root: PathBuf, socket: PathBuf) -> Config {
        Config {
            root,
            socket,
            durability: Durability::default(),
            limits: Limits::default(),
            heartbeat: Duration::from_secs(10),
        }
    }
}
