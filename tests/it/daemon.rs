//! The daemon process: one per tree, stale sockets, autostart.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ttm_tests::{
    CTL_TIMEOUT, Daemon, accepts, clean_command, run, signal, ttmctl_bin, ttmd_bin, wait_until,
};

#[test]
fn a_second_daemon_on_the_same_tree_refuses_and_names_the_first() {
    let d = Daemon::start_new();
    let other_socket = d.tmp().join("other.sock");
    let mut cmd = clean_command(ttmd_bin());
    cmd.arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&other_socket);
    let out = run(cmd, None, Duration::from_secs(10));
    assert_ne!(out.code(), 0, "a second ttmd started on the same tree");
    out.stderr_has(&[d.socket.to_str().unwrap()]);
    assert!(!accepts(&other_socket));
    // The first one is unharmed.
    d.create("still here");

    // Same socket, same tree: refused too, and the socket is not taken over.
    let out = run(d.ttmd_command(), None, Duration::from_secs(10));
    assert_ne!(out.code(), 0);
    assert!(accepts(&d.socket));
    d.create("still here too");
}

#[test]
fn a_stale_socket_of_a_killed_daemon_is_cleaned_up() {
    let mut d = Daemon::start_new();
    let id = d.create("before the crash");
    d.kill9();
    assert!(d.socket.exists(), "kill -9 cannot remove the socket");
    assert!(!accepts(&d.socket));
    assert_eq!(d.ctl(&["state"]).code(), 7, "a dead daemon is unreachable");
    d.start();
    assert_eq!(d.ctl(&["active"]).ok(), id);
    d.stop();
}

#[test]
fn sigterm_exits_0_and_removes_the_socket() {
    let mut d = Daemon::start_new();
    d.create("x");
    d.stop(); // asserts exit 0 and no socket
    let out = d.ctl(&["list"]);
    out.expect_code(7).stderr_has(&[d.socket.to_str().unwrap()]);
}

/// Kills the autostarted daemon on drop, whatever the test did.
struct Reaper {
    lock: PathBuf,
    socket: PathBuf,
}

impl Reaper {
    fn pid(&self) -> Option<u32> {
        fs::read_to_string(&self.lock)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "TERM");
            // Not our child: its exit shows as the socket disappearing.
            if !wait_until(Duration::from_secs(10), || !self.socket.exists()) {
                signal(pid, "KILL");
            }
        }
    }
}

fn autostart_ctl(root: &Path, socket: &Path, args: &[&str]) -> ttm_tests::Out {
    let mut cmd = clean_command(ttmctl_bin());
    cmd.args(args)
        .env("TETRA_DIR", root)
        .env("TTM_SOCKET", socket)
        .env("TTMD_BIN", ttmd_bin());
    run(cmd, None, CTL_TIMEOUT)
}

#[test]
fn autostart_starts_exactly_one_daemon_and_reuses_it() {
    let tmp = tempfile::Builder::new().prefix("ttm-").tempdir().unwrap();
    let root = tmp.path().join("tree");
    let socket = tmp.path().join("s.sock");
    let reaper = Reaper {
        lock: root.join("run/ttmd.lock"),
        socket: socket.clone(),
    };

    let id = autostart_ctl(&root, &socket, &["create", "x"]).ok();
    assert!(root.join("ttm/txns").join(&id).join("state.json").is_file());
    assert!(accepts(&socket), "the autostarted daemon is not listening");
    let pid = reaper.pid().expect("lock file names the daemon's pid");
    assert!(signal(pid, "0"), "the lock file's pid {pid} is not alive");

    // The second call reuses it.
    assert_eq!(autostart_ctl(&root, &socket, &["active"]).ok(), id);
    autostart_ctl(&root, &socket, &["transition", "SELECT"]).ok();
    assert_eq!(reaper.pid(), Some(pid), "a second daemon was started");
    assert!(signal(pid, "0"));

    // It stops cleanly on SIGTERM.
    assert!(signal(pid, "TERM"));
    assert!(
        wait_until(Duration::from_secs(10), || !socket.exists()),
        "the autostarted daemon did not remove its socket on SIGTERM"
    );
    drop(reaper);
}

#[test]
fn no_autostart_means_unreachable() {
    let d = Daemon::stopped();
    let out = d.ctl(&["list"]);
    out.expect_code(7).stderr_has(&["TTM_NO_AUTOSTART"]);
    assert!(!d.socket.exists());
    assert!(!d.root.join("run/ttmd.lock").exists());
}
