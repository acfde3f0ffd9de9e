//! The store-side findings of the outside audit (issue 15, issue 16 item
//! 7): hand edits and careless scripts against a running daemon. Each test
//! is named after what it guards; every wait polls with a hang guard.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use ttm_tests::{Daemon, check_log};

/// Hang guard of every wait for the daemon to notice a change.
const GUARD: Duration = Duration::from_secs(20);

fn daemon() -> Daemon {
    Daemon::with_tree(|root| fs::create_dir_all(root.join("ttm/txns")).unwrap())
}

#[track_caller]
fn eventually(d: &Daemon, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: still not so after {GUARD:?}\nttmd's log:\n{}",
            d.daemon_stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The reason `id` is listed as quarantined, if it is.
fn quarantined(d: &Daemon, id: &str) -> Option<String> {
    let list = d.ctl(&["--json", "list"]).json();
    list["quarantined"]
        .as_array()?
        .iter()
        .find(|q| q["txn_id"] == id || q["id"] == id)
        .map(|q| q.to_string())
}

fn listed_ids(d: &Daemon) -> Vec<String> {
    let list = d.ctl(&["--json", "list"]).json();
    list["txns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["txn_id"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn cut(path: &Path, by: u64) {
    let len = fs::metadata(path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - by).unwrap();
}

// ------------------------------------------------ 2: a log that shrank --

/// `truncate -s -20 events.ndjson`, then a write and a plain `events`: the
/// write is refused (never glued onto the cut line), `events` ends with an
/// error (never hangs), and the transaction is listed as quarantined, with
/// the reason, also after a restart.
#[test]
fn a_truncated_log_is_reported_never_glued_or_hung() {
    let mut d = daemon();
    let id = d.create("t");
    d.ctl(&["event", "e", "{}"]).ok();
    let log = d.txn_dir("ttm", &id).join("events.ndjson");
    cut(&log, 20);
    let cut_len = fs::metadata(&log).unwrap().len();

    let write = d.ctl(&["event", "x", "{}"]);
    assert_ne!(write.code(), 0, "a write to a cut log succeeded");
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        cut_len,
        "something was glued"
    );
    let events = d.ctl(&["events", "-t", &id]);
    assert_ne!(events.code(), 0, "events on a cut log: {}", events.stdout);

    eventually(&d, "the transaction quarantined", || {
        quarantined(&d, &id).is_some()
    });
    let why = quarantined(&d, &id).unwrap_or_default();
    assert!(why.contains("removed") || why.contains("shorter"), "{why}");
    assert!(!listed_ids(&d).contains(&id));
    d.ctl(&["event", "y", "{}", "-t", &id]).expect_code(4);
    d.restart();
    assert!(quarantined(&d, &id).is_some(), "adopted at restart");
    assert_eq!(fs::metadata(&log).unwrap().len(), cut_len);
}

/// `: > events.ndjson`: no acknowledged write lands in the emptied log.
#[test]
fn an_emptied_log_takes_no_acknowledged_writes() {
    let d = daemon();
    let id = d.create("emptied");
    let log = d.txn_dir("ttm", &id).join("events.ndjson");
    fs::write(&log, b"").unwrap();
    for i in 0..5 {
        let out = d.ctl(&["event", "x", "{}", "-t", &id]);
        assert_ne!(out.code(), 0, "write {i} to an emptied log acknowledged");
    }
    assert_eq!(fs::metadata(&log).unwrap().len(), 0);
    eventually(&d, "the transaction quarantined", || {
        quarantined(&d, &id).is_some_and(|why| why.contains("removed"))
    });
}

/// A log whose last line lost its newline by hand (`truncate -s -1`): the
/// newline is restored, nothing is glued, the next write is the next line.
#[test]
fn a_log_that_lost_its_last_newline_gets_it_back() {
    let mut d = daemon();
    let id = d.create("newline");
    d.ctl(&["event", "e", "{}"]).ok();
    let dir = d.txn_dir("ttm", &id);
    cut(&dir.join("events.ndjson"), 1);
    d.ctl(&["event", "x", "{}"]).ok();
    let lines = check_log(&dir);
    assert_eq!(lines.len(), 4, "{lines:?}");
    d.stop();
    cut(&dir.join("events.ndjson"), 1);
    d.start();
    d.ctl(&["event", "y", "{}"]).ok();
    let lines = check_log(&dir);
    assert_eq!(
        lines.len(),
        5,
        "the last event was dropped at restart: {lines:?}"
    );
}

/// A log overwritten in place by another transaction's log (`cp other
/// events.ndjson`, same inode, longer): never glued onto; the transaction
/// is reloaded from what is on disk or quarantined.
#[test]
fn a_log_overwritten_in_place_is_never_glued_onto() {
    let d = daemon();
    let a = d.create("first");
    let b = d.create("second with a much longer description to be longer");
    for _ in 0..3 {
        d.ctl(&[
            "event",
            "more",
            r#"{"pad":"xxxxxxxxxxxxxxxxxxxxxx"}"#,
            "-t",
            &b,
        ])
        .ok();
    }
    let a_log = d.txn_dir("ttm", &a).join("events.ndjson");
    let b_log = d.txn_dir("ttm", &b).join("events.ndjson");
    let mut f = fs::OpenOptions::new().write(true).open(&a_log).unwrap();
    std::io::Write::write_all(&mut f, &fs::read(&b_log).unwrap()).unwrap();
    drop(f);
    let _ = d.ctl(&["event", "x", "{}", "-t", &a]);
    let events = d.ctl(&["--json", "events", "-t", &a]);
    let _: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_log(&d.txn_dir("ttm", &a));
}

// ---------------------------------------- 5: a request id used again --

/// `event … --request-id deploy-1`, then `transition EXECUTE --request-id
/// deploy-1`: refused (exit 4, ALREADY_EXISTS) and the stage unchanged; a
/// true repeat still answers with the first answer, also after a restart.
#[test]
fn a_request_id_reused_for_another_mutation_is_refused() {
    let mut d = daemon();
    let id = d.create("reuse");
    let first = d.ctl(&[
        "--json",
        "event",
        "deploy.step",
        r#"{"n":1}"#,
        "--request-id",
        "deploy-1",
    ]);
    first.ok();
    let reused = d.ctl(&["transition", "EXECUTE", "--request-id", "deploy-1"]);
    reused
        .expect_code(4)
        .stderr_has(&["deploy-1", "different request"]);
    let other_data = d.ctl(&[
        "event",
        "deploy.step",
        r#"{"n":2}"#,
        "--request-id",
        "deploy-1",
    ]);
    other_data.expect_code(4);
    assert_eq!(d.ctl(&["--json", "state"]).json()["stage"], "NEW");
    let again = d.ctl(&[
        "--json",
        "event",
        "deploy.step",
        r#"{"n":1}"#,
        "--request-id",
        "deploy-1",
    ]);
    assert_eq!(
        again.ok(),
        first.ok(),
        "a true repeat answers as the first time"
    );
    d.restart();
    d.ctl(&[
        "transition",
        "EXECUTE",
        "--request-id",
        "deploy-1",
        "-t",
        &id,
    ])
    .expect_code(4);
    d.ctl(&[
        "event",
        "deploy.step",
        r#"{"n":1}"#,
        "--request-id",
        "deploy-1",
        "-t",
        &id,
    ])
    .ok();
    assert_eq!(check_log(&d.txn_dir("ttm", &id)).len(), 3);
}

// ------------------------------- 9: a transaction copied under a new name --

/// `cp -r txns/A txns/B`: B is served under its directory name (its
/// state.json says B, its log records `copied_from` A), A stays A; neither
/// is listed twice, also after a restart, also for a finished one.
#[test]
fn a_transaction_copied_under_a_new_name_is_adopted_under_that_name() {
    let mut d = daemon();
    let a = d.create("original");
    d.ctl(&["commit", "-t", &a]).ok();
    let live = d.create("live one");
    let txns = d.root.join("ttm/txns");
    for (from, to) in [
        (&a, "copy-of-done-20250101T000000"),
        (&live, "copy-of-live-20250101T000000"),
    ] {
        let out = std::process::Command::new("cp")
            .arg("-r")
            .arg(txns.join(from))
            .arg(txns.join(to))
            .status()
            .unwrap();
        assert!(out.success());
    }
    let check = |d: &Daemon| {
        eventually(d, "both copies listed", || {
            let ids = listed_ids(d);
            ids.iter().any(|i| i == "copy-of-done-20250101T000000")
                && ids.iter().any(|i| i == "copy-of-live-20250101T000000")
        });
        let mut ids = listed_ids(d);
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "listed twice: {ids:?}");
        assert_eq!(ids.len(), 4, "{ids:?}");
        for (copy, original) in [
            ("copy-of-done-20250101T000000", &a),
            ("copy-of-live-20250101T000000", &live),
        ] {
            let s = d.ctl(&["--json", "state", "-t", copy]).json();
            assert_eq!(s["txn_id"], copy, "{s}");
            assert_eq!(s["copied_from"], original.as_str(), "{s}");
            check_log(&d.txn_dir("ttm", copy));
        }
    };
    check(&d);
    d.restart();
    check(&d);
    d.ctl(&["event", "after", "-t", "copy-of-live-20250101T000000"])
        .ok();
    assert_eq!(
        d.ctl(&["--json", "state", "-t", &live]).json()["txn_id"],
        live.as_str()
    );
}

// ------------------------------------------- 12: limits and no-op updates --

/// `update ''` and `update '{}'` are refused as malformed (exit 2); an
/// update's description obeys the description limit like create's.
#[test]
fn an_empty_update_and_an_oversized_description_are_refused() {
    let d = Daemon::start_with_args(&["--limit-description", "100"]);
    let id = d.create("limits");
    for patch in ["", "{}", "  "] {
        d.ctl(&["update", patch])
            .expect_code(2)
            .stderr_has(&["nothing to update"]);
    }
    let long = format!(r#"{{"description":"{}"}}"#, "x".repeat(1000));
    d.ctl(&["update", &long])
        .expect_code(8)
        .stderr_has(&["limits.description"]);
    assert_eq!(check_log(&d.txn_dir("ttm", &id)).len(), 2);
}

/// An archived transaction keeps its id: a creation in the same second
/// with the same description gets `-2`, and archiving it works.
#[test]
fn ids_are_unique_among_archived_transactions_too() {
    let d = daemon();
    let archive = d.root.join("ttm/archive");
    fs::create_dir_all(&archive).unwrap();
    // Hold every id of the next seconds as archived.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in 0..5 {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{}", now + s), "+%Y%m%dT%H%M%S"])
            .output()
            .unwrap();
        let stamp = String::from_utf8(out.stdout).unwrap();
        fs::create_dir_all(archive.join(format!("same-{}", stamp.trim()))).unwrap();
    }
    let id = d.create("same");
    assert!(id.ends_with("-2"), "{id} reuses an archived id");
    assert!(!archive.join(&id).exists());
}

// ------------------------------- 10: foreign lines that break the FSM --

fn append_line(d: &Daemon, id: &str, line: &str) {
    let path = d.txn_dir("ttm", id).join("events.ndjson");
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).unwrap();
}

/// The `foreign_line_refused` reports in the log of `id`, by the seq they
/// name.
fn reports(d: &Daemon, id: &str) -> Vec<u64> {
    let text = fs::read_to_string(d.txn_dir("ttm", id).join("events.ndjson")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "foreign_line_refused")
        .filter_map(|e| e["data"]["seq"].as_u64())
        .collect()
}

/// A hand-appended `stage_transition` that reopens a DONE transaction, and
/// one to "BOGUS STAGE": kept in the log, folded as refused, reported once
/// (an event in the log, also across a restart); the stage stays DONE /
/// what it was.
#[test]
fn foreign_lines_that_break_the_fsm_are_kept_refused_and_reported() {
    let mut d = daemon();
    let done = d.create("done one");
    d.ctl(&["commit", "-t", &done]).ok();
    let live = d.create("live one");
    let n_done = check_log(&d.txn_dir("ttm", &done)).len() as u64;
    let n_live = check_log(&d.txn_dir("ttm", &live)).len() as u64;
    let watch = d.spawn_ctl(&["watch", "--json"]);
    ttm_tests::sync_watch(&d, &watch);
    append_line(
        &d,
        &done,
        r#"{"event":"stage_transition","from":"DONE","to":"NEW"}"#,
    );
    append_line(
        &d,
        &live,
        r#"{"event":"stage_transition","from":"NEW","to":"BOGUS STAGE"}"#,
    );

    eventually(&d, "both lines reported", || {
        // Using it loads a finished transaction kept as a summary.
        let _ = d.ctl(&["state", "-t", &done]);
        reports(&d, &done) == [n_done + 1] && reports(&d, &live) == [n_live + 1]
    });
    // Watchers hear the refusal as a warning.
    let deadline = Instant::now() + GUARD;
    loop {
        let line = watch
            .try_line(GUARD)
            .unwrap_or_else(|| panic!("no warning on watch\n{}", d.daemon_stderr()));
        let change: Value = serde_json::from_str(&line).unwrap();
        if change["kind"] == "warning" && change["txn_id"] == live.as_str() {
            let text = change["warning"].as_str().unwrap_or("");
            assert!(text.contains("BOGUS"), "{change}");
            break;
        }
        assert!(Instant::now() < deadline, "no warning for {live}: {line}");
    }
    drop(watch);
    let stage =
        |d: &Daemon, id: &str| d.ctl(&["--json", "state", "-t", id]).json()["stage"].clone();
    assert_eq!(stage(&d, &done), "DONE");
    assert_eq!(stage(&d, &live), "NEW");
    d.restart();
    assert_eq!(stage(&d, &done), "DONE");
    assert_eq!(stage(&d, &live), "NEW");
    assert_eq!(
        reports(&d, &done),
        [n_done + 1],
        "reported again at restart"
    );
    assert_eq!(reports(&d, &live), [n_live + 1]);
    d.ctl(&["transition", "NEW", "-t", &done]).expect_code(4);
}

/// A foreign stage change the FSM allows is folded and announced on
/// `watch` like the daemon's own.
#[test]
fn a_foreign_stage_change_the_fsm_allows_is_announced_on_watch() {
    let d = daemon();
    let id = d.create("watched");
    let watch = d.spawn_ctl(&["watch", "--json"]);
    ttm_tests::sync_watch(&d, &watch);
    append_line(
        &d,
        &id,
        r#"{"event":"stage_transition","from":"NEW","to":"SELECT"}"#,
    );
    let deadline = Instant::now() + GUARD;
    loop {
        let line = watch
            .try_line(GUARD)
            .unwrap_or_else(|| panic!("nothing on watch\n{}", d.daemon_stderr()));
        let change: Value = serde_json::from_str(&line).unwrap();
        if change["txn_id"] == id.as_str() && change["to"] == "SELECT" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stage change for {id}: {line}"
        );
    }
    assert_eq!(d.ctl(&["--json", "state"]).json()["stage"], "SELECT");
}

// --------------------------------- 16.7: hand edits of state.json --

/// RAG's scripts write state.json with jq: a user field they add (`qa_id`)
/// is logged and survives a restart; a stage they write is refused loudly
/// (an event) and the view rebuilt: nothing disappears without a trace.
#[test]
fn a_hand_edit_of_state_json_is_logged_or_refused_never_silently_reverted() {
    let mut d = daemon();
    let id = d.create("rag flow");
    let dir = d.txn_dir("ttm", &id);
    let path = dir.join("state.json");
    let mut edited: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edited["qa_id"] = "qa-42".into();
    edited["stage"] = "EXECUTE".into();
    let tmp = dir.join("state.json.jq");
    fs::write(&tmp, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    fs::rename(&tmp, &path).unwrap();

    // Raw lines: check_log would race the view, written after its line.
    let kinds = |d: &Daemon| -> Vec<String> {
        let log = fs::read_to_string(d.txn_dir("ttm", &id).join("events.ndjson")).unwrap();
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    eventually(&d, "the edit logged", || {
        let k = kinds(&d);
        k.iter().any(|e| e == "state_updated") && k.iter().any(|e| e == "state_edit_refused")
    });
    d.restart();
    let state = d.ctl(&["--json", "state", "-t", &id]).json();
    assert_eq!(
        (state["qa_id"].as_str(), state["stage"].as_str()),
        (Some("qa-42"), Some("NEW")),
        "{state}"
    );
}

/// What the legacy bash `txn_transition EXECUTE` does to a DONE id: a
/// `stage_transition` line without `seq` appended, then `jq '.stage=…'` on
/// state.json. The transaction stays DONE, at run time and after a restart;
/// the line stays in the log, reported.
#[test]
fn a_legacy_bash_transition_never_reopens_a_done_transaction() {
    let mut d = daemon();
    let id = d.create("legacy target");
    d.ctl(&["commit", "-t", &id]).ok();
    let dir = d.txn_dir("ttm", &id);
    append_line(
        &d,
        &id,
        r#"{"ts":"2025-10-18T14:30:25Z","event":"stage_transition","from":"DONE","to":"EXECUTE"}"#,
    );
    let mut view: Value =
        serde_json::from_slice(&fs::read(dir.join("state.json")).unwrap()).unwrap();
    view["stage"] = "EXECUTE".into();
    let tmp = dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(&view).unwrap()).unwrap();
    fs::rename(&tmp, dir.join("state.json")).unwrap();

    let stage = |d: &Daemon| d.ctl(&["--json", "state", "-t", &id]).json()["stage"].clone();
    eventually(&d, "the line reported", || {
        let _ = stage(&d);
        !reports(&d, &id).is_empty()
    });
    assert_eq!(stage(&d), "DONE");
    d.restart();
    assert_eq!(stage(&d), "DONE");
    eventually(&d, "state.json says DONE", || {
        fs::read_to_string(dir.join("state.json")).is_ok_and(|t| t.contains("\"DONE\""))
    });
    assert_eq!(reports(&d, &id).len(), 1);
}

/// Lines cut by hand so that the new last line also lost its newline: the
/// transaction is quarantined at start-up and its log is left exactly as
/// it was found (the newline a whole last line gets back is written only
/// to a log that is served).
#[test]
fn a_quarantined_log_is_left_byte_for_byte_as_found() {
    let mut d = daemon();
    let id = d.create("cut by hand");
    d.ctl(&["event", "one", "-t", &id]).ok();
    d.ctl(&["event", "two", "-t", &id]).ok();
    d.stop();
    let log = d.txn_dir("ttm", &id).join("events.ndjson");
    let text = fs::read_to_string(&log).unwrap();
    // Drop the last line and the newline of the one before it.
    let kept: Vec<&str> = text.lines().collect();
    let cut_text = kept[..kept.len() - 1].join("\n");
    fs::write(&log, &cut_text).unwrap();
    d.start();
    let why =
        quarantined(&d, &id).unwrap_or_else(|| panic!("not quarantined: {}", d.daemon_stderr()));
    assert!(why.contains("lines were removed"), "{why}");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        cut_text,
        "the log was changed"
    );
}
