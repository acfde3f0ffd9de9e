//! The write discipline of the tree, in one place: files are replaced by
//! write-to-temp + fsync + rename + directory fsync, logs are appended whole
//! lines at a time, and nothing inside the tree is opened through a symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::OFlags;

use crate::core::{Error, Result};

/// Whether writes are synced before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// The log is synced (fdatasync, shared by concurrent writers) before a
    /// change is acknowledged: an acknowledged change survives a crash.
    /// `state.json`, a view of the log, is replaced atomically at once and
    /// synced in the background within a second; after a crash the daemon
    /// rebuilds any view the log is ahead of.
    #[default]
    Fsync,
    /// Like `fsync`, and every `state.json` replacement is also synced
    /// (file and directory) before the answer: slower, for those who read
    /// state.json after a power cut before ttmd has restarted.
    Strict,
    /// Skip all syncs: faster, but a power cut may lose acknowledged changes
    /// (never tear a file: replacements are still atomic renames).
    None,
}

impl Durability {
    /// Whether the log and evidence are synced before an answer.
    pub fn syncs(self) -> bool {
        self != Durability::None
    }

    /// Whether a replaced `state.json` is left for the checkpoint to sync
    /// (`fsync`), rather than synced at once (`strict`) or never (`none`).
    pub fn defers_view_sync(self) -> bool {
        self == Durability::Fsync
    }

    /// How a `state.json` replacement is written under this setting.
    pub fn for_view(self) -> Durability {
        match self {
            Durability::Strict => Durability::Fsync,
            _ => Durability::None,
        }
    }
}

/// Prefix of every temporary file the daemon creates; start-up removes
/// leftovers with this prefix.
pub const TEMP_PREFIX: &str = ".ttmd-tmp-";

const NOFOLLOW: i32 = OFlags::NOFOLLOW.bits() as i32;

/// Opens an existing file for reading without following a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(path)
}

/// Reads a whole file without following a symlink.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_read(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Opens a log for appending (creating it if asked) without following a
/// symlink.
pub fn open_append(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .mode(0o644)
        .custom_flags(NOFOLLOW)
        .open(path)
}

/// A fresh, unique temporary file name.
pub fn temp_name(hint: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}-{n}-{hint}", std::process::id())
}

/// A fresh, unique temporary path in `dir`.
pub fn temp_path(dir: &Path, hint: &str) -> PathBuf {
    dir.join(temp_name(hint))
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path, durability: Durability) -> Result<()> {
    if !durability.syncs() {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// Opens `dir` itself (not through a symlink standing at `dir`), so files
/// are then created and renamed relative to this very directory.
pub fn open_dir(dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Explains an error from opening a path without following symlinks.
pub fn nofollow_error(action: &'static str, path: &Path, e: io::Error) -> Error {
    let symlink = e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error());
    if symlink {
        Error::Corrupt {
            path: path.to_path_buf(),
            message: "is a symlink (or not a directory); ttmd never follows symlinks inside the \
                      tree: move it away"
                .into(),
        }
    } else {
        Error::io(action, path, e)
    }
}

/// Creates a new file `name` inside `dir` (refusing a symlink at `dir` or
/// at `name`), for content streamed in by the caller.
pub fn create_in(dir: &Path, name: &str) -> Result<File> {
    let dfd = open_dir(dir).map_err(|e| nofollow_error("opening", dir, e))?;
    rustix::fs::openat(
        &dfd,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .map(File::from)
    .map_err(|e| nofollow_error("creating", &dir.join(name), io::Error::from(e)))
}

/// fsyncs each of `paths` (files or directories), when durability asks.
pub fn sync_all(paths: &[PathBuf], durability: Durability) -> Result<()> {
    if !durability.syncs() {
        return Ok(());
    }
    for p in paths {
        File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("syncing", p, e))?;
    }
    Ok(())
}

/// Replaces `dir/name` with `content` atomically: a crash leaves the old or
/// the new content, never a mix. Everything happens relative to `dir`
/// opened once without following a symlink, so neither a symlink planted
/// as `dir` nor one at `dir/name` is followed (one at `name` is replaced).
pub fn atomic_write(dir: &Path, name: &str, content: &[u8], durability: Durability) -> Result<()> {
    let dfd = open_dir(dir).map_err(|e| nofollow_error("opening", dir, e))?;
    let tmp = temp_name(name);
    let target = dir.join(name);
    let written = (|| {
        let mut f = File::from(rustix::fs::openat(
            &dfd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o644),
        )?);
        f.write_all(content)?;
        if durability.syncs() {
            f.sync_all()?;
        }
        rustix::fs::renameat(&dfd, tmp.as_str(), &dfd, name)?;
        if durability.syncs() {
            rustix::fs::fsync(&dfd)?;
        }
        Ok::<(), io::Error>(())
    })();
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&dfd, tmp.as_str(), rustix::fs::AtFlags::empty());
        return Err(Error::io("writing", target, e));
    }
    Ok(())
}

/// Creates `path` as a directory (mode 0755) if it is missing; refuses a
/// symlink or a non-directory standing there.
pub fn ensure_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: "expected a directory, found a symlink or file; ttmd never follows \
                      symlinks inside the tree: move it away"
                .into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| Error::io("creating directory", path, e)),
        Err(e) => Err(Error::io("inspecting", path, e)),
    }
}

/// Creates `path` (mode 0700) if missing, or narrows an existing real
/// directory to 0700: it holds the lock and usually the socket.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io("restricting", path, e))?;
            }
            Ok(())
        }
        Ok(_) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: "expected a directory, found a symlink or file: move it away".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io("creating directory", path, e)),
        Err(e) => Err(Error::io("inspecting", path, e)),
    }
}

/// Fails unless `path` is a real directory (not a symlink to one).
pub fn require_real_dir(path: &Path, what: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("{what} is a symlink; ttmd never follows symlinks inside the tree"),
        }),
        Ok(_) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("{what} is not a directory"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Unknown(format!(
            "{what} {} does not exist",
            path.display()
        ))),
        Err(e) => Err(Error::io("inspecting", path, e)),
    }
}

/// Why nothing can be written under `root`, if its file system is mounted
/// read-only (`ST_RDONLY`): the OS error every write would meet. Only a
/// read-only mount counts, not EACCES: permissions differ file by file, so a
/// tree the daemon may not write is a misconfiguration to fix, not a mode.
pub fn read_only(root: &Path) -> Option<String> {
    let vfs = rustix::fs::statvfs(root).ok()?;
    vfs.f_flag
        .contains(rustix::fs::StatVfsMountFlags::RDONLY)
        .then(|| io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error()).to_string())
}

/// Removes temporary files a crashed daemon left in `dir`.
pub fn remove_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        atomic_write(dir.path(), "f", b"one", Durability::Fsync).unwrap();
        atomic_write(dir.path(), "f", b"two", Durability::Fsync).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "secret").unwrap();
        let inner = dir.path().join("inner");
        fs::create_dir(&inner).unwrap();
        std::os::unix::fs::symlink(&outside, inner.join("state.json")).unwrap();
        assert!(read_file(&inner.join("state.json")).is_err());
        assert!(open_append(&inner.join("state.json"), true).is_err());
        // Replacing swaps the link itself; the outside file is untouched.
        atomic_write(&inner, "state.json", b"new", Durability::None).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"secret");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&inner, &link).unwrap();
        assert!(ensure_dir(&link).is_err());
        assert!(require_real_dir(&link, "x").is_err());
    }

    #[test]
    fn temp_files_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(temp_path(dir.path(), "x"), "junk").unwrap();
        fs::write(dir.path().join("keep"), "k").unwrap();
        assert_eq!(remove_temp_files(dir.path()), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
