//! Running one hook: its own process group, the event on stdin, output
//! kept up to a bound, and the whole group killed at the timeout.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How long the pipes are still read once the hook itself has exited.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Signaled(i32),
    /// Killed at the timeout.
    TimedOut,
    /// It could not be started.
    NotStarted(String),
}

/// A finished run.
#[derive(Debug)]
pub struct Ran {
    pub end: End,
    pub duration: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `path` with `input` on stdin and `env` added to the daemon's
/// environment, in `cwd`; at `timeout` kills its process group. Keeps the
/// first `cap` bytes of stdout and of stderr (and reads the rest, so the
/// hook never blocks on a full pipe).
pub async fn run(
    path: &Path,
    cwd: &Path,
    input: &[u8],
    env: &[(&str, String)],
    timeout: Duration,
    cap: usize,
) -> Ran {
    let began = Instant::now();
    let mut child = match spawn(path, cwd, env) {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                end: End::NotStarted(format!("cannot start {}: {e}", path.display())),
                duration: began.elapsed(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
        }
    };
    let group = child.id();
    // Aborted with the daemon's tasks (shutdown): the whole group goes too.
    let mut guard = GroupGuard(group);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let work = wait_reading(&mut child, input, cap, &mut out, &mut err);
    let end = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(status)) => ended(status),
        Ok(Err(e)) => End::NotStarted(format!("waiting for {}: {e}", path.display())),
        Err(_) => {
            kill_group(group);
            let _ = child.wait().await;
            End::TimedOut
        }
    };
    guard.0 = None;
    Ran {
        end,
        duration: began.elapsed(),
        stdout: out,
        stderr: err,
    }
}

/// Feeds `input` to the hook and reads its output while waiting for it to
/// exit.
async fn wait_reading(
    child: &mut Child,
    input: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
) -> std::io::Result<std::process::ExitStatus> {
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let feed = async {
        if let Some(mut i) = stdin {
            // A hook that does not read its stdin is not an error.
            let _ = i.write_all(input).await;
        }
    };
    let pipes = async {
        tokio::join!(feed, keep(stdout, cap, out), keep(stderr, cap, err));
    };
    let mut pipes = std::pin::pin!(pipes);
    let (status, drained) = tokio::select! {
        status = child.wait() => (status, false),
        () = &mut pipes => (child.wait().await, true),
    };
    // The hook exited; what it started in the background (`curl … &`)
    // may keep its pipes open. Read what is left for a moment, then stop:
    // the hook's outcome is its own exit.
    if !drained {
        let _ = tokio::time::timeout(PIPE_GRACE, &mut pipes).await;
    }
    status
}

/// Starts the hook in a process group of its own, its pipes open.
fn spawn(path: &Path, cwd: &Path, env: &[(&str, String)]) -> std::io::Result<Child> {
    let mut cmd = Command::new(path);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if cwd.is_dir() {
        cmd.current_dir(cwd);
    }
    cmd.spawn()
}

fn ended(status: std::process::ExitStatus) -> End {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => End::Exited(code),
        (None, Some(sig)) => End::Signaled(sig),
        (None, None) => End::Exited(-1),
    }
}

/// Kills the hook's process group when dropped armed (its task aborted).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0.is_some() {
            kill_group(self.0);
        }
    }
}

/// Kills every process of the hook's group (what it started too).
fn kill_group(group: Option<u32>) {
    let Some(pid) = group.and_then(|g| rustix::process::Pid::from_raw(g as i32)) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        tracing::warn!(group = pid.as_raw_nonzero().get(), error = %e, "cannot kill a hook's process group");
    }
}

/// Reads `from` to its end, keeping the first `cap` bytes in `into`.
async fn keep(from: Option<impl AsyncRead + Unpin>, cap: usize, into: &mut Vec<u8>) {
    let Some(mut from) = from else {
        return;
    };
    let mut chunk = [0u8; 4096];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = cap.saturating_sub(into.len());
                into.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backgrounded_child_does_not_turn_an_exit_into_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("on-commit");
        let pid = dir.path().join("pid");
        let script = format!(
            "#!/bin/sh\necho done\nsleep 30 &\necho $! > {}\nexit 0\n",
            pid.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let timeout = Duration::from_secs(10);
        let ran = run(&path, dir.path(), b"{}", &[], timeout, 1024).await;
        assert_eq!(ran.end, End::Exited(0));
        assert_eq!(ran.stdout, b"done\n");
        assert!(ran.duration < Duration::from_secs(5), "{:?}", ran.duration);
        // The background sleep outlives the hook; end it here.
        let pid: i32 = std::fs::read_to_string(&pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}
