//! The `ttmd` binary's own surface: flags, and refusing a second daemon.
//! (The full end-to-end suite lives in the workspace's `tests/` crate; this
//! file also makes `cargo test` build the `ttmd` binary that suite runs.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ttmd");

#[test]
fn help_explains_durability_trade_off() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--durability") && text.contains("may lose"),
        "{text}"
    );
}

#[test]
fn bad_flag_value_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["--durability", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn second_daemon_on_a_tree_names_the_first_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    let sock = tmp.path().join("a.sock");
    let mut first = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .arg("--socket")
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "first ttmd never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .arg("--socket")
        .arg(tmp.path().join("b.sock"))
        .output()
        .unwrap();
    let _ = Command::new("kill").arg(first.id().to_string()).status();
    let status = first.wait().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains("a.sock"),
        "{err}"
    );
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert!(!sock.exists(), "the socket is removed at shutdown");
}
