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

/// The tree a client means, and whether the user named it (then the client
/// tells the daemon, which refuses to serve a request meant for another
/// tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTree {
    /// The root (`$TETRA_DIR`).
    pub root: PathBuf,
    /// Whether `TETRA_DIR`, `TTM_DIR` or `TTM_TXNS_DIR` named it.
    pub explicit: bool,
}

/// The tree a client acts on: `$TETRA_DIR`, else the root implied by the
/// bash version's `TTM_DIR=<root>/ttm` or `TTM_TXNS_DIR=<root>/ttm/txns`,
/// else `~/.tetra`. Bash variables that do not follow that layout, or that
/// contradict `TETRA_DIR`, are refused with a message saying what to set.
pub fn client_tree() -> Result<ClientTree, String> {
    let tetra = non_empty_var("TETRA_DIR").map(PathBuf::from);
    let implied = bash_root()?;
    match (tetra, implied) {
        (Some(t), Some((name, r))) if strip_slash(&t) != strip_slash(&r) => Err(format!(
            "{name} points into {} but TETRA_DIR is {}; unset one of them",
            r.display(),
            t.display()
        )),
        (Some(t), _) => Ok(ClientTree {
            root: t,
            explicit: true,
        }),
        (None, Some((_, r))) => Ok(ClientTree {
            root: r,
            explicit: true,
        }),
        (None, None) => Ok(ClientTree {
            root: tetra_dir(),
            explicit: false,
        }),
    }
}

/// The root implied by `TTM_DIR` / `TTM_TXNS_DIR`, with the variable's name.
fn bash_root() -> Result<Option<(&'static str, PathBuf)>, String> {
    let layout = |name: &'static str, value: PathBuf, tail: &[&str]| {
        let mut p = strip_slash(&value);
        for part in tail.iter().rev() {
            if p.file_name().and_then(|n| n.to_str()) != Some(part) {
                return Err(format!(
                    "{name}={} does not follow the layout <root>/{}; set TETRA_DIR=<root> instead",
                    value.display(),
                    tail.join("/")
                ));
            }
            p.pop();
        }
        Ok(Some((name, p)))
    };
    let dir = non_empty_var("TTM_DIR").map(|v| layout("TTM_DIR", PathBuf::from(v), &["ttm"]));
    let txns = non_empty_var("TTM_TXNS_DIR")
        .map(|v| layout("TTM_TXNS_DIR", PathBuf::from(v), &["ttm", "txns"]));
    match (dir.transpose()?.flatten(), txns.transpose()?.flatten()) {
        (Some((_, a)), Some((_, b))) if a != b => Err(format!(
            "TTM_DIR and TTM_TXNS_DIR name different trees ({} and {}); unset one",
            a.display(),
            b.display()
        )),
        (Some(x), _) | (None, Some(x)) => Ok(Some(x)),
        (None, None) => Ok(None),
    }
}

fn strip_slash(p: &std::path::Path) -> PathBuf {
    p.components().collect()
}
