//! Uploads (AddContext) that do not finish store nothing and leave nothing:
//! grpcio clients cancelling mid-stream, a ttmctl killed mid-upload, and a
//! client that half-closes without `AddContextEnd` (what grpc-js's cancel
//! looks like: END_STREAM before RST_STREAM). The grpcio cases run
//! `tests/py/grpcio_cases.py` with the CI venv's Python (`Need`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ttm_tests::{Daemon, STALL, event_types, read_events, run_watched, tree_activity};

/// Files the daemon keeps in ctx/ while an upload is under way or staged.
fn partial_files(ctx: &Path) -> Vec<String> {
    std::fs::read_dir(ctx)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ttmd-"))
        .collect()
}

/// The ctx/ names that are stored evidence (000/010 come with creation).
fn evidence_files(ctx: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ctx)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.starts_with("000_") && !n.starts_with("010_"))
        .collect();
    names.sort();
    names
}

/// `tests/py/grpcio_cases.py SOCKET ttm args…`.
fn grpcio(python: &Path, daemon: &Daemon, args: &[&str]) -> ttm_tests::Out {
    let mut cmd = ttm_tests::clean_command(python);
    cmd.arg(ttm_tests::repo_root().join("tests/py/grpcio_cases.py"))
        .arg(&daemon.socket)
        .arg("ttm")
        .args(args)
        .env("TETRA_DIR", &daemon.root)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_watched(cmd, None, STALL, || tree_activity(&daemon.root))
}

/// Nothing half-uploaded is left, nothing was logged as stored.
fn assert_nothing_stored(daemon: &Daemon, id: &str, ctx: &Path) {
    // The partial file goes as the request ends, not at the next start.
    let gone = ttm_tests::wait_until(STALL, || partial_files(ctx).is_empty());
    assert!(gone, "left behind in ctx/: {:?}", partial_files(ctx));
    assert_eq!(evidence_files(ctx), Vec::<String>::new(), "stored evidence");
    let types = event_types(&read_events(&daemon.txn_dir("ttm", id)));
    assert!(
        !types.iter().any(|t| t == "evidence_added"),
        "logged as stored: {types:?}"
    );
    let listed = daemon.ctl(&["ctx", "list", "-t", id]).ok();
    assert_eq!(listed.lines().count(), 2, "ctx list:\n{listed}");
}

#[test]
fn grpcio_cancels_mid_upload_leave_no_partial_files_and_store_nothing() {
    let Some(python) = crate::languages::python() else {
        return;
    };
    let daemon = Daemon::start_new();
    let id = daemon.create("cancels");
    let ctx: PathBuf = daemon.txn_dir("ttm", &id).join("ctx");
    let ctx_arg = ctx.to_str().unwrap();
    let out = grpcio(&python, &daemon, &["cancel", &id, ctx_arg, "10"]);
    let stdout = out.ok();
    assert_eq!(
        stdout.lines().count(),
        10,
        "not every cancel ran:\n{stdout}"
    );
    assert_nothing_stored(&daemon, &id, &ctx);
    // The transaction still takes evidence normally.
    daemon
        .ctl_stdin(&["ctx", "add", "-", "after", "-t", &id], b"whole\n")
        .ok();
    assert_eq!(evidence_files(&ctx), vec!["100_after".to_owned()]);
}

#[test]
fn an_upload_that_ends_without_its_end_marker_stores_nothing() {
    let Some(python) = crate::languages::python() else {
        return;
    };
    let daemon = Daemon::start_new();
    let id = daemon.create("half close");
    let ctx = daemon.txn_dir("ttm", &id).join("ctx");
    let stdout = grpcio(&python, &daemon, &["half-close", &id]).ok();
    assert!(
        stdout.starts_with("INVALID_ARGUMENT") && stdout.contains("AddContextEnd"),
        "want a clear refusal naming AddContextEnd, got:\n{stdout}"
    );
    assert!(stdout.contains("nothing was stored"), "{stdout}");
    assert_nothing_stored(&daemon, &id, &ctx);
}

#[test]
fn a_ttmctl_killed_mid_upload_leaves_nothing() {
    let daemon = Daemon::start_new();
    let id = daemon.create("killed upload");
    let ctx = daemon.txn_dir("ttm", &id).join("ctx");
    let mut child = daemon
        .ctl_command(&["ctx", "add", "-", "big", "-t", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Some bytes, then the input stays open: the upload is under way.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&vec![b'x'; 512 * 1024]).unwrap();
    let under_way = ttm_tests::wait_until(STALL, || !partial_files(&ctx).is_empty());
    assert!(under_way, "the daemon never held the partial upload");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_nothing_stored(&daemon, &id, &ctx);
}

#[test]
fn ttmctl_uploads_end_with_the_marker_and_are_stored_whole() {
    let daemon = Daemon::start_new();
    let id = daemon.create("whole upload");
    let data = vec![b'y'; 300 * 1024 + 7];
    daemon
        .ctl_stdin(&["ctx", "add", "-", "whole", "-t", &id], &data)
        .ok();
    let ctx = daemon.txn_dir("ttm", &id).join("ctx");
    assert_eq!(std::fs::read(ctx.join("100_whole")).unwrap(), data);
    // An empty input is a whole (empty) file too.
    daemon
        .ctl_stdin(&["ctx", "add", "-", "empty", "-t", &id], b"")
        .ok();
    assert_eq!(std::fs::read(ctx.join("110_empty")).unwrap(), b"");
}
