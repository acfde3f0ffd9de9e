//! Several clients at once on one transaction: serialised, nothing lost,
//! compare-and-set has exactly one winner, follow streams see every event.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use ttm_tests::{Daemon, check_log, read_json};

const CLIENTS: usize = 6;

/// Starts `ttmctl args…` for each of `args`, all at once; returns exit codes
/// and stdouts in the same order.
fn all_at_once(d: &Daemon, args: &[Vec<String>]) -> Vec<(i32, String)> {
    let children: Vec<Child> = args
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            d.ctl_command(&a)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            )
        })
        .collect()
}

#[test]
fn concurrent_ctx_adds_get_distinct_numbers() {
    let d = Daemon::start_new();
    let id = d.create("many adds");
    let files: Vec<Vec<String>> = (0..CLIENTS)
        .map(|i| {
            let path = d.tmp().join(format!("f{i}.txt"));
            std::fs::write(&path, format!("file {i}\n")).unwrap();
            vec![
                "ctx".into(),
                "add".into(),
                path.to_str().unwrap().into(),
                "-t".into(),
                id.clone(),
            ]
        })
        .collect();
    let results = all_at_once(&d, &files);
    let mut names: Vec<String> = results
        .iter()
        .map(|(code, name)| {
            assert_eq!(*code, 0, "a concurrent ctx add failed");
            name.clone()
        })
        .collect();
    names.sort();
    let numbers: Vec<String> = names.iter().map(|n| n[..4].to_owned()).collect();
    let expected: Vec<String> = (0..CLIENTS).map(|i| format!("{}_", 100 + 10 * i)).collect();
    assert_eq!(numbers, expected, "{names:?}");
    let dir = d.txn_dir("ttm", &id);
    let events = check_log(&dir);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "evidence_added")
            .count(),
        CLIENTS
    );
    let env = d.ctl(&["ctx", "env"]).ok();
    assert!(env.contains(&format!("e_count={CLIENTS}")), "{env}");
    assert!(
        env.contains("e1=") && env.contains(&format!("e{CLIENTS}=")),
        "{env}"
    );
}

#[test]
fn compare_and_set_has_exactly_one_winner() {
    let d = Daemon::start_new();
    let id = d.create("race");
    let racers: Vec<Vec<String>> = (0..CLIENTS)
        .map(|_| {
            ["transition", "SELECT", "--expect-stage", "NEW", "-t", &id]
                .map(String::from)
                .to_vec()
        })
        .collect();
    let mut codes: Vec<i32> = all_at_once(&d, &racers).into_iter().map(|r| r.0).collect();
    codes.sort();
    // The losers see ABORTED (5), never a second transition.
    let mut expected = vec![0];
    expected.extend(std::iter::repeat_n(5, CLIENTS - 1));
    assert_eq!(codes, expected);
    let events = check_log(&d.txn_dir("ttm", &id));
    assert_eq!(events.len(), 3, "exactly one stage_transition");
}

#[test]
fn concurrent_events_are_all_logged_in_order() {
    let mut d = Daemon::start_new();
    let id = d.create("parallel writers");
    let writers: Vec<Vec<String>> = (0..CLIENTS)
        .map(|i| {
            vec![
                "event".into(),
                "progress".into(),
                format!(r#"{{"writer":{i}}}"#),
                "-t".into(),
                id.clone(),
            ]
        })
        .collect();
    for (code, _) in all_at_once(&d, &writers) {
        assert_eq!(code, 0);
    }
    let dir = d.txn_dir("ttm", &id);
    let events = check_log(&dir);
    let mut writers: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| e["data"]["writer"].as_u64().unwrap())
        .collect();
    writers.sort();
    assert_eq!(writers, (0..CLIENTS as u64).collect::<Vec<_>>());
    assert_eq!(read_json(&dir.join("state.json"))["seq"], 2 + CLIENTS);
    d.assert_state_is_fold("ttm", &id);
}

#[test]
fn events_follow_sees_every_new_event_once() {
    let d = Daemon::start_new();
    let id = d.create("followed");
    let mut child = d
        .ctl_command(&["events", "--follow", "--json", "-t", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("events --follow printed nothing for 10 s")
    };
    // The replay, then live events.
    assert_eq!(next()["seq"], 1);
    assert_eq!(next()["seq"], 2);
    for i in 0..5 {
        d.ctl(&["event", "tick", &format!(r#"{{"i":{i}}}"#)]).ok();
    }
    d.ctl(&["transition", "EXECUTE"]).ok();
    d.ctl(&["commit"]).ok();
    let seen: Vec<Value> = (0..7).map(|_| next()).collect();
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (3..=9).collect::<Vec<_>>());
    assert_eq!(seen[6]["event"], "txn_commit");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a duplicate or extra event"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
}
