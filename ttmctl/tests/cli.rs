//! The ttmctl binary's behaviour that needs no daemon: help, usage errors,
//! exit codes when ttmd is absent, client-side refusals, autostart failures.
//! (End-to-end tests against a real ttmd live in the workspace's tests/.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

/// ttmctl with an environment that cannot reach a real daemon by accident.
fn ttmctl(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ttmctl"));
    cmd.args(args)
        .env("TETRA_DIR", dir.join("tetra"))
        .env("TTM_SOCKET", dir.join("nowhere/ttmd.sock"))
        .env("TTM_NO_AUTOSTART", "1")
        .env_remove("TTM_MODULE")
        .env_remove("TTMD_BIN")
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("ttmctl runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn help_exits_0_and_documents_exit_codes() {
    let dir = TempDir::new().unwrap();
    let (code, stdout, _) = run(&mut ttmctl(dir.path(), &["--help"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("Exit codes:"), "{stdout}");
    assert!(stdout.contains("compare-and-set"), "{stdout}");
    assert!(stdout.contains("status --follow"), "{stdout}");
}

#[test]
fn version_is_printed_without_a_daemon() {
    let dir = TempDir::new().unwrap();
    for args in [&["version"][..], &["--version"]] {
        let (code, stdout, _) = run(&mut ttmctl(dir.path(), args));
        assert_eq!(code, 0);
        assert!(
            stdout.starts_with(&format!("ttmctl {}", env!("CARGO_PKG_VERSION"))),
            "{stdout}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new().unwrap();
    for args in [
        &["frobnicate"][..],
        &["transition"],
        &["events", "--from", "x"],
    ] {
        let (code, _, stderr) = run(&mut ttmctl(dir.path(), args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
}

#[test]
fn no_daemon_and_no_autostart_exits_7_naming_the_socket() {
    let dir = TempDir::new().unwrap();
    let socket = dir.path().join("missing/ttmd.sock");
    let socket = socket.to_str().unwrap();
    let (code, stdout, stderr) = run(&mut ttmctl(dir.path(), &["state", "--socket", socket]));
    assert_eq!(code, 7, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("ttmctl: "), "{stderr}");
    assert!(stderr.contains(socket), "{stderr}");
    assert!(stderr.contains("TTM_NO_AUTOSTART"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn ctx_add_of_a_directory_exits_2_with_an_archive_hint() {
    let dir = TempDir::new().unwrap();
    let evidence = dir.path().join("build");
    std::fs::create_dir(&evidence).unwrap();
    let (code, _, stderr) = run(&mut ttmctl(
        dir.path(),
        &["ctx", "add", evidence.to_str().unwrap(), "the build"],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert!(stderr.contains("tar czf build.tar.gz"), "{stderr}");
}

#[test]
fn ctx_add_of_a_missing_file_exits_2_with_the_os_error() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.txt");
    let (code, _, stderr) = run(&mut ttmctl(
        dir.path(),
        &["ctx", "add", missing.to_str().unwrap()],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope.txt"), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

/// A stand-in daemon: records its arguments, complains, exits 1.
fn fake_daemon(dir: &Path, stderr_text: &str) -> std::path::PathBuf {
    let script = dir.join("fake-ttmd");
    let args_file = dir.join("args");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\necho '{stderr_text}' >&2\nexit 1\n",
            args_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn autostart_passes_root_socket_and_log_and_reports_a_failed_start() {
    // The stand-in daemon is a /bin/sh script: a machine without /bin/sh
    // fails here rather than skipping.
    assert!(Path::new("/bin/sh").exists(), "this test needs /bin/sh");
    let dir = TempDir::new().unwrap();
    let daemon = fake_daemon(dir.path(), "cannot open the tree: boom");
    let socket = dir.path().join("run/ttmd.sock");
    let (code, _, stderr) = run(ttmctl(dir.path(), &["state"])
        .env_remove("TTM_NO_AUTOSTART")
        .env("TTMD_BIN", &daemon)
        .env("TTM_SOCKET", &socket));
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("boom"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let root = dir.path().join("tetra");
    let log = dir.path().join("run/ttmd.log");
    assert_eq!(
        args,
        [
            "--root",
            root.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ]
    );
}

#[test]
fn autostart_without_a_daemon_binary_exits_7() {
    let dir = TempDir::new().unwrap();
    let (code, _, stderr) = run(ttmctl(dir.path(), &["active"])
        .env_remove("TTM_NO_AUTOSTART")
        .env("TTMD_BIN", dir.path().join("no-such-ttmd")));
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("cannot start ttmd"), "{stderr}");
    assert!(stderr.contains("TTMD_BIN"), "{stderr}");
}
