//! SPEC §10: every refusal has its exit code, a message, and leaves the
//! tree exactly as it was.

use std::fs;
use std::os::unix::fs::symlink;

use ttm_tests::{Daemon, assert_same_tree, snapshot};

/// Runs `args` and asserts the exit code, that stderr mentions each of
/// `needles`, and that nothing in the tree changed.
#[track_caller]
fn check(d: &Daemon, args: &[&str], code: i32, needles: &[&str]) {
    let before = d.snapshot();
    let out = d.ctl(args);
    out.expect_code(code).stderr_has(needles);
    assert!(
        out.stderr.starts_with("ttmctl: ") && out.stderr.trim().len() > "ttmctl: ".len(),
        "{args:?}: no message: {:?}",
        out.stderr
    );
    assert_same_tree(&before, &d.snapshot(), &format!("{args:?}"));
}

/// A daemon with one transaction in SELECT that is *not* active, so the
/// module `ttm` exists but has no active transaction.
fn fixture() -> (Daemon, String) {
    let d = Daemon::start_new();
    let id = d.ctl(&["create", "target", "--no-activate"]).ok();
    d.ctl(&["transition", "SELECT", "-t", &id]).ok();
    (d, id)
}

#[test]
fn unknown_transaction_and_module_are_not_found() {
    let (d, id) = fixture();
    let missing = "nope-20250101T000000";
    check(&d, &["state", "-t", missing], 3, &[missing]);
    check(
        &d,
        &["transition", "ASSEMBLE", "-t", missing],
        3,
        &[missing],
    );
    check(&d, &["commit", "-t", missing], 3, &[missing]);
    check(&d, &["events", "-t", missing], 3, &[missing]);
    // A module nobody created a transaction in lists nothing (issue 16).
    assert_eq!(d.ctl(&["list", "-m", "nomod"]).ok(), "");
    check(&d, &["state", "-m", "nomod", "-t", &id], 3, &["nomod"]);
    check(
        &d,
        &["transition", "ASSEMBLE", "-m", "nomod", "-t", &id],
        3,
        &["nomod"],
    );
}

#[test]
fn malformed_ids_modules_and_stages_are_invalid() {
    let (d, id) = fixture();
    let long = "a".repeat(200);
    for bad in [
        "../x",
        "a/b",
        "UPPER",
        " ",
        ".",
        "..",
        "-x",
        "a b",
        long.as_str(),
    ] {
        check(
            &d,
            &["state", &format!("--txn={bad}")],
            2,
            &["invalid transaction id"],
        );
        check(
            &d,
            &["transition", "ASSEMBLE", &format!("--txn={bad}")],
            2,
            &["invalid transaction id"],
        );
        check(&d, &["activate", "--", bad], 2, &["invalid transaction id"]);
    }
    for bad in ["../x", "a/b", "UP", "_x", &"m".repeat(40)] {
        check(
            &d,
            &["list", &format!("--module={bad}")],
            2,
            &["invalid module"],
        );
        check(
            &d,
            &["create", "x", &format!("--module={bad}")],
            2,
            &["invalid module"],
        );
    }
    for bad in ["select", "../X", "A-B", "", &"S".repeat(40)] {
        check(&d, &["transition", bad, "-t", &id], 2, &["invalid stage"]);
    }
    check(
        &d,
        &["transition", "NOPE", "-t", &id],
        4,
        &["NOPE", "SELECT"],
    );
}

#[test]
fn bad_event_types_and_payloads_are_invalid() {
    let (d, id) = fixture();
    for bad in [
        "Bad-Type",
        "txn_commit",
        "txn_start",
        "stage_transition",
        "9x",
        "a b",
        "",
    ] {
        check(&d, &["event", bad, "{}", "-t", &id], 2, &["event type"]);
    }
    check(&d, &["event", "progress", "[1]", "-t", &id], 2, &["object"]);
    check(
        &d,
        &["event", "progress", "{not json", "-t", &id],
        2,
        &["JSON"],
    );
    for (patch, needle) in [
        (r#"{"stage":"DONE"}"#, "stage"),
        (r#"{"seq":1}"#, "seq"),
        (r#"{"txn_id":"other"}"#, "txn_id"),
        (r#"{"iteration":5}"#, "iteration"),
        (r#"{"ok":1,"last_error":"x"}"#, "last_error"),
        ("[1]", "object"),
        (r#""x""#, "object"),
        ("42", "object"),
        ("{broken", "JSON"),
    ] {
        check(&d, &["update", patch, "-t", &id], 2, &[needle]);
    }
}

#[test]
fn no_active_transaction_is_a_precondition() {
    let (d, _) = fixture();
    let message = "no active transaction in module ttm";
    check(&d, &["active"], 4, &[message]);
    check(&d, &["state"], 4, &[message]);
    check(&d, &["transition", "ASSEMBLE"], 4, &[message]);
    check(&d, &["commit"], 4, &[message]);
    check(&d, &["event", "progress", "{}"], 4, &[message]);
}

#[test]
fn compare_and_set_mismatch_is_aborted() {
    let (d, id) = fixture();
    check(
        &d,
        &["transition", "ASSEMBLE", "--expect-stage", "NEW", "-t", &id],
        5,
        &["NEW", "SELECT"],
    );
    // The log has 2 lines (txn_start, stage_transition).
    check(
        &d,
        &["transition", "ASSEMBLE", "--expect-seq", "1", "-t", &id],
        5,
        &["seq 1", "seq 2"],
    );
    check(
        &d,
        &["update", "{\"a\":1}", "--expect-seq", "9", "-t", &id],
        5,
        &["seq 9"],
    );
    // The matching guards let it through.
    d.ctl(&[
        "transition",
        "ASSEMBLE",
        "--expect-stage",
        "SELECT",
        "--expect-seq",
        "2",
        "-t",
        &id,
    ])
    .ok();
}

/// Bad input is INVALID_ARGUMENT whatever the guards say: a malformed
/// stage with a stale guard is not an ABORTED race. A bad guard in a ctx
/// add is refused too (before the file is taken).
#[test]
fn malformed_input_beats_a_failing_guard() {
    let (d, id) = fixture();
    check(
        &d,
        &["transition", "bad stage!", "--expect-seq", "9", "-t", &id],
        2,
        &["bad stage!"],
    );
    let long_id = "r".repeat(10_000);
    check(
        &d,
        &[
            "ctx",
            "add",
            "-",
            "log",
            "--request-id",
            &long_id,
            "-t",
            &id,
        ],
        2,
        &["request id"],
    );
}

#[test]
fn ctx_add_of_a_directory_is_refused_with_a_hint() {
    let (d, id) = fixture();
    let dir = d.tmp().join("build-out");
    fs::create_dir(&dir).unwrap();
    check(
        &d,
        &["ctx", "add", dir.to_str().unwrap(), "-t", &id],
        2,
        &["archive"],
    );
    let missing = d.tmp().join("missing.txt");
    check(
        &d,
        &["ctx", "add", missing.to_str().unwrap(), "-t", &id],
        2,
        &["missing.txt"],
    );
}

#[test]
fn oversized_description_is_refused() {
    let (d, _) = fixture();
    let huge = "a".repeat(64 * 1024 + 1);
    check(&d, &["create", &huge], 8, &["limit", "65536"]);
    // Exactly at the limit is fine.
    let id = d.create(&"b".repeat(64 * 1024));
    assert!(d.txn_dir("ttm", &id).is_dir());
}

#[test]
fn a_planted_ctx_symlink_is_never_followed() {
    let (d, id) = fixture();
    let outside = d.tmp().join("outside");
    fs::create_dir(&outside).unwrap();
    let ctx = d.txn_dir("ttm", &id).join("ctx");
    fs::rename(&ctx, d.tmp().join("ctx-moved")).unwrap();
    symlink(&outside, &ctx).unwrap();
    let file = d.tmp().join("evidence.txt");
    fs::write(&file, "evidence").unwrap();

    let before = d.snapshot();
    let out = d.ctl(&["ctx", "add", file.to_str().unwrap(), "e", "-t", &id]);
    assert_ne!(out.code(), 0, "ctx add through a symlinked ctx/ succeeded");
    out.stderr_has(&["symlink"]);
    assert_same_tree(&before, &d.snapshot(), "ctx add with a symlinked ctx/");
    assert!(
        snapshot(&outside).is_empty(),
        "ctx add wrote outside the tree: {:?}",
        snapshot(&outside).keys().collect::<Vec<_>>()
    );
    let _ = d.ctl(&["ctx", "list", "-t", &id]);
    assert!(snapshot(&outside).is_empty());
}

#[test]
fn a_symlinked_transaction_directory_is_never_followed() {
    let (mut d, id) = fixture();
    // A complete, valid-looking transaction outside the tree.
    let outside = d.tmp().join("outside-txn");
    ttm_tests::copy_dir(&d.txn_dir("ttm", &id), &outside);
    let evil = "evil-20250101T000000";
    symlink(&outside, d.root.join("ttm/txns").join(evil)).unwrap();
    let outside_before = snapshot(&outside);

    let probe = |d: &Daemon| {
        // Listed only as quarantined (never served, never silently
        // skipped), with the reason.
        let list = d.ctl(&["list"]).ok();
        for line in list.lines().filter(|l| l.contains(evil)) {
            assert!(
                line.contains("QUARANTINED") && line.contains("symlink"),
                "a symlinked txn dir is listed as a transaction:\n{list}"
            );
        }
        let before = d.snapshot();
        for args in [
            &["state", "-t", evil][..],
            &["transition", "ASSEMBLE", "-t", evil],
            &["update", r#"{"a":1}"#, "-t", evil],
            &["event", "progress", "{}", "-t", evil],
            &["activate", evil],
        ] {
            let out = d.ctl(args);
            assert_ne!(out.code(), 0, "{args:?} on a symlinked txn dir succeeded");
            out.stderr_has(&["symlink"]);
        }
        assert_same_tree(&before, &d.snapshot(), "requests on a symlinked txn dir");
        assert_same_tree(
            &outside_before,
            &snapshot(&outside),
            "the outside directory",
        );
    };
    probe(&d);
    // Also when it is there at start-up.
    d.restart();
    probe(&d);
}
