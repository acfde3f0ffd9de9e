//! One daemon per tree: an exclusive lock on `<root>/run/ttmd.lock`, held for
//! the daemon's life. The file records the holder's pid and socket so a
//! second daemon can say which one is running.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::core::{Error, Result};
use crate::store::fsio;

/// The lock file, relative to the root.
pub const LOCK_FILE: &str = "run/ttmd.lock";

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct TreeLock {
    _file: File,
    /// Where the lock file is.
    pub path: PathBuf,
}

/// Takes the tree's lock or explains who holds it.
pub fn acquire(root: &Path, socket: &Path) -> Result<TreeLock> {
    let path = root.join(LOCK_FILE);
    if let Some(dir) = path.parent() {
        // run/ may hold the socket too: private, like the socket's directory.
        fsio::ensure_private_dir(dir)?;
    }
    // Never through a symlink, and only a regular file: the lock file is
    // truncated and written, which must not reach anything else.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| Error::io("opening lock file (it must not be a symlink)", &path, e))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Error::UnsafePath(format!(
            "the lock file {} is not a regular file; move it away",
            path.display()
        )));
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let mut parts = holder.lines();
            let who = match (parts.next(), parts.next()) {
                (Some(pid), Some(sock)) => format!("pid {pid}, socket {sock}"),
                // The holder has the lock but has not written its record yet.
                _ => "it is just starting".to_string(),
            };
            return Err(Error::Refused(format!(
                "ttmd is already running for {} ({who}); stop it first or use that one",
                root.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
    }
    let record = format!("{}\n{}\n", std::process::id(), socket.display());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(record.as_bytes()))
        .map_err(|e| Error::io("writing lock file", &path, e))?;
    Ok(TreeLock { _file: file, path })
}
