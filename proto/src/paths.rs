//! Where the tree and the socket are, from the environment (SPEC §1, §8).
//! Client and daemon must compute the same answer, so it lives here once.

use std::env;
use std::path::PathBuf;

/// Socket file name inside its directory.
pub const SOCKET_NAME: &str = "ttmd.sock";

/// `$TETRA_DIR`, else `~/.tetra`, else `./.tetra` when there is no home.
pub fn tetra_dir() -> PathBuf {
    if let Some(dir) = non_empty_var("TETRA_DIR") {
        return PathBuf::from(dir);
    }
    match non_empty_var("HOME") {
        Some(home) => PathBuf::from(home).join(".tetra"),
        None => PathBuf::from(".tetra"),
    }
}

/// The socket a daemon for `root` listens on when no `--socket` is given:
/// `$TTM_SOCKET`, else `$XDG_RUNTIME_DIR/ttm/ttmd.sock`, else
/// `<root>/run/ttmd.sock`.
pub fn default_socket(root: &std::path::Path) -> PathBuf {
    if let Some(sock) = non_empty_var("TTM_SOCKET") {
        return PathBuf::from(sock);
    }
    if let Some(runtime) = non_empty_var("XDG_RUNTIME_DIR") {
        return PathBuf::from(runtime).join("ttm").join(SOCKET_NAME);
    }
    root.join("run").join(SOCKET_NAME)
}

fn non_empty_var(name: &str) -> Option<std::ffi::OsString> {
    env::var_os(name).filter(|v| !v.is_empty())
}
