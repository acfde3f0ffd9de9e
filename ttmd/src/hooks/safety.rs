//! Whether a hook file may be run: the daemon runs what the file says, so
//! whoever can change the file (or its directory) could run commands as
//! the daemon's user. Refused: anything not a regular executable file,
//! owned by a user other than the daemon's (or root), or writable by its
//! group or others — the file, its directory, and for a symlinked hook the
//! directory of the file it points to.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why the hook at `path` must not run, or `Ok`.
pub fn check(path: &Path) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    if let Some(dir) = path.parent() {
        check_dir(dir, me)?;
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read hook {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "hook {} is not a regular file; make it an executable file",
            path.display()
        ));
    }
    owned_and_private(path, &meta, me, "hook")?;
    if rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_err() {
        return Err(format!(
            "hook {} is not executable; `chmod u+x {}` to run it, or remove it",
            path.display(),
            path.display()
        ));
    }
    if path.is_symlink() {
        let real = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot resolve hook {}: {e}", path.display()))?;
        if let Some(dir) = real.parent() {
            check_dir(dir, me)?;
        }
    }
    Ok(())
}

fn check_dir(dir: &Path, me: u32) -> Result<(), String> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read hook directory {}: {e}", dir.display()))?;
    owned_and_private(dir, &meta, me, "hook directory")
}

fn owned_and_private(
    path: &Path,
    meta: &std::fs::Metadata,
    me: u32,
    what: &str,
) -> Result<(), String> {
    let p = path.display();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{what} {p} is owned by uid {}, not by ttmd's user (uid {me}) or root; \
             `chown` it to uid {me} to run it",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what} {p} is writable by its group or others (mode {mode:04o}), so others \
             could change what ttmd runs; `chmod go-w {p}` to run it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;
    use std::os::unix::fs::PermissionsExt;

    fn hook(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
        let path = dir.join("on-commit");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_a_private_executable_runs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&hook(tmp.path(), 0o755)), Ok(()));
        let world = check(&hook(tmp.path(), 0o757)).unwrap_err();
        assert!(world.contains("writable by its group or others"), "{world}");
        let group = check(&hook(tmp.path(), 0o775)).unwrap_err();
        assert!(group.contains("chmod go-w"), "{group}");
        if rustix::process::geteuid().as_raw() != 0 {
            // root may execute anything with an x bit; others need theirs.
            let plain = check(&hook(tmp.path(), 0o644)).unwrap_err();
            assert!(plain.contains("not executable"), "{plain}");
        }
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir = check(&hook(tmp.path(), 0o755)).unwrap_err();
        assert!(dir.contains("hook directory"), "{dir}");
    }
}
