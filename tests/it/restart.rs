//! Stopping and starting the daemon: nothing is lost, and what was damaged
//! or edited while it was down is repaired from the log.

use std::fs;
use std::io::Write;

use serde_json::Value;
use ttm_tests::{Daemon, check_log, read_json};

/// A daemon with one transaction that went through a few mutations.
fn busy() -> (Daemon, String) {
    let d = Daemon::start_new();
    let id = d
        .ctl(&["create", "survive restarts", "--target", "@staging"])
        .ok();
    d.ctl(&["transition", "SELECT"]).ok();
    d.ctl(&["update", r#"{"owner":"ops","tries":[1,2]}"#]).ok();
    d.ctl(&["event", "progress", r#"{"pct":50}"#]).ok();
    d.ctl_stdin(&["ctx", "add", "-", "log"], b"some log\n").ok();
    d.ctl(&["resolve"]).ok();
    (d, id)
}

fn views(d: &Daemon) -> (String, String, String) {
    (
        d.ctl(&["state"]).ok(),
        d.ctl(&["list"]).ok(),
        d.ctl(&["events", "--json"]).ok(),
    )
}

#[test]
fn everything_survives_a_restart() {
    let (mut d, id) = busy();
    let dir = d.txn_dir("ttm", &id);
    let before = views(&d);
    let tree = d.snapshot();
    let state = read_json(&dir.join("state.json"));
    assert_eq!(state["tes_plan"], "staging.local");
    assert_eq!(state["owner"], "ops");

    d.stop(); // asserts exit 0 and the socket removed
    ttm_tests::assert_same_tree(&tree, &d.snapshot(), "stopping");
    d.start();
    assert_eq!(views(&d), before);
    assert_eq!(d.ctl(&["active"]).ok(), id);
    ttm_tests::assert_same_tree(&tree, &d.snapshot(), "a clean restart");
    // And it keeps working, seq continuing.
    d.ctl(&["transition", "EXECUTE"]).ok();
    let events = check_log(&dir);
    assert_eq!(events.len(), 8);
    d.assert_state_is_fold("ttm", &id);
}

#[test]
fn a_deleted_state_json_is_rebuilt_identical() {
    let (mut d, id) = busy();
    d.assert_state_is_fold("ttm", &id);
    check_log(&d.txn_dir("ttm", &id));
}

#[test]
fn a_contradicting_state_json_is_rebuilt_from_the_log() {
    let (mut d, id) = busy();
    let path = d.txn_dir("ttm", &id).join("state.json");
    let good = read_json(&path);
    d.stop();
    let mut edited = good.clone();
    edited["stage"] = Value::from("DONE");
    edited["owner"] = Value::from("mallory");
    fs::write(&path, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    d.start();
    assert_eq!(read_json(&path), good);
    assert_eq!(d.ctl(&["state"]).json(), good);
    // Still mutable: the log says SELECT, not DONE.
    d.ctl(&["transition", "ASSEMBLE"]).ok();
    check_log(&d.txn_dir("ttm", &id));
}

#[test]
fn a_state_json_behind_the_log_is_rebuilt() {
    let (mut d, id) = busy();
    let path = d.txn_dir("ttm", &id).join("state.json");
    let old = fs::read(&path).unwrap();
    d.ctl(&["transition", "EXECUTE"]).ok();
    d.ctl(&["update", r#"{"late":true}"#]).ok();
    let current = read_json(&path);
    d.stop();
    fs::write(&path, old).unwrap();
    d.start();
    assert_eq!(read_json(&path), current);
    assert_eq!(read_json(&path)["stage"], "EXECUTE");
    check_log(&d.txn_dir("ttm", &id));
}

#[test]
fn a_torn_final_line_is_dropped() {
    let (mut d, id) = busy();
    let dir = d.txn_dir("ttm", &id);
    let log = dir.join("events.ndjson");
    let good = fs::read(&log).unwrap();
    let state = read_json(&dir.join("state.json"));
    d.stop();
    let mut file = fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(br#"{"ts":"x","eve"#).unwrap();
    drop(file);
    d.start();
    assert_eq!(
        fs::read(&log).unwrap(),
        good,
        "the torn line was not dropped"
    );
    assert_eq!(read_json(&dir.join("state.json")), state);
    let n = check_log(&dir).len();
    d.ctl(&["event", "after.repair", "{}"]).ok();
    let events = check_log(&dir);
    assert_eq!(events.len(), n + 1);
    assert_eq!(events[n]["event"], "after.repair");
}

#[test]
fn many_transactions_and_modules_survive() {
    let mut d = Daemon::start_new();
    let a = d.create("first");
    let b = d.ctl(&["-m", "deploy", "create", "second"]).ok();
    let c = d.ctl(&["create", "third", "--no-activate"]).ok();
    d.ctl(&["commit", "-t", &c]).ok();
    let list_ttm = d.ctl(&["list", "--json"]).json();
    let list_deploy = d.ctl(&["-m", "deploy", "list", "--json"]).json();
    d.restart();
    assert_eq!(d.ctl(&["list", "--json"]).json(), list_ttm);
    assert_eq!(
        d.ctl(&["-m", "deploy", "list", "--json"]).json(),
        list_deploy
    );
    assert_eq!(d.ctl(&["active"]).ok(), a);
    assert_eq!(d.ctl(&["-m", "deploy", "active"]).ok(), b);
    let done = d.ctl(&["list", "--stage", "DONE", "--json"]).json();
    let ids: Vec<&str> = done["txns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["txn_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c.as_str()]);
}

/// After a restart, finished transactions are kept as summaries and loaded
/// on first use: every view of them is what it was, a retried creation still
/// finds its transaction, a failure can still be retried, and one deleted by
/// hand leaves the list.
#[test]
fn finished_transactions_are_served_the_same_after_a_restart() {
    let mut d = Daemon::start_new();
    let done = d
        .ctl(&["create", "done one", "--request-id", "make-done"])
        .ok();
    d.ctl(&["event", "progress", r#"{"pct":100}"#]).ok();
    d.ctl(&["commit"]).ok();
    let failed = d.ctl(&["create", "failed one"]).ok();
    d.ctl(&["fail", "boom"]).ok();
    let live = d.ctl(&["create", "still going"]).ok();
    let views = |d: &Daemon| {
        (
            d.ctl(&["list", "--json"]).json(),
            d.ctl(&["list"]).ok(),
            d.ctl(&["list", "--stage", "DONE"]).ok(),
            d.ctl(&["state", "-t", &done]).ok(),
            d.ctl(&["events", "-t", &done, "--json"]).ok(),
        )
    };
    let before = views(&d);
    d.restart();
    assert_eq!(views(&d), before);
    let again = d
        .ctl(&["create", "done one", "--request-id", "make-done"])
        .ok();
    assert_eq!(again, done, "a retried create made a second transaction");
    assert_eq!(d.ctl(&["active"]).ok(), live);

    d.restart();
    d.ctl(&["retry", "-t", &failed]).ok();
    assert_eq!(
        read_json(&d.txn_dir("ttm", &failed).join("state.json"))["iteration"],
        2
    );
    check_log(&d.txn_dir("ttm", &failed));

    // A line appended to a finished log while ttmd was down is folded in
    // at start-up, before anyone asks.
    d.stop();
    let dir = d.txn_dir("ttm", &done);
    let lines = fs::read_to_string(dir.join("events.ndjson"))
        .unwrap()
        .lines()
        .count();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.ndjson"))
        .unwrap();
    log.write_all(b"{\"ts\":\"2026-11-26T00:00:00.000Z\",\"event\":\"bash.note\"}\n")
        .unwrap();
    drop(log);
    d.start();
    assert_eq!(read_json(&dir.join("state.json"))["seq"], lines + 1);

    fs::remove_dir_all(d.txn_dir("ttm", &done)).unwrap();
    assert!(
        ttm_tests::wait_until(std::time::Duration::from_secs(10), || {
            !d.ctl(&["list"]).ok().contains(&done)
        }),
        "a deleted finished transaction is still listed"
    );
    d.ctl(&["state", "-t", &done]).expect_code(3);
}
