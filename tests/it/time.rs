//! Time (SPEC §14) end to end, with short periods: stage timeouts that fail
//! or note, deadlines missed while the daemon was down, heartbeats, stalls
//! and their end, and the marks `list`, `status` and `watch` show. Every
//! wait is for an event in the log, bounded by a lack-of-progress guard,
//! never by elapsed time.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ttm_tests::{Daemon, HANG, STALL, read_events, wait_progressing};

const FSM: &str = r#"{
    "stages": ["NEW", "EXECUTE", "VALIDATE"],
    "timeouts": {
        "EXECUTE": {"after": "1s", "on_timeout": "fail"},
        "VALIDATE": {"after": "1s", "on_timeout": "note"}
    }
}"#;

fn timed_tree(root: &Path) {
    fs::create_dir_all(root.join("ttm")).unwrap();
    fs::write(root.join("ttm/fsm.json"), FSM).unwrap();
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

/// Waits until the log of `id` holds `n` events of type `kind`, and its
/// view (state.json, replaced after the log line) has caught up with them;
/// the timer has nothing to show until it fires, so the guard is one long
/// stall.
fn wait_for(d: &Daemon, id: &str, kind: &str, n: usize) -> Vec<Value> {
    let dir = d.txn_dir("ttm", id);
    wait_progressing(
        &format!("{n} {kind} in {id}"),
        STALL,
        || 0,
        || {
            let events = read_events(&dir);
            let seen = events
                .iter()
                .filter(|e| e["event"] == kind)
                .nth(n.checked_sub(1)?)?;
            let view = fs::read(dir.join("state.json")).ok()?;
            let view: Value = serde_json::from_slice(&view).ok()?;
            (view["seq"].as_u64()? >= seen["seq"].as_u64()?).then_some(events)
        },
    )
}

#[test]
fn a_stage_timeout_fails_the_transaction_once_with_a_clear_error() {
    let d = Daemon::with_tree(timed_tree);
    let id = d.create("deploy");
    let follow = d.spawn_ctl(&["status", "--follow", "-t", &id]);
    // Following (its summary printed) before the clock starts.
    follow.line(HANG);
    d.ctl(&["transition", "EXECUTE", "-t", &id]).ok();
    let events = wait_for(&d, &id, "txn_fail", 1);
    let overdue: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "txn_overdue")
        .collect();
    assert_eq!(overdue.len(), 1, "{events:?}");
    assert_eq!(overdue[0]["scope"], "stage");
    assert_eq!(overdue[0]["stage"], "EXECUTE");
    assert_eq!(overdue[0]["limit"], "1s");
    assert_eq!(overdue[0]["on_timeout"], "fail");
    assert!(overdue[0]["ran_ms"].as_u64().unwrap() >= 1000);
    let want = "stage EXECUTE ran longer than its 1s timeout (on_timeout: fail)";
    let state = d.state_json("ttm", &id);
    assert_eq!(state["stage"], "FAIL");
    assert_eq!(state["last_error"], want);
    // The follower said so while it waited, then ended with the failure.
    let out = follow.wait(HANG);
    out.expect_code(9);
    out.stderr_has(&["still waiting", "ran past its 1s timeout", want]);
    // Once: a restart finds it recorded and adds nothing.
    let mut d = d;
    d.restart();
    d.ctl(&["list"]).ok();
    let after = read_events(&d.txn_dir("ttm", &id));
    assert_eq!(count(&after, "txn_overdue"), 1);
    assert_eq!(count(&after, "txn_fail"), 1);
    d.assert_state_is_fold("ttm", &id);
}

#[test]
fn the_note_policy_logs_overdue_once_and_the_marks_show() {
    let mut d = Daemon::with_tree(timed_tree);
    let id = d.create("check");
    d.ctl(&["transition", "VALIDATE", "-t", &id]).ok();
    wait_for(&d, &id, "txn_overdue", 1);
    let state = d.state_json("ttm", &id);
    assert_eq!(state["stage"], "VALIDATE", "note leaves it where it is");
    assert_eq!(state["timing"]["stage_overdue"]["limit"], "1s");
    let list = d.ctl(&["list"]).ok();
    assert!(list.contains(&id) && list.contains("OVERDUE"), "{list}");
    let status = d.ctl(&["status", "-t", &id]).ok();
    assert!(
        status.contains("overdue") && status.contains("ran past its 1s timeout"),
        "{status}"
    );
    // A user event is life, not a new visit: nothing more is due.
    d.ctl(&["event", "progress", "{}", "-t", &id]).ok();
    d.restart();
    d.ctl(&["list"]).ok();
    let events = read_events(&d.txn_dir("ttm", &id));
    assert_eq!(count(&events, "txn_overdue"), 1, "{events:?}");
    // A new stage ends the mark.
    d.ctl(&["commit", "-t", &id]).ok();
    let list = d.ctl(&["list"]).ok();
    assert!(!list.contains("OVERDUE"), "{list}");
}

#[test]
fn a_silent_transaction_stalls_once_and_resumes_on_a_heartbeat_or_an_event() {
    let d = Daemon::start_new();
    let watch = d.spawn_ctl(&["watch", "--json"]);
    // Watching (it heard this one) before the silence starts.
    let marker = d.create("marker");
    while !watch.line(HANG).contains(&marker) {}
    let id = d.ctl(&["create", "sync", "--heartbeat", "1s"]).ok();
    let events = wait_for(&d, &id, "txn_stalled", 1);
    let stalled = events.iter().find(|e| e["event"] == "txn_stalled").unwrap();
    assert_eq!(stalled["period_ms"], 1000);
    let list = d.ctl(&["list"]).ok();
    assert!(list.contains("STALLED"), "{list}");
    let status = d.ctl(&["status", "-t", &id]).ok();
    assert!(
        status.contains("stalled") && status.contains("no sign of life"),
        "{status}"
    );
    d.ctl(&["heartbeat", "-t", &id]).ok();
    let events = wait_for(&d, &id, "txn_resumed", 1);
    let resumed = events.iter().find(|e| e["event"] == "txn_resumed").unwrap();
    assert_eq!(resumed["by"], "heartbeat");
    // Silent again: a second stall, ended by an event this time.
    wait_for(&d, &id, "txn_stalled", 2);
    d.ctl(&["event", "progress", "{}", "-t", &id]).ok();
    let events = wait_for(&d, &id, "txn_resumed", 2);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|k| k.starts_with("txn_"))
        .collect();
    // Once per silence: stalls and resumptions alternate.
    assert_eq!(
        kinds[..5],
        [
            "txn_start",
            "txn_stalled",
            "txn_resumed",
            "txn_stalled",
            "txn_resumed"
        ]
    );
    let second = events.iter().filter(|e| e["event"] == "txn_resumed").nth(1);
    assert_eq!(second.unwrap()["by"], "event");
    // The watch feed announced each, with words.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let line: Value = serde_json::from_str(&watch.line(HANG)).unwrap();
        let kind = line["kind"].as_str().unwrap().to_owned();
        if kind == "stalled" || kind == "resumed" {
            assert!(!line["note"].as_str().unwrap().is_empty(), "{line}");
            seen.push(kind);
        }
    }
    assert_eq!(seen, ["stalled", "resumed", "stalled", "resumed"]);
    watch.kill();
    // Finished: nothing is due any more.
    d.ctl(&["commit", "-t", &id]).ok();
    assert!(!d.ctl(&["list"]).ok().contains("STALLED"));
}

#[test]
fn a_deadline_passed_while_the_daemon_was_killed_is_applied_once_at_start_up() {
    let mut d = Daemon::start_new();
    let id = d
        .ctl(&[
            "create",
            "nightly",
            "--deadline",
            "3s",
            "--on-deadline",
            "fail",
        ])
        .ok();
    let state = d.state_json("ttm", &id);
    let deadline = state["timing"]["deadline"].as_str().unwrap().to_owned();
    let start = read_events(&d.txn_dir("ttm", &id));
    assert_eq!(
        start[0]["deadline"],
        deadline.as_str(),
        "recorded in txn_start"
    );
    d.kill9();
    // Wait (with no daemon) until the deadline has passed.
    let at = chrono::DateTime::parse_from_rfc3339(&deadline).unwrap();
    wait_progressing(
        "the deadline to pass",
        STALL,
        || 0,
        || (chrono::Utc::now() > at).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(200));
    d.start();
    let events = wait_for(&d, &id, "txn_fail", 1);
    assert_eq!(count(&events, "txn_overdue"), 1, "{events:?}");
    let overdue = events.iter().find(|e| e["event"] == "txn_overdue").unwrap();
    assert_eq!(overdue["scope"], "deadline");
    assert_eq!(overdue["limit"], deadline.as_str());
    let err = d.state_json("ttm", &id)["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("not finished by its deadline") && err.contains(&deadline),
        "{err}"
    );
    d.kill9();
    d.start();
    d.ctl(&["list"]).ok();
    let again = read_events(&d.txn_dir("ttm", &id));
    assert_eq!(again.len(), events.len(), "applied once: {again:?}");
}

#[test]
fn bad_time_settings_are_refused_with_a_clear_message() {
    let d = Daemon::with_tree(|root| {
        for (module, entry, _) in BAD {
            fs::create_dir_all(root.join(module)).unwrap();
            let text = format!(r#"{{"stages": ["NEW", "EXECUTE"], "timeouts": {{{entry}}}}}"#);
            fs::write(root.join(module).join("fsm.json"), text).unwrap();
        }
    });
    for (module, _, want) in BAD {
        let out = d.ctl(&["-m", module, "create", "x"]);
        assert_ne!(out.code(), 0, "module {module}");
        out.stderr_has(&["fsm.json", want]);
    }
    let out = d.ctl(&["create", "x", "--deadline", "tomorrow"]);
    out.expect_code(2).stderr_has(&["deadline", "RFC 3339"]);
    let out = d.ctl(&["create", "x", "--heartbeat", "0s"]);
    out.expect_code(2).stderr_has(&["longer than 0"]);
    let out = d.ctl(&["create", "x", "--on-deadline", "fail"]);
    out.expect_code(2).stderr_has(&["--deadline"]);
    assert!(d.ctl(&["list"]).ok().is_empty(), "nothing was created");
}

/// (module, timeouts entry, what the refusal must say)
const BAD: [(&str, &str, &str); 4] = [
    (
        "unit",
        r#""EXECUTE": {"after": "30x"}"#,
        "timeouts.EXECUTE.after",
    ),
    (
        "policy",
        r#""EXECUTE": {"after": "1m", "on_timeout": "kill"}"#,
        "\"fail\" or \"note\"",
    ),
    ("stage", r#""DEPLOY": {"after": "1m"}"#, "not a listed"),
    ("empty", r#""EXECUTE": {}"#, "neither"),
];

/// Waits until `id`'s log holds as many `hook_ran` lines as `want` says,
/// then returns them.
fn wait_hook_runs(d: &Daemon, id: &str, want: impl Fn(&[Value]) -> usize) -> Vec<Value> {
    let dir = d.txn_dir("ttm", id);
    wait_progressing(
        &format!("the hooks of {id}"),
        STALL,
        || 0,
        || {
            let events = read_events(&dir);
            let runs = crate::hooks::hook_runs(d, id);
            (runs.len() >= want(&events)).then_some(runs)
        },
    )
}

fn ran(runs: &[Value], hook: &str) -> usize {
    runs.iter()
        .filter(|r| r["hook"] == hook && r["outcome"] == "exited" && r["exit_code"] == 0)
        .count()
}

#[test]
fn time_events_run_their_hooks_once() {
    let mut d = Daemon::with_tree(timed_tree);
    let script = "#!/bin/sh\ncat >/dev/null\n";
    for name in ["on-fail", "on-overdue", "on-stalled", "on-resumed"] {
        crate::hooks::hook(&d, name, script, 0o755);
    }

    // A stage timeout with on_timeout fail: on-overdue, then on-fail, once each.
    let failed = d.create("deploy");
    d.ctl(&["transition", "EXECUTE", "-t", &failed]).ok();
    wait_for(&d, &failed, "txn_fail", 1);
    let runs = wait_hook_runs(&d, &failed, |_| 2);
    assert_eq!(
        (ran(&runs, "on-overdue"), ran(&runs, "on-fail")),
        (1, 1),
        "{runs:?}"
    );

    // A stall runs on-stalled; a heartbeat's txn_resumed runs on-resumed; a
    // hook's own outcome is no sign of life, so it never resumes the stall.
    let silent = d.ctl(&["create", "sync", "--heartbeat", "1s"]).ok();
    wait_for(&d, &silent, "txn_stalled", 1);
    d.ctl(&["heartbeat", "-t", &silent]).ok();
    wait_for(&d, &silent, "txn_resumed", 1);
    d.ctl(&["commit", "-t", &silent]).ok();
    let per_event = |events: &[Value]| count(events, "txn_stalled") + count(events, "txn_resumed");
    let runs = wait_hook_runs(&d, &silent, per_event);
    let events = read_events(&d.txn_dir("ttm", &silent));
    assert_eq!(
        ran(&runs, "on-stalled"),
        count(&events, "txn_stalled"),
        "{events:?}"
    );
    assert_eq!(
        ran(&runs, "on-resumed"),
        count(&events, "txn_resumed"),
        "{events:?}"
    );
    let resumed = events.iter().find(|e| e["event"] == "txn_resumed").unwrap();
    assert_eq!(resumed["by"], "heartbeat", "{events:?}");

    // A deadline passed while the daemon was killed: applied at start-up,
    // and its hook runs once.
    let late = d.ctl(&["create", "nightly", "--deadline", "2s"]).ok();
    let deadline = d.state_json("ttm", &late)["timing"]["deadline"]
        .as_str()
        .unwrap()
        .to_owned();
    d.kill9();
    let at = chrono::DateTime::parse_from_rfc3339(&deadline).unwrap();
    wait_progressing(
        "the deadline to pass",
        STALL,
        || 0,
        || (chrono::Utc::now() > at).then_some(()),
    );
    d.start();
    wait_for(&d, &late, "txn_overdue", 1);
    let runs = wait_hook_runs(&d, &late, |_| 1);
    assert_eq!(ran(&runs, "on-overdue"), 1, "{runs:?}");
    d.restart();
    d.ctl(&["list"]).ok();
    let runs = crate::hooks::hook_runs(&d, &late);
    assert_eq!(
        ran(&runs, "on-overdue"),
        1,
        "once, also across a restart: {runs:?}"
    );
    let events = read_events(&d.txn_dir("ttm", &late));
    assert_eq!(count(&events, "txn_overdue"), 1, "{events:?}");
}
