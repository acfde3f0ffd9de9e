//! Harness of the end-to-end tests: the real `ttmd` and `ttmctl` binaries on
//! temporary trees.
//!
//! - [`ttmd_bin`] / [`ttmctl_bin`] find the built binaries (`$TTMD_BIN`,
//!   `$TTMCTL_BIN`, else `target/<profile>/` beside the test executable).
//! - [`Daemon`] owns a temporary directory with a tree (`tmp/tree`) and a
//!   socket (`tmp/s.sock`), runs `ttmd` on them and `ttmctl` against it.
//! - [`check_log`], [`snapshot`] and friends assert the on-disk contracts.
//!
//! # Skip policy: a test never skips silently
//!
//! A test that needs something from the machine (a tool such as tmux,
//! `script`, shellcheck or `systemd-analyze`; root; a tmpfs mount; a Python
//! with grpcio) asks for it with [`Need`]:
//!
//! ```no_run
//! use ttm_tests::Need;
//!
//! if !Need::tool("tmux", "tmux").met() {
//!     return;
//! }
//! ```
//!
//! - Outside CI, an unmet need prints `skipped: <test>: <what is missing>`
//!   to stderr and the test returns early (it passes).
//! - Under CI (`$CI` set and non-empty) an unmet need **fails** the test,
//!   naming what is missing and how `.ci/run` provides it — unless the need
//!   is on [`ALLOWED_UNDER_CI`], the short, reasoned list of needs CI is
//!   known not to meet (empty today: CI runs as root with apt-get, so it
//!   meets them all). `.ci/run` installs everything the tests ask for.
//!
//! # Hang guards measure progress, not total time
//!
//! A guard fails a test only when its work has *stopped moving* for
//! [`STALL`], never because the work as a whole took long (a busy 2-core CI
//! machine makes everything slow, not stuck):
//!
//! - Many steps (workers, racers, scripts): the workers share a
//!   [`Progress`] counter and bump it on every acknowledged step; the test
//!   waits with [`Progress::guard`] (async) or [`Progress::wait`] (sync),
//!   which panic only when the counter stood still for [`STALL`].
//! - Processes: [`run`] and [`run_watched`] count the output a command
//!   prints, and [`run_watched`] also a sample of what the command changes
//!   (e.g. [`tree_activity`] of the daemon's tree); the command is killed
//!   only after that long without any of it.
//! - One step (one RPC, one `ttmctl` call, one line from a follower, one
//!   message on a stream) has a per-step bound ([`HANG`], [`CTL_TIMEOUT`]):
//!   silence of a single step is the same thing as no progress.
//! - Waiting for a daemon to listen, a file to appear or a condition to
//!   hold is not progress of work; those use a generous fixed bound
//!   ([`START_TIMEOUT`], [`wait_until`]) and say so where they are used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Streaming;
use tonic::transport::Channel;
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::{Event, EventsRequest, EventsResponse, TxnRef};

pub mod etcd;

/// How long a daemon may take to listen (waiting for readiness, not a
/// guard on work).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `ttmctl` call (one step) may stay silent before the test
/// gives up on it.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Hang guard of a stream or follower waiting for its next item: far
/// beyond any expected delay, so hitting it means "stuck".
pub const HANG: Duration = Duration::from_secs(60);
/// How long work of many steps may make no progress at all before a
/// progress guard ([`Progress`], [`run_watched`]) calls it hung.
pub const STALL: Duration = Duration::from_secs(60);

/// Environment variables of the user's shell that would point the binaries
/// elsewhere than the test's own tree.
const SCRUBBED_ENV: &[&str] = &[
    "TETRA_DIR",
    "TTM_SOCKET",
    "TTM_MODULE",
    "TTM_DIR",
    "TTM_TXNS_DIR",
    "TTM_NO_AUTOSTART",
    "TTMD_BIN",
    "XDG_RUNTIME_DIR",
    "TTM_LOG",
    "RUST_LOG",
    "LISTEN_FDS",
    "LISTEN_PID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
];

// ---------------------------------------------------------- skip policy --

/// Needs that CI is known not to meet, with the reason: an unmet need on
/// this list skips (with its reason printed) even under CI. Keyed by
/// [`Need`]'s `what`. Keep it empty unless a test truly cannot run on the
/// CI machine; every entry is a test CI does not run.
pub const ALLOWED_UNDER_CI: &[(&str, &str)] = &[];

/// True when running under CI (`$CI` set and non-empty): unmet needs fail.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Something a test needs from the machine; see the crate's skip policy.
/// Build one with [`Need::tool`], [`Need::root`] or [`Need::check`], then
/// ask [`Need::met`].
#[derive(Debug, Clone)]
#[must_use = "ask .met() and return early when it is false"]
pub struct Need {
    /// What is needed, e.g. "tmux" or "root".
    what: String,
    /// How `.ci/run` provides it.
    how: String,
    /// Why it is not met here; `None` when it is.
    missing: Option<String>,
}

impl Need {
    /// `program` on `$PATH` (as `command -v` finds it), which `.ci/run`
    /// installs with `apt-get install <package>`.
    pub fn tool(program: &str, package: &str) -> Need {
        Need::check(
            program,
            format!("`.ci/run` installs it with `apt-get install {package}`"),
            if on_path(program) {
                Ok(())
            } else {
                Err(format!("`{program}` is not on $PATH"))
            },
        )
    }

    /// Running as root (uid 0), for `why`. CI runs as root.
    pub fn root(why: &str) -> Need {
        let uid = euid();
        Need::check(
            "root",
            "CI runs the tests as root",
            if uid == Some(0) {
                Ok(())
            } else {
                Err(format!(
                    "{why} needs root; running as uid {}",
                    uid.map_or_else(|| "?".to_owned(), |u| u.to_string())
                ))
            },
        )
    }

    /// Any other need: `what` is met when `result` is `Ok`; `how` says how
    /// `.ci/run` (or the CI machine) provides it.
    pub fn check(
        what: impl Into<String>,
        how: impl Into<String>,
        result: Result<(), String>,
    ) -> Need {
        Need {
            what: what.into(),
            how: how.into(),
            missing: result.err(),
        }
    }

    /// True when the need is met. Otherwise: under CI, panics naming what
    /// is missing and how `.ci/run` provides it (unless it is on
    /// [`ALLOWED_UNDER_CI`]); outside CI, prints `skipped: <test>: <why>`
    /// to stderr and returns false, and the test returns early.
    #[track_caller]
    pub fn met(self) -> bool {
        self.met_under(under_ci())
    }

    /// [`Need::met`] with CI given (`ci`), not read from the environment.
    #[track_caller]
    fn met_under(self, ci: bool) -> bool {
        let Some(missing) = self.missing else {
            return true;
        };
        let test = test_name();
        if ci {
            if let Some((_, reason)) = ALLOWED_UNDER_CI.iter().find(|(w, _)| *w == self.what) {
                eprintln!("skipped: {test}: {missing} (allowed under CI: {reason})");
                return false;
            }
            panic!(
                "{test} needs {}: {missing}; under CI a test may not skip ({}). \
                 Run `bash .ci/run`, or install it by hand.",
                self.what, self.how
            );
        }
        eprintln!(
            "skipped: {test}: {missing} ({}; CI fails instead of skipping)",
            self.how
        );
        false
    }
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    thread::current().name().unwrap_or("a test").to_owned()
}

/// Whether `program` is an executable file in a directory of `$PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The effective uid of this process, from `/proc/self/status`.
pub fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

// -------------------------------------------------------- progress guards --

/// Work done so far by the workers of one test: each bumps it on every
/// acknowledged step; guards fail only when it stops moving for [`STALL`].
/// Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    count: Arc<AtomicU64>,
}

impl Progress {
    /// A counter at zero.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// One more step done.
    pub fn bump(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Steps done so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Awaits `work`; panics naming `what` if the counter did not move for
    /// [`STALL`] while it ran. However long `work` takes in total, it is
    /// not a hang while the counter moves.
    #[track_caller]
    pub fn guard<F: std::future::Future>(
        &self,
        what: &str,
        work: F,
    ) -> impl std::future::Future<Output = F::Output> {
        self.guard_stall(STALL, what, work)
    }

    /// [`Progress::guard`] allowing `stall` without progress.
    #[track_caller]
    pub fn guard_stall<F: std::future::Future>(
        &self,
        stall: Duration,
        what: &str,
        work: F,
    ) -> impl std::future::Future<Output = F::Output> {
        let caller = std::panic::Location::caller();
        let what = what.to_owned();
        let progress = self.clone();
        async move {
            let mut work = std::pin::pin!(work);
            let mut watchdog = Watchdog::new(stall, progress.get());
            let period = (stall / 4).min(Duration::from_millis(250));
            loop {
                let tick = tokio::time::sleep(period);
                tokio::select! {
                    out = &mut work => return out,
                    () = tick => {
                        if let Err(stalled) = watchdog.check(progress.get()) {
                            panic!("{what} hung at {caller}: {stalled}");
                        }
                    }
                }
            }
        }
    }

    /// Polls `done` until it returns `Some`; panics naming `what` if the
    /// counter did not move for [`STALL`] meanwhile.
    #[track_caller]
    pub fn wait<T>(&self, what: &str, done: impl FnMut() -> Option<T>) -> T {
        wait_progressing(what, STALL, || self.get(), done)
    }
}

/// Notices when a sampled measure of work stops changing.
#[derive(Debug)]
pub struct Watchdog {
    stall: Duration,
    last: u64,
    since: Instant,
    started: Instant,
}

impl Watchdog {
    /// A watchdog allowing `stall` without change, starting at `sample`.
    pub fn new(stall: Duration, sample: u64) -> Watchdog {
        let now = Instant::now();
        Watchdog {
            stall,
            last: sample,
            since: now,
            started: now,
        }
    }

    /// `Err(description)` when `sample` has not changed for the allowed
    /// stall; a change restarts the clock.
    pub fn check(&mut self, sample: u64) -> Result<(), String> {
        if sample != self.last {
            self.last = sample;
            self.since = Instant::now();
            return Ok(());
        }
        let idle = self.since.elapsed();
        if idle >= self.stall {
            return Err(format!(
                "no progress for {idle:?} (progress measure {sample}, {:?} in all)",
                self.started.elapsed()
            ));
        }
        Ok(())
    }
}

/// Polls `done` every 5 ms until it returns `Some`, sampling `progress`;
/// panics naming `what` once `progress` stood still for `stall`.
#[track_caller]
pub fn wait_progressing<T>(
    what: &str,
    stall: Duration,
    mut progress: impl FnMut() -> u64,
    mut done: impl FnMut() -> Option<T>,
) -> T {
    let mut watchdog = Watchdog::new(stall, progress());
    loop {
        if let Some(out) = done() {
            return out;
        }
        if let Err(stalled) = watchdog.check(progress()) {
            panic!("{what} hung: {stalled}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A measure of what has been written under `root` (a daemon's tree): the
/// sizes of all files plus the number of entries. Changes whenever an
/// event is logged, a transaction created or a ctx file stored; for
/// [`run_watched`] on scripts that drive a daemon.
pub fn tree_activity(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(list) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            total += 1;
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

// ------------------------------------------------------------- binaries --

/// `$<env>` if set, else `<name>` in the target directory of this test
/// executable (`target/debug/deps/it-<hash>` → `target/debug/<name>`).
fn binary(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "${env} = {} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable has no grandparent directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (or set ${env})",
        path.display()
    );
    path
}

/// The `ttmd` binary under test.
pub fn ttmd_bin() -> PathBuf {
    binary("ttmd", "TTMD_BIN")
}

/// The `ttmctl` binary under test.
pub fn ttmctl_bin() -> PathBuf {
    binary("ttmctl", "TTMCTL_BIN")
}

/// A `Command` with the TTM environment variables removed.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

// --------------------------------------------------------------- output --

/// What a finished process left: exit status, stdout and stderr.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Asserts exit 0; returns stdout trimmed.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(
            self.code(),
            0,
            "`{}` failed\nstdout: {}\nstderr: {}",
            self.what,
            self.stdout,
            self.stderr
        );
        self.stdout.trim().to_owned()
    }

    /// Asserts the exit code; returns self for further checks.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "`{}`: wrong exit code\nstdout: {}\nstderr: {}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that stderr contains each of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "`{}`: stderr does not mention {needle:?}\nstderr: {}",
                self.what,
                self.stderr
            );
        }
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.ok()).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not JSON ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }
}

/// Runs `cmd` to completion with `stdin` as its input, killing it after
/// `timeout` without output (for one `ttmctl` call, which prints at its
/// end: a bound on that one step).
pub fn run(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    run_watched(cmd, stdin, timeout, || 0)
}

/// Runs `cmd` to completion with `stdin` as its input; kills it (and
/// panics) only once it made no progress for `stall`: neither printed
/// anything nor changed `progress` (a sample of its effects, e.g.
/// [`tree_activity`] of the tree it drives). A long script that keeps
/// working is never cut off.
pub fn run_watched(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    stall: Duration,
    mut progress: impl FnMut() -> u64,
) -> Out {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let writer = stdin.map(|bytes| {
        let bytes = bytes.to_vec();
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // A command that stops reading early closes the pipe; not our error.
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let printed = Arc::new(AtomicU64::new(0));
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let printed = printed.clone();
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    text.extend_from_slice(&buf[..n]);
                    printed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut sample = || printed.load(Ordering::Relaxed).wrapping_add(progress());
    let mut watchdog = Watchdog::new(stall, sample());
    let mut sampled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        // `progress` may walk a tree: sample it a few times a second.
        if sampled.elapsed() >= Duration::from_millis(200) {
            sampled = Instant::now();
            if let Err(stalled) = watchdog.check(sample()) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} hung: {stalled}");
            }
        }
        thread::sleep(Duration::from_millis(2));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Out {
        what,
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Waits for `child` up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `signal` (`TERM`, `KILL`, `0`) to `pid` with kill(1); true if it
/// was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True once something accepts connections on `socket`.
pub fn accepts(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes. For waiting
/// on a state (a daemon ready, a file there, a change noticed), not as a
/// guard on work: give it a generous `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ followers --

/// A long-running process (`events --follow`, `status --follow`, `watch`)
/// whose stdout is read line by line while it runs. Killed when dropped.
#[derive(Debug)]
pub struct Spawned {
    /// The command line, for messages.
    pub what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<()>>,
    /// What it wrote to stderr so far.
    errors: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Spawned {
    /// Starts `cmd` with stdin closed and stdout and stderr piped.
    pub fn spawn(mut cmd: Command) -> Spawned {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let out = child.stdout.take().expect("stdout pipe");
        let mut err = child.stderr.take().expect("stderr pipe");
        let (tx, lines) = mpsc::channel();
        let stdout = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = errors.clone();
        let stderr = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Spawned {
            what,
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
            errors,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of stdout; `None` when stdout ended (the process
    /// closed it or exited). Panics after `timeout` without one.
    #[track_caller]
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{} printed no line for {timeout:?}; stderr: {}",
                self.what,
                self.stderr_so_far()
            ),
        }
    }

    /// The next line of stdout; panics if stdout ended or after `timeout`.
    #[track_caller]
    pub fn line(&self, timeout: Duration) -> String {
        self.next_line(timeout).unwrap_or_else(|| {
            thread::sleep(Duration::from_millis(50));
            panic!(
                "{} closed its stdout (it exited); stderr: {}",
                self.what,
                self.stderr_so_far()
            )
        })
    }

    /// The next line of stdout parsed as JSON.
    #[track_caller]
    pub fn json_line(&self, timeout: Duration) -> Value {
        let line = self.line(timeout);
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: a line is not JSON ({e}): {line}", self.what))
    }

    /// A line if one arrives within `wait`, else `None`: for "nothing more
    /// comes". Panics if stdout ended (the process exited): a follower is
    /// expected to keep running.
    #[track_caller]
    pub fn try_line(&self, wait: Duration) -> Option<String> {
        match self.lines.recv_timeout(wait) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Let the stderr reader catch up with the exit.
                thread::sleep(Duration::from_millis(50));
                panic!(
                    "{} ended unexpectedly; stderr: {}",
                    self.what,
                    self.stderr_so_far()
                )
            }
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.errors.lock().unwrap()).into_owned()
    }

    /// Waits for the process to exit (panics after `timeout`, killing it);
    /// returns its status, the stdout lines not read yet and its stderr.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Out {
        let status = wait_timeout(&mut self.child, timeout).unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let stderr = self.join_stderr();
            panic!(
                "{} did not exit within {timeout:?}; stderr: {stderr}",
                self.what
            );
        });
        if let Some(stdout) = self.stdout.take() {
            let _ = stdout.join();
        }
        let rest: Vec<String> = self.lines.try_iter().collect();
        Out {
            what: self.what.clone(),
            status,
            stdout: rest.join("\n"),
            stderr: self.join_stderr(),
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn join_stderr(&mut self) -> String {
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
        self.stderr_so_far()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --------------------------------------------------------------- daemon --

/// A temporary tree served by a real `ttmd`.
#[derive(Debug)]
pub struct Daemon {
    tmp: tempfile::TempDir,
    /// `tmp/tree`: the daemon's `--root` (`TETRA_DIR`).
    pub root: PathBuf,
    /// `tmp/s.sock`.
    pub socket: PathBuf,
    /// Where the daemon's stderr goes (appended to across restarts).
    pub log: PathBuf,
    /// Extra `ttmd` arguments (e.g. `--durability none`), kept across
    /// restarts.
    args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// A fresh tree and a daemon serving it.
    pub fn start_new() -> Daemon {
        Daemon::with_tree(|_| {})
    }

    /// A fresh tree and a daemon run with the extra arguments `args`
    /// (also on every restart).
    pub fn start_with_args(args: &[&str]) -> Daemon {
        let mut daemon = Daemon::stopped();
        daemon.args = args.iter().map(|a| (*a).to_owned()).collect();
        daemon.start();
        daemon
    }

    /// A fresh tree prepared by `setup(root)` before the daemon starts.
    pub fn with_tree(setup: impl FnOnce(&Path)) -> Daemon {
        let mut daemon = Daemon::stopped();
        setup(&daemon.root);
        daemon.start();
        daemon
    }

    /// A fresh (empty, existing) tree without a daemon yet.
    pub fn stopped() -> Daemon {
        let tmp = tempfile::Builder::new()
            .prefix("ttm-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().join("tree");
        fs::create_dir_all(&root).expect("create tree");
        let socket = tmp.path().join("s.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long for a Unix socket: {}",
            socket.display()
        );
        let log = tmp.path().join("ttmd.stderr");
        Daemon {
            root,
            socket,
            log,
            args: Vec::new(),
            child: None,
            tmp,
        }
    }

    /// The temporary directory holding tree, socket and logs.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// The running daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// A `ttmd` command for this tree and socket (not started).
    pub fn ttmd_command(&self) -> Command {
        let mut cmd = clean_command(ttmd_bin());
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.args);
        cmd
    }

    /// Starts the daemon and waits until its socket accepts.
    #[track_caller]
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log file");
        let mut child = self
            .ttmd_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ttmd");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if accepts(&self.socket) {
                break;
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "ttmd exited ({status}) before listening:\n{}",
                    self.daemon_stderr()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ttmd did not listen on {} within {START_TIMEOUT:?}:\n{}",
                    self.socket.display(),
                    self.daemon_stderr()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        // The socket accepts as soon as it is bound, before the tree is
        // recovered; one answered request means recovery is over.
        let out = self.ctl(&["list"]);
        assert_ne!(
            out.code(),
            7,
            "ttmd does not answer on {}: {}\n{}",
            self.socket.display(),
            out.stderr,
            self.daemon_stderr()
        );
    }

    /// SIGTERM, wait; asserts exit 0 and the socket removed.
    #[track_caller]
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("daemon not running");
        assert!(signal(child.id(), "TERM"), "cannot signal ttmd");
        let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ttmd did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                self.daemon_stderr()
            );
        });
        assert_eq!(
            status.code(),
            Some(0),
            "ttmd exited with {status} after SIGTERM:\n{}",
            self.daemon_stderr()
        );
        assert!(
            !self.socket.exists(),
            "ttmd left its socket {} behind",
            self.socket.display()
        );
    }

    /// SIGKILL, wait: a crash. The socket file stays behind.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `stop` then `start`.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn daemon_stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `ttmctl` command against this daemon (autostart off).
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(ttmctl_bin());
        cmd.args(args)
            .env("TETRA_DIR", &self.root)
            .env("TTM_SOCKET", &self.socket)
            .env("TTM_NO_AUTOSTART", "1");
        cmd
    }

    /// Runs `ttmctl args…`.
    pub fn ctl(&self, args: &[&str]) -> Out {
        run(self.ctl_command(args), None, CTL_TIMEOUT)
    }

    /// Starts `ttmctl args…` in the background (a follower, a watcher);
    /// its stdout is read line by line.
    pub fn spawn_ctl(&self, args: &[&str]) -> Spawned {
        Spawned::spawn(self.ctl_command(args))
    }

    /// Runs `ttmctl args…` with `input` on stdin.
    pub fn ctl_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        run(self.ctl_command(args), Some(input), CTL_TIMEOUT)
    }

    /// `ttmctl create DESCRIPTION`; returns the id.
    #[track_caller]
    pub fn create(&self, description: &str) -> String {
        self.ctl(&["create", description]).ok()
    }

    /// `<root>/<module>/txns/<id>`.
    pub fn txn_dir(&self, module: &str, id: &str) -> PathBuf {
        self.root.join(module).join("txns").join(id)
    }

    /// The `state.json` of `module/id`, parsed.
    pub fn state_json(&self, module: &str, id: &str) -> Value {
        read_json(&self.txn_dir(module, id).join("state.json"))
    }

    /// The tree's contents except `run/`.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.root)
    }

    /// Asserts that state.json of `module/id` is exactly the fold of its
    /// log: stops the daemon, deletes state.json, starts again (the daemon
    /// rebuilds it from the log) and compares.
    #[track_caller]
    pub fn assert_state_is_fold(&mut self, module: &str, id: &str) {
        let path = self.txn_dir(module, id).join("state.json");
        let before = read_json(&path);
        self.stop();
        fs::remove_file(&path).expect("remove state.json");
        self.start();
        assert!(path.exists(), "state.json not rebuilt at start-up");
        let after = read_json(&path);
        assert_eq!(
            before, after,
            "state.json differs from the fold of events.ndjson"
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ------------------------------------------------------------ in process --

/// `ttmd::run` in this process on a temporary tree, for settings the binary
/// has no flag for (the heartbeat period). Create it inside a Tokio runtime.
#[derive(Debug)]
pub struct InProcess {
    tmp: tempfile::TempDir,
    /// `tmp/tree`.
    pub root: PathBuf,
    /// `tmp/s.sock`.
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>>,
}

impl InProcess {
    /// Binds the socket and serves a fresh tree with the config that
    /// `configure` adjusts.
    pub fn start(configure: impl FnOnce(&mut ttmd::Config)) -> InProcess {
        let tmp = tempfile::Builder::new()
            .prefix("ttm-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().join("tree");
        let socket = tmp.path().join("s.sock");
        let listener = ttmd::bind(&root, &socket).expect("ttmd::bind");
        let mut config = ttmd::Config::new(root.clone(), socket.clone());
        configure(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ttmd::run(config, listener, async move {
            let _ = stopped.await;
        }));
        InProcess {
            tmp,
            root,
            socket,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The temporary directory holding tree and socket.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// Shuts the server down; asserts that `run` returned Ok within
    /// [`STOP_TIMEOUT`] and removed the socket. Returns the temporary
    /// directory, to inspect the tree after the stop.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = self.server.take().expect("server running");
        tokio::time::timeout(STOP_TIMEOUT, server)
            .await
            .unwrap_or_else(|_| panic!("ttmd::run did not return within {STOP_TIMEOUT:?}"))
            .expect("join ttmd::run")
            .expect("ttmd::run failed");
        assert!(!self.socket.exists(), "run left the socket behind");
        self.tmp
    }
}

// ------------------------------------------------------------ snapshots --

/// One entry of a tree, compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// Relative path → entry, for "nothing changed on disk".
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Everything under `root` (not following symlinks), except `run/`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    map
}

fn walk(root: &Path, dir: &Path, map: &mut Snapshot) {
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    for entry in list {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("under root").to_path_buf();
        if rel == Path::new("run") {
            continue;
        }
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            map.insert(rel, Entry::Symlink(fs::read_link(&path).expect("readlink")));
        } else if meta.is_dir() {
            map.insert(rel, Entry::Dir);
            walk(root, &path, map);
        } else {
            map.insert(rel, Entry::File(fs::read(&path).expect("read")));
        }
    }
}

/// Asserts two snapshots are equal, naming the first paths that differ.
#[track_caller]
pub fn assert_same_tree(before: &Snapshot, after: &Snapshot, what: &str) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    for (path, entry) in before {
        match after.get(path) {
            None => diffs.push(format!("removed {}", path.display())),
            Some(other) if other != entry => diffs.push(format!("changed {}", path.display())),
            Some(_) => {}
        }
    }
    for path in after.keys() {
        if !before.contains_key(path) {
            diffs.push(format!("added {}", path.display()));
        }
    }
    panic!("{what}: the tree changed: {}", diffs.join(", "));
}

// ----------------------------------------------------------------- files --

/// A file parsed as JSON.
#[track_caller]
pub fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The lines of `<dir>/events.ndjson`, parsed.
#[track_caller]
pub fn read_events(dir: &Path) -> Vec<Value> {
    let path = dir.join("events.ndjson");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", path.display()))
        })
        .collect()
}

/// The log contract of a transaction directory: every line of
/// events.ndjson is a JSON object ending in `\n` whose `seq` is its line
/// number, `ts` and `event` come first, and state.json's `seq` is the line
/// count. Returns the events.
#[track_caller]
pub fn check_log(dir: &Path) -> Vec<Value> {
    let path = dir.join("events.ndjson");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "{} does not end with a newline",
        path.display()
    );
    let text = String::from_utf8(bytes).expect("events.ndjson is UTF-8");
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {n} of {} is not JSON ({e}): {line}", path.display()));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("line {n} is not a JSON object: {line}"));
        assert_eq!(
            object.get("seq").and_then(Value::as_u64),
            Some(n),
            "line {n} has the wrong seq: {line}"
        );
        let keys: Vec<&str> = object.keys().take(3).map(String::as_str).collect();
        assert_eq!(keys, ["ts", "event", "seq"], "line {n}: first keys: {line}");
        events.push(value);
    }
    let state = read_json(&dir.join("state.json"));
    assert_eq!(
        state["seq"].as_u64(),
        Some(events.len() as u64),
        "state.json's seq is not the log's line count"
    );
    events
}

/// The `event` field of each event.
pub fn event_types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Copies a directory tree (files and subdirectories).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The directory of the checked-in golden files.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

// ------------------------------------------------------------------ gRPC --

/// A gRPC client on its own connection to the daemon at `socket`.
pub async fn grpc(socket: &Path) -> TtmClient<Channel> {
    TtmClient::new(channel(socket).await)
}

/// Every page of a brief `List` of module `ttm` at `page_size` (stage
/// filter `stage`, empty for all), followed to the end: the ids in order.
/// Fails if a page holds more than `page_size` rows.
pub async fn paged_ids(socket: &Path, stage: &str, page_size: u32) -> Vec<String> {
    let mut c = grpc(socket).await;
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let page = c
            .list(ttm_proto::v1::ListRequest {
                module: "ttm".into(),
                stage: stage.into(),
                brief: true,
                page_size,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.txns.len() <= page_size as usize, "page over its size");
        ids.extend(page.txns.into_iter().map(|t| t.txn_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

/// A runtime of two workers for tests that drive many gRPC clients at once.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A gRPC channel to ttmd at `socket`, for any of its services.
pub async fn channel(socket: &Path) -> Channel {
    ttm_proto::channel::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to ttmd at {}: {e}", socket.display()))
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every path under `root` whose name starts with the daemon's temp prefix.
pub fn temp_leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(list) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            let path = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".ttmd-tmp-")
            {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// `module/id` as a request's `TxnRef`.
pub fn txn_ref(module: &str, id: &str) -> Option<TxnRef> {
    Some(TxnRef {
        module: module.to_owned(),
        txn_id: id.to_owned(),
    })
}

/// One message of an `Events` stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Event(Event),
    CaughtUp(u64),
    Heartbeat(u64),
}

impl Msg {
    /// The event's seq; panics on a marker.
    #[track_caller]
    pub fn seq(&self) -> u64 {
        match self {
            Msg::Event(e) => e.seq,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// An `Events` stream read one message at a time, each with a hang guard.
#[derive(Debug)]
pub struct Follow {
    stream: Streaming<EventsResponse>,
}

impl Follow {
    /// Opens `Events(request)` on `client`.
    pub async fn open(client: &mut TtmClient<Channel>, request: EventsRequest) -> Follow {
        let what = format!("{request:?}");
        let stream = client
            .events(request)
            .await
            .unwrap_or_else(|e| panic!("Events {what} refused: {e}"))
            .into_inner();
        Follow { stream }
    }

    /// Opens a followed stream of `module/id` from `from_seq` (all types).
    pub async fn from(client: &mut TtmClient<Channel>, id: &str, from_seq: u64) -> Follow {
        Follow::open(
            client,
            EventsRequest {
                txn: txn_ref("ttm", id),
                from_seq,
                event: String::new(),
                follow: true,
            },
        )
        .await
    }

    /// The next message; `None` when the daemon ended the stream cleanly.
    /// Panics on an error status or after `timeout` of silence.
    pub async fn next(&mut self, timeout: Duration) -> Option<Msg> {
        self.next_result(timeout)
            .await
            .unwrap_or_else(|e| panic!("the events stream failed: {e}"))
    }

    /// The next message, the stream's end (`Ok(None)`) or its error status.
    /// Panics after `timeout` of silence.
    pub async fn next_result(&mut self, timeout: Duration) -> Result<Option<Msg>, tonic::Status> {
        loop {
            let message = tokio::time::timeout(timeout, self.stream.message())
                .await
                .unwrap_or_else(|_| panic!("the events stream was silent for {timeout:?}"))?;
            let Some(message) = message else {
                return Ok(None);
            };
            match message.kind {
                Some(Kind::Event(e)) => return Ok(Some(Msg::Event(e))),
                Some(Kind::CaughtUp(c)) => return Ok(Some(Msg::CaughtUp(c.seq))),
                Some(Kind::Heartbeat(h)) => return Ok(Some(Msg::Heartbeat(h.seq))),
                None => {}
            }
        }
    }

    /// The next message that is not a heartbeat; panics if the stream ends
    /// or `timeout` passes (heartbeats do not extend it).
    pub async fn next_significant(&mut self, timeout: Duration) -> Msg {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "nothing but heartbeats within {timeout:?}");
            match self.next_result(left).await {
                Ok(Some(Msg::Heartbeat(_))) => {}
                Ok(Some(msg)) => return msg,
                Ok(None) => panic!("the events stream ended"),
                Err(e) => panic!("the events stream failed: {e}"),
            }
        }
    }

    /// Asserts that nothing but heartbeats arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.message()).await;
            match next {
                Err(_) => return,
                Ok(Ok(Some(EventsResponse {
                    kind: Some(Kind::Heartbeat(_)) | None,
                }))) => {}
                Ok(other) => panic!("expected nothing more on the stream, got {other:?}"),
            }
        }
    }
}

/// Creates throw-away transactions until `watch` (a `ttmctl watch --json`)
/// prints one, then one more marker and reads up to it: from then on the
/// watcher sees every change and has nothing pending.
pub fn sync_watch(d: &Daemon, watch: &Spawned) {
    let mut seen = false;
    for i in 0..50 {
        d.ctl(&["create", &format!("probe {i}"), "--no-activate"])
            .ok();
        if watch.try_line(Duration::from_millis(200)).is_some() {
            seen = true;
            break;
        }
    }
    assert!(seen, "{} printed nothing for 50 creations", watch.what);
    let marker = d.ctl(&["create", "marker", "--no-activate"]).ok();
    while watch.json_line(HANG)["txn_id"] != marker.as_str() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    // Long enough that a busy machine does not stall a step for it; the
    // work in each test runs for longer than this in all.
    const SHORT: Duration = Duration::from_secs(1);

    #[test]
    fn a_met_need_is_met_under_ci_and_outside() {
        assert!(Need::check("x", "y", Ok(())).met_under(true));
        assert!(Need::check("x", "y", Ok(())).met_under(false));
    }

    #[test]
    fn an_unmet_need_skips_outside_ci() {
        assert!(!Need::tool("no-such-tool-ttm", "none").met_under(false));
    }

    #[test]
    #[should_panic(expected = "under CI a test may not skip")]
    fn an_unmet_need_fails_under_ci() {
        let _ = Need::tool("no-such-tool-ttm", "none").met_under(true);
    }

    #[test]
    fn the_watchdog_fails_on_a_stall_not_on_a_long_run() {
        let mut dog = Watchdog::new(SHORT, 0);
        for sample in 1..=6 {
            thread::sleep(SHORT / 4);
            assert!(dog.check(sample).is_ok(), "moving work called stuck");
        }
        thread::sleep(SHORT);
        assert!(dog.check(6).is_err(), "a stall went unnoticed");
    }

    #[tokio::test]
    async fn a_guard_lets_slow_work_finish_while_it_progresses() {
        let progress = Progress::new();
        let worker = progress.clone();
        let work = async move {
            // Twice the allowed stall in all, progressing throughout.
            for _ in 0..8 {
                tokio::time::sleep(SHORT / 4).await;
                worker.bump();
            }
            7
        };
        assert_eq!(progress.guard_stall(SHORT, "slow work", work).await, 7);
    }

    #[tokio::test]
    #[should_panic(expected = "stuck work hung")]
    async fn a_guard_fails_work_that_stopped_progressing() {
        let progress = Progress::new();
        progress
            .guard_stall(SHORT, "stuck work", std::future::pending::<()>())
            .await;
    }

    #[test]
    fn run_watched_lets_a_printing_command_outlast_the_stall() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.2; done",
        ]);
        let out = run_watched(cmd, None, SHORT, || 0);
        assert_eq!(out.ok().lines().count(), 8);
    }

    #[test]
    #[should_panic(expected = "hung: no progress")]
    fn run_watched_kills_a_silent_command() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        run_watched(cmd, None, SHORT, || 0);
    }
}
