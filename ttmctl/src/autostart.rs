//! Starting ttmd when nobody answers (SPEC §8), so a new user needs no
//! set-up: spawn it detached from the terminal's signals, then wait for its
//! socket.

use std::env;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use crate::exit::{Exit, Failure};

/// How long a fresh daemon may take to recover its tree and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What ttmd prints when another daemon holds the tree's lock: then another
/// client's autostart won the race, and its socket is the one to wait for.
const LOST_RACE_MARKER: &str = "already running";

/// `TTM_NO_AUTOSTART=1`.
pub fn disabled() -> bool {
    env::var_os("TTM_NO_AUTOSTART").is_some_and(|value| value == "1")
}

/// Starts ttmd for `socket` and returns the first connection to it.
pub async fn start(socket: &Path) -> Result<UnixStream, Failure> {
    let root = absolute(&crate::connect::tree().root);
    let socket = absolute(socket);
    let log_file = socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("ttmd.log");
    let binary = daemon_binary();

    // The child's stderr goes to an unlinked temporary file rather than a
    // pipe: once ttmctl exits, a pipe would have no reader and any later
    // write by the daemon would fail with EPIPE. The file is read only if
    // the child dies before it is ready.
    let mut stderr = tempfile::tempfile().map_err(|err| {
        Failure::new(
            Exit::Unreachable,
            format!("cannot start ttmd: no temporary file for its errors: {err}"),
        )
    })?;
    let child_stderr = stderr
        .try_clone()
        .map_err(|err| Failure::new(Exit::Unreachable, format!("cannot start ttmd: {err}")))?;

    let mut child = Command::new(&binary)
        .arg("--root")
        .arg(&root)
        .arg("--socket")
        .arg(&socket)
        .arg("--log-file")
        .arg(&log_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(child_stderr)
        // Not the user's cwd: the daemon must not pin a directory they may
        // want to unmount or delete. Its paths are absolute.
        .current_dir("/")
        // Its own process group, so Ctrl-C in the terminal does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|err| {
            Failure::new(
                Exit::Unreachable,
                format!(
                    "cannot start ttmd ({}): {err}; install ttmd next to ttmctl or on PATH, \
                     or set TTMD_BIN",
                    binary.to_string_lossy()
                ),
            )
        })?;

    wait_until_ready(&mut child, &mut stderr, &socket, &log_file).await
    // `child` is dropped without waiting: the daemon outlives ttmctl and is
    // reparented when ttmctl exits, so no zombie is left behind.
}

async fn wait_until_ready(
    child: &mut Child,
    stderr: &mut File,
    socket: &Path,
    log_file: &Path,
) -> Result<UnixStream, Failure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    // The child's words when it lost the race to another daemon.
    let mut lost_race: Option<String> = None;
    loop {
        if let Ok(stream) = UnixStream::connect(socket).await {
            return Ok(stream);
        }
        if lost_race.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            let text = read_from_start(stderr);
            if !text.contains(LOST_RACE_MARKER) {
                return Err(Failure::new(
                    Exit::Unreachable,
                    format!(
                        "ttmd exited ({status}) before it was ready: {}",
                        one_line(&text)
                    ),
                ));
            }
            lost_race = Some(text);
        }
        if Instant::now() >= deadline {
            let why = match &lost_race {
                Some(text) => format!("; ttmd said: {}", one_line(text)),
                None => format!("; see {}", log_file.display()),
            };
            return Err(Failure::new(
                Exit::Unreachable,
                format!(
                    "ttmd did not answer at {} within {} s{why}",
                    socket.display(),
                    READY_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `$TTMD_BIN`, else a `ttmd` beside this executable (an install or a cargo
/// target directory keeps the pair together), else `ttmd` on PATH.
fn daemon_binary() -> OsString {
    if let Some(bin) = env::var_os("TTMD_BIN").filter(|bin| !bin.is_empty()) {
        return bin;
    }
    if let Ok(exe) = env::current_exe()
        && let Some(beside) = exe.parent().map(|dir| dir.join("ttmd"))
        && beside.is_file()
    {
        return beside.into_os_string();
    }
    OsString::from("ttmd")
}

/// The daemon runs in `/`, so it must get absolute paths.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read_from_start(file: &mut File) -> String {
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(0)).is_ok() {
        // What could be read is still worth showing.
        let _ = file.take(64 * 1024).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The child's stderr on one line: its last few non-empty lines.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return "(no message)".to_owned();
    }
    lines[lines.len().saturating_sub(5)..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_the_last_lines() {
        assert_eq!(one_line(""), "(no message)");
        assert_eq!(one_line("a\n\n b \n"), "a; b");
        assert_eq!(one_line("1\n2\n3\n4\n5\n6\n7"), "3; 4; 5; 6; 7");
    }
}
