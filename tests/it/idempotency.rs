//! Idempotent retry (SPEC §4): a mutation repeated with the same
//! `--request-id` returns the first answer and appends nothing — also after
//! a daemon restart, and also when the repeats race each other.

use std::fs;

use serde_json::Value;
use ttm_tests::{Daemon, HANG, Spawned, assert_same_tree, check_log};

/// How many events of `events` carry `request_id`.
fn with_request_id(events: &[Value], request_id: &str) -> usize {
    events
        .iter()
        .filter(|e| e["request_id"] == request_id)
        .count()
}

/// The transaction directories of module `ttm`.
fn txn_dirs(d: &Daemon) -> Vec<String> {
    let mut dirs: Vec<String> = fs::read_dir(d.root.join("ttm/txns"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn a_repeated_request_id_answers_once_also_after_a_restart() {
    let mut d = Daemon::start_new();
    let id = d.create("idempotent");
    let dir = d.txn_dir("ttm", &id);
    let event = ["event", "x", "{}", "--request-id", "r1", "--json"];
    let select = ["transition", "SELECT", "--request-id", "r2", "--json"];

    let first_event = d.ctl(&event).json();
    let first_select = d.ctl(&select).json();
    assert_eq!(first_event["seq"], 3);
    assert_eq!(first_select["stage"], "SELECT");
    assert_eq!(first_select["seq"], 4);

    let before = d.snapshot();
    // The repeats succeed (not "already in SELECT") with the first answer.
    assert_eq!(d.ctl(&event).json(), first_event);
    assert_eq!(d.ctl(&select).json()["seq"], 4);
    assert_same_tree(&before, &d.snapshot(), "repeated request ids");
    // Another id is another request: SELECT → SELECT is refused.
    d.ctl(&["transition", "SELECT", "--request-id", "r3"])
        .expect_code(4);

    d.restart();
    assert_eq!(d.ctl(&event).json(), first_event, "after a restart");
    assert_eq!(d.ctl(&select).json()["seq"], 4, "after a restart");
    assert_same_tree(
        &before,
        &d.snapshot(),
        "request ids repeated after a restart",
    );

    let events = check_log(&dir);
    assert_eq!(events.len(), 4);
    assert_eq!(with_request_id(&events, "r1"), 1);
    assert_eq!(with_request_id(&events, "r2"), 1);
    assert_eq!(with_request_id(&events, "r3"), 0);
    // The same id on another transaction is a different request.
    let other = d.create("other");
    d.ctl(&["event", "x", "{}", "--request-id", "r1", "-t", &other])
        .ok();
    assert_eq!(
        with_request_id(&check_log(&d.txn_dir("ttm", &other)), "r1"),
        1
    );
    assert_eq!(check_log(&dir).len(), 4);
}

#[test]
fn racing_repeats_of_one_request_id_append_once() {
    const CLIENTS: usize = 8;
    let d = Daemon::start_new();
    let id = d.create("racing retries");
    let racers: Vec<Spawned> = (0..CLIENTS)
        .map(|_| d.spawn_ctl(&["event", "x", "{}", "--request-id", "same", "--json"]))
        .collect();
    for racer in racers {
        let out = racer.wait(HANG);
        assert_eq!(out.json()["seq"], 3, "every repeat answers the first seq");
    }
    let events = check_log(&d.txn_dir("ttm", &id));
    assert_eq!(with_request_id(&events, "same"), 1);
    assert_eq!(events.len(), 3);
}

#[test]
fn a_repeated_create_request_id_returns_the_first_transaction() {
    let mut d = Daemon::start_new();
    let create = ["create", "once only", "--request-id", "c1"];
    let id = d.ctl(&create).ok();
    assert_eq!(d.ctl(&create).ok(), id, "the repeat returns the first id");
    assert_eq!(txn_dirs(&d), [id.as_str()]);

    d.restart();
    assert_eq!(d.ctl(&create).ok(), id, "after a restart");
    assert_eq!(txn_dirs(&d), [id.as_str()]);
    let events = check_log(&d.txn_dir("ttm", &id));
    assert_eq!(with_request_id(&events, "c1"), 1);

    let other = d.ctl(&["create", "once only", "--request-id", "c2"]).ok();
    assert_ne!(other, id, "another id creates another transaction");
    assert_eq!(txn_dirs(&d).len(), 2);
}

/// A retried guarded call answers its first outcome even though its guard
/// no longer holds (the first call moved the stage), and a retried ctx add
/// stores the file once.
#[test]
fn a_retry_of_a_guarded_call_or_a_ctx_add_answers_once() {
    let mut d = Daemon::start_new();
    let id = d.create("guarded retries");
    let dir = d.txn_dir("ttm", &id);
    d.ctl(&["transition", "ASSEMBLE"]).ok();
    let guarded = [
        "transition",
        "EXECUTE",
        "--expect-stage",
        "ASSEMBLE",
        "--request-id",
        "g1",
        "--json",
    ];
    assert_eq!(d.ctl(&guarded).json()["stage"], "EXECUTE");
    // Now the stage is EXECUTE: a new call with this guard would be
    // ABORTED, the retry is not.
    assert_eq!(d.ctl(&guarded).json()["stage"], "EXECUTE", "the retry");

    let add = ["ctx", "add", "-", "report", "--request-id", "a1"];
    let name = d.ctl_stdin(&add, b"the report\n").ok();
    assert_eq!(name, "100_report");
    assert_eq!(d.ctl_stdin(&add, b"the report\n").ok(), name, "the retry");
    d.restart();
    assert_eq!(
        d.ctl(&guarded).json()["stage"],
        "EXECUTE",
        "after a restart"
    );
    assert_eq!(
        d.ctl_stdin(&add, b"the report\n").ok(),
        name,
        "after a restart"
    );

    let events = check_log(&dir);
    assert_eq!(with_request_id(&events, "g1"), 1);
    assert_eq!(with_request_id(&events, "a1"), 1);
    let ctx: Vec<String> = fs::read_dir(dir.join("ctx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("000_") && !n.starts_with("010_"))
        .collect();
    assert_eq!(ctx, [name.as_str()], "one stored copy");
}
