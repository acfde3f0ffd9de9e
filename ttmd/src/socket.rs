//! The Unix socket: created in a 0700 directory, mode 0600; a stale socket
//! of a dead daemon is removed, a live one is never taken over, and nothing
//! that is not a socket is ever removed. The directory must be one only its
//! owner (this user or root) can change, or a sticky one like /tmp.

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
    /// The device and inode of the socket file bound, so shutdown removes
    /// that file and nothing put at the path since.
    pub bound: Option<(u64, u64)>,
    /// Held until the daemon exits.
    pub lock: TreeLock,
}

impl Listener {
    /// Removes the socket this daemon bound, and only that: a file put at
    /// the path since (another daemon's socket, anything) stays.
    pub fn remove_bound(path: &Path, owned: bool, bound: Option<(u64, u64)>) {
        let now = identity(path);
        if owned && now.is_some() && now == bound {
            let _ = fs::remove_file(path);
        }
    }
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
        // Never replaces: whatever appeared at the path since the check
        // stays, and binding fails.
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &inner,
            rustix::fs::CWD,
            socket,
            rustix::fs::RenameFlags::NOREPLACE,
        )?;
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
        bound: None,
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
    check_socket_dir(socket)?;
    remove_stale(socket)?;
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
        bound: identity(socket),
        lock,
    })
}

/// The device and inode of what is at `path` (not followed).
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes what is at `socket` only if it is a socket nobody answers on (a
/// dead daemon's); refuses anything else, naming what is there.
fn remove_stale(socket: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspecting the socket path", socket, e)),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_symlink() {
            "a symlink"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "a special file"
        };
        return Err(Error::UnsafePath(format!(
            "{} is {what}, not a socket; ttmd removes only the stale socket of a dead ttmd. \
             Move it away or choose another --socket",
            socket.display()
        )));
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(Error::Refused(format!(
            "another ttmd is already running on socket {} (serving another tree); stop it or \
             choose another --socket",
            socket.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(socket).map_err(|e| Error::io("removing stale socket", socket, e))?;
            tracing::info!(socket = %socket.display(), "removed the stale socket of a dead ttmd");
            Ok(())
        }
        Err(e) => Err(Error::io(
            "connecting to the socket already there (left alone)",
            socket,
            e,
        )),
    }
}

/// Refuses to serve from a directory another user could replace the socket
/// in: one owned by neither this user nor root, or writable by group or
/// others without the sticky bit (in a sticky directory like /tmp nobody
/// else can remove or rename our socket).
fn check_socket_dir(socket: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = fs::metadata(dir).map_err(|e| Error::io("inspecting socket directory", dir, e))?;
    let me = rustix::process::geteuid().as_raw();
    let mode = meta.mode();
    let problem = if meta.uid() != me && meta.uid() != 0 {
        format!("is owned by uid {}, not by uid {me} or root", meta.uid())
    } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        format!(
            "is writable by other users (mode {:o}) and not sticky",
            mode & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(Error::UnsafePath(format!(
        "the socket directory {} {problem}: another user could replace the socket and \
         receive your requests. Use a private directory (the default \
         $XDG_RUNTIME_DIR/ttm), or fix it with `chmod o-w,g-w` / `chown`",
        dir.display()
    )))
}
