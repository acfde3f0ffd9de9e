//! Follows ride out daemon restarts (SPEC §17, issue 15 item 1): `events
//! --follow`, `status --follow` and `watch` reconnect and resume from the
//! next seq — no gap, no repeat — and end only on the outcome, on
//! `--timeout` (exit 11), or on an error a restart does not explain.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use ttm_tests::{Daemon, HANG, Progress, Spawned, sync_watch};

/// Reads `follower`'s JSON lines until one has `seq == want`; every line
/// before it must be the seq after the previous one (no gap, no repeat).
#[track_caller]
fn read_through(follower: &Spawned, last: &mut u64, want: u64) {
    while *last < want {
        let line = follower.json_line(HANG);
        let seq = line["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {line}"));
        assert_eq!(seq, *last + 1, "{}: gap or repeat at {line}", follower.what);
        *last = seq;
    }
}

/// The seqs of a `status --follow --json` output: the first line is the
/// summary document (its recent events), then one event per line.
fn status_seqs(stdout: &str) -> Vec<u64> {
    let mut lines = stdout.lines();
    let summary: Value = serde_json::from_str(lines.next().unwrap_or("{}")).unwrap();
    let mut seqs: Vec<u64> = summary["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["seq"].as_u64()).collect())
        .unwrap_or_default();
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap();
        seqs.push(event["seq"].as_u64().unwrap());
    }
    seqs
}

#[test]
fn followers_of_each_kind_ride_out_a_stop_and_a_start() {
    let mut d = Daemon::start_new();
    let id = d.create("followed across a restart");
    let events = d.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    let mut seen = 0;
    read_through(&events, &mut seen, 2);
    let status = d.spawn_ctl(&["status", "--follow", "--json", "-t", &id]);
    status.json_line(HANG);
    let watch = d.spawn_ctl(&["watch", "--json"]);
    sync_watch(&d, &watch);

    d.stop();
    d.start();
    d.ctl(&["event", "after.restart", "-t", &id]).ok();
    read_through(&events, &mut seen, 3);
    assert_eq!(status.json_line(HANG)["event"], "after.restart");
    sync_watch(&d, &watch);

    d.ctl(&["commit", "-t", &id]).ok();
    read_through(&events, &mut seen, 5);
    let out = status.wait(HANG);
    assert_eq!(out.code(), 0, "status --follow: {}", out.stderr);
    assert!(out.stdout.contains("txn_commit"), "{}", out.stdout);
    events.kill();
    watch.kill();
}

#[test]
fn a_status_follow_across_three_restarts_with_writers_sees_every_event_once() {
    let mut d = Daemon::start_new();
    let id = d.create("three restarts");
    let follower = d.spawn_ctl(&["status", "--follow", "--json", "-t", &id]);
    follower.json_line(HANG);

    // Writers retry each event under its own request id until ttmd
    // acknowledges it, so a call cut off by a restart is neither lost nor
    // doubled.
    const WRITERS: usize = 4;
    const EACH: usize = 15;
    let progress = Progress::new();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (root, socket) = (d.root.clone(), d.socket.clone());
            let (id, progress) = (id.clone(), progress.clone());
            thread::spawn(move || {
                for i in 0..EACH {
                    let rid = format!("w{w}-{i}");
                    loop {
                        let mut cmd = ttm_tests::clean_command(ttm_tests::ttmctl_bin());
                        cmd.args(["event", "work", &format!("{{\"w\":{w},\"i\":{i}}}")])
                            .args(["-t", &id, "--request-id", &rid])
                            .env("TETRA_DIR", &root)
                            .env("TTM_SOCKET", &socket)
                            .env("TTM_NO_AUTOSTART", "1");
                        let out = ttm_tests::run(cmd, None, ttm_tests::CTL_TIMEOUT);
                        match out.code() {
                            0 => break,
                            7 | 8 => thread::sleep(Duration::from_millis(50)),
                            code => panic!("writer {w} event {i}: exit {code}: {}", out.stderr),
                        }
                    }
                    progress.bump();
                }
            })
        })
        .collect();
    let written = || progress.get() as usize;
    for round in 1..=3 {
        progress.wait("writers between restarts", || {
            (written() >= round * WRITERS * EACH / 4).then_some(())
        });
        if round == 2 {
            d.kill9();
            d.start();
        } else {
            d.restart();
        }
    }
    progress.wait("writers to finish", || {
        (written() == WRITERS * EACH).then_some(())
    });
    for writer in writers {
        writer.join().unwrap();
    }
    d.ctl(&["commit", "-t", &id]).ok();

    let out = follower.wait(HANG);
    assert_eq!(out.code(), 0, "status --follow: {}", out.stderr);
    let seqs = status_seqs(&out.stdout);
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "repeated events: {seqs:?}");
    let first = seqs[0];
    let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "a gap in the followed events");
    let log = ttm_tests::read_events(&d.txn_dir("ttm", &id));
    let kinds: Vec<&str> = log
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    // txn_start, activated, 60 events, then the commit (its
    // stage_transition and txn_commit): all of it, once.
    assert_eq!(
        *seqs.last().unwrap(),
        4 + (WRITERS * EACH) as u64,
        "events: {kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"txn_commit"));
    assert_eq!(
        log.len() as u64,
        *seqs.last().unwrap(),
        "log and follow differ"
    );
}

#[test]
fn followers_resume_after_twenty_kill_9s_of_the_daemon() {
    let mut d = Daemon::start_new();
    let id = d.create("twenty kills");
    let events = d.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    let status = d.spawn_ctl(&["status", "--follow", "--json", "-t", &id]);
    let watch = d.spawn_ctl(&["watch", "--json"]);
    let mut seen = 0;
    read_through(&events, &mut seen, 1);
    status.json_line(HANG);
    sync_watch(&d, &watch);

    for round in 1..=20 {
        d.kill9();
        d.start();
        d.ctl(&["event", "round", &format!("{{\"n\":{round}}}"), "-t", &id])
            .ok();
        let seq = d.state_json("ttm", &id)["seq"].as_u64().unwrap();
        read_through(&events, &mut seen, seq);
        let line = status.json_line(HANG);
        assert_eq!(line["seq"], seq, "status --follow, round {round}: {line}");
        sync_watch(&d, &watch);
    }
    d.ctl(&["commit", "-t", &id]).ok();
    let out = status.wait(HANG);
    assert_eq!(out.code(), 0, "status --follow: {}", out.stderr);
    events.kill();
    watch.kill();
}

#[test]
fn a_follow_timeout_exits_11_and_a_removed_transaction_ends_the_follow() {
    let d = Daemon::start_new();
    let id = d.create("slow");
    d.ctl(&["status", "--follow", "--timeout", "1s", "-t", &id])
        .expect_code(11)
        .stderr_has(&["gave up waiting", &id]);
    d.ctl(&["events", "--follow", "--timeout", "1s", "-t", &id])
        .expect_code(11)
        .stderr_has(&["--timeout"]);
    d.ctl(&["status", "--timeout", "1s", "-t", &id])
        .expect_code(2);

    // An error a restart does not explain ends the follow at once.
    let follower = d.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    follower.json_line(HANG);
    std::fs::remove_dir_all(d.txn_dir("ttm", &id)).unwrap();
    let out = follower.wait(HANG);
    assert_eq!(out.code(), 3, "a removed transaction: {}", out.stderr);
}
