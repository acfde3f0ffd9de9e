//! One daemon per tree: an exclusive lock on `<root>/run/ttmd.lock`, held for
//! the daemon's life. The file records the holder's pid and socket so a
//! second daemon can say which one is running.
//!
//! A tree mounted read-only can hold no lock file, so every daemon also locks
//! the root directory itself (`flock` works on a directory opened for
//! reading, on any mount): a read-only daemon holds only that lock, and it
//! keeps out read-write daemons too (say through another, writable mount).

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
    /// `None` on a read-only tree.
    _file: Option<File>,
    /// The root directory, locked too (see the module's comment).
    _root: Option<File>,
    /// Where the lock file is (the root on a read-only tree).
    pub path: PathBuf,
}

/// Takes the tree's lock or explains who holds it.
pub fn acquire(root: &Path, socket: &Path) -> Result<TreeLock> {
    if fsio::read_only(root).is_some() {
        return Ok(TreeLock {
            _file: None,
            _root: Some(lock_root(root)?),
            path: root.to_path_buf(),
        });
    }
    // The root's lock first: were the file taken first, its record would
    // be this daemon's by the time a refusal reads it.
    let early = lock_root(root);
    if let Err(e @ Error::Refused(_)) = early {
        return Err(e);
    }
    let file = acquire_file(root, socket)?;
    // A root made just now (with run/) is locked now. Only a read-only tree
    // depends on this lock; here the lock file is the guarantee, so a file
    // system that cannot lock a directory is no reason to refuse starting.
    let dir = early.or_else(|_| lock_root(root)).ok();
    Ok(TreeLock {
        _file: Some(file),
        _root: dir,
        path: root.join(LOCK_FILE),
    })
}

/// Locks the root directory itself.
fn lock_root(root: &Path) -> Result<File> {
    let dir = File::open(root).map_err(|e| Error::io("opening the tree's root", root, e))?;
    match dir.try_lock() {
        Ok(()) => Ok(dir),
        Err(TryLockError::WouldBlock) => Err(running(root, &recorded_holder(root))),
        Err(TryLockError::Error(e)) => Err(Error::io("locking the tree's root", root, e)),
    }
}

/// Who holds the root's lock, from the lock file if its holder is alive
/// (it still holds that lock too); a daemon serving the tree read-only
/// records nothing.
fn recorded_holder(root: &Path) -> String {
    let live = fsio::open_read(&root.join(LOCK_FILE))
        .ok()
        .filter(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)));
    match live {
        Some(mut file) => holder(&mut file),
        None => "it serves the tree read-only, so it records no pid; `ttmctl daemon status` \
                 on its socket names it"
            .to_string(),
    }
}

/// The holder's record in the lock file.
fn holder(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    let mut parts = holder.lines();
    match (parts.next(), parts.next()) {
        (Some(pid), Some(sock)) => format!("pid {pid}, socket {sock}"),
        // The holder has the lock but has not written its record yet.
        _ => "it is just starting".to_string(),
    }
}

fn running(root: &Path, who: &str) -> Error {
    Error::Refused(format!(
        "ttmd is already running for {} ({who}); stop it first or use that one",
        root.display()
    ))
}

/// Takes the lock file, recording this daemon's pid and socket in it.
fn acquire_file(root: &Path, socket: &Path) -> Result<File> {
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
        Err(TryLockError::WouldBlock) => return Err(running(root, &holder(&mut file))),
        Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
    }
    let record = format!("{}\n{}\n", std::process::id(), socket.display());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(record.as_bytes()))
        .map_err(|e| Error::io("writing lock file", &path, e))?;
    Ok(file)
}
