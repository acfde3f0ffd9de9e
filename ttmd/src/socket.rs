//! The Unix socket: created in a 0700 directory, mode 0600; a stale socket
//! of a dead daemon is removed, a live one is never taken over.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::core::{Error, Result};
use crate::store::lock::{self, TreeLock};

/// A bound socket plus the tree lock that entitles the daemon to serve.
#[derive(Debug)]
pub struct Listener {
    /// The listening socket.
    pub listener: tokio::net::UnixListener,
    /// Its path.
    pub path: PathBuf,
    /// Whether the daemon bound it (and so removes it at shutdown); false
    /// for a socket handed over by systemd, which owns it.
    pub owned: bool,
    /// Held until the daemon exits.
    pub lock: TreeLock,
}

/// Binds `socket` with mode 0600 from its first moment: it is created in a
/// fresh 0700 directory beside it, narrowed there, then renamed into place,
/// so there is no window in which a wider socket is reachable, whatever the
/// umask or the mode of the target directory.
fn bind_private(socket: &Path) -> Result<std::os::unix::net::UnixListener> {
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = crate::store::fsio::temp_path(parent, "bind");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| Error::io("creating socket directory", &staging, e))?;
    let inner = staging.join("s");
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&inner)?;
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o600))?;
        fs::rename(&inner, socket)?;
        Ok::<_, io::Error>(listener)
    })();
    let _ = fs::remove_file(&inner);
    let _ = fs::remove_dir(&staging);
    bound.map_err(|e| Error::io("binding socket", socket, e))
}

/// The socket to serve: the one systemd passed (`LISTEN_FDS`), else a
/// fresh one bound at `socket`. Takes the tree's lock either way. Must run
/// inside a tokio runtime.
pub fn listen(root: &Path, socket: &Path) -> Result<Listener> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return bind(root, socket);
    }
    let passed = fds
        .take_unix_listener(0)
        .map_err(|e| Error::io("taking the socket passed by systemd", socket, e))?
        .ok_or_else(|| {
            Error::invalid(
                "LISTEN_FDS is set but fd 3 is not a Unix stream socket; check ttmd.socket",
            )
        })?;
    let path = passed
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_else(|| socket.to_path_buf());
    let lock = lock::acquire(root, &path)?;
    passed
        .set_nonblocking(true)
        .map_err(|e| Error::io("configuring socket", &path, e))?;
    let listener = tokio::net::UnixListener::from_std(passed)
        .map_err(|e| Error::io("registering socket", &path, e))?;
    tracing::info!(socket = %path.display(), "serving the socket passed by systemd");
    Ok(Listener {
        listener,
        path,
        owned: false,
        lock,
    })
}

/// Takes the tree's lock, then binds `socket`. Must run inside a tokio
/// runtime.
pub fn bind(root: &Path, socket: &Path) -> Result<Listener> {
    let lock = lock::acquire(root, socket)?;
    if let Some(dir) = socket.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("creating socket directory", dir, e))?;
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => {
            return Err(Error::Refused(format!(
                "another ttmd is already running on socket {} (serving another tree); stop it \
                 or choose another --socket",
                socket.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            // Nobody answers: the socket of a dead daemon.
            if let Err(e) = fs::remove_file(socket)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(Error::io("removing stale socket", socket, e));
            }
            tracing::info!(socket = %socket.display(), "removed the stale socket of a dead ttmd");
        }
    }
    let std_listener = bind_private(socket)?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("configuring socket", socket, e))?;
    let listener = tokio::net::UnixListener::from_std(std_listener)
        .map_err(|e| Error::io("registering socket", socket, e))?;
    Ok(Listener {
        listener,
        path: socket.to_path_buf(),
        owned: true,
        lock,
    })
}
