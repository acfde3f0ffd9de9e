//! Streams (SPEC §9): `Events` replay and follow (from a seq, by type, slow
//! followers, caught-up marker, heartbeats), `status --follow`, `watch`, and
//! what followers see when the daemon stops.

use std::time::Duration;

use serde_json::Value;
use tonic::transport::Channel;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::{AppendEventRequest, ChangeKind, CreateRequest, EventsRequest, WatchRequest};
use ttm_tests::{Daemon, Follow, HANG, InProcess, Msg, grpc, txn_ref};

/// Appends a user event `kind` with data `{"i": i}`; returns its seq.
async fn append(c: &mut TtmClient<Channel>, id: &str, kind: &str, i: usize) -> u64 {
    c.append_event(AppendEventRequest {
        txn: txn_ref("ttm", id),
        event: kind.into(),
        data_json: format!(r#"{{"i":{i}}}"#),
        pre: None,
    })
    .await
    .unwrap_or_else(|e| panic!("AppendEvent {kind} {i} failed: {e}"))
    .into_inner()
    .seq
}

/// The lines of a transaction's events.ndjson.
fn log_lines(d: &Daemon, id: &str) -> Vec<String> {
    std::fs::read_to_string(d.txn_dir("ttm", id).join("events.ndjson"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn events_follow_sees_every_new_event_once() {
    let d = Daemon::start_new();
    let id = d.create("followed");
    let follower = d.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    // The replay, then live events.
    assert_eq!(follower.json_line(HANG)["seq"], 1);
    assert_eq!(follower.json_line(HANG)["seq"], 2);
    for i in 0..5 {
        d.ctl(&["event", "tick", &format!(r#"{{"i":{i}}}"#)]).ok();
    }
    d.ctl(&["transition", "EXECUTE"]).ok();
    d.ctl(&["commit"]).ok();
    // The commit is two lines: its stage_transition, then txn_commit.
    let seen: Vec<Value> = (0..8).map(|_| follower.json_line(HANG)).collect();
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (3..=10).collect::<Vec<_>>());
    assert_eq!(seen[7]["event"], "txn_commit");
    assert_eq!(
        follower.try_line(Duration::from_millis(300)),
        None,
        "a duplicate or extra event"
    );
}

/// A follower that sleeps 10 ms per event under 4 writers appending 400
/// events as fast as they can: every event, in order, one caught-up marker
/// right after the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_follower_under_a_fast_writer_misses_nothing() {
    const HISTORY: usize = 30;
    const WRITERS: usize = 4;
    const APPENDS: usize = 100;
    let d = Daemon::start_new();
    let id = d.create("slow follower");
    let mut c = grpc(&d.socket).await;
    for i in 0..HISTORY {
        append(&mut c, &id, "before", i).await;
    }
    let total = (2 + HISTORY + WRITERS * APPENDS) as u64;

    let mut follow = Follow::from(&mut c, &id, 1).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = grpc(&d.socket).await;
        let id = id.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                append(&mut c, &id, "fast", w * APPENDS + i).await;
            }
        }));
    }

    let mut messages = Vec::new();
    loop {
        let msg = follow.next(HANG).await.expect("the stream ended");
        if let Msg::Event(_) = msg {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = matches!(&msg, Msg::Event(e) if e.seq == total);
        messages.push(msg);
        if last {
            break;
        }
    }
    for w in writers {
        w.await.expect("a writer failed");
    }
    follow.assert_quiet(Duration::from_millis(300)).await;

    let seqs: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            Msg::Event(e) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "gap, duplicate or disorder"
    );
    let markers: Vec<(usize, u64)> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            Msg::CaughtUp(seq) => Some((i, *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(markers.len(), 1, "caught_up markers: {markers:?}");
    let (at, seq) = markers[0];
    // Right after the replay: the events before it are exactly 1..=seq.
    assert_eq!(at as u64, seq, "caught_up{{{seq}}} after {at} events");
    assert!(seq >= (2 + HISTORY) as u64, "caught_up before the history");

    let lines = log_lines(&d, &id);
    assert_eq!(lines.len() as u64, total);
    for m in &messages {
        if let Msg::Event(e) = m {
            assert_eq!(e.json, lines[e.seq as usize - 1], "event {} differs", e.seq);
        }
    }
}

/// Following from `from_seq` = k sends k..=N, then caught_up{N}, then new
/// events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_from_k_replays_k_to_n_then_is_caught_up() {
    let d = Daemon::start_new();
    let id = d.create("from k");
    let mut c = grpc(&d.socket).await;
    for i in 0..8 {
        append(&mut c, &id, "tick", i).await;
    }
    let n = 10;
    let lines = log_lines(&d, &id);
    let mut followers = Vec::new();
    for k in [0, 1, 4, n] {
        let mut f = Follow::from(&mut c, &id, k).await;
        for seq in k.max(1)..=n {
            match f.next_significant(HANG).await {
                Msg::Event(e) => {
                    assert_eq!(e.seq, seq, "from {k}");
                    assert_eq!(e.json, lines[seq as usize - 1], "from {k}: line {seq}");
                }
                other => panic!("from {k}: expected event {seq}, got {other:?}"),
            }
        }
        assert_eq!(f.next_significant(HANG).await, Msg::CaughtUp(n), "from {k}");
        followers.push((k, f));
    }
    assert_eq!(append(&mut c, &id, "tock", 0).await, n + 1);
    for (k, f) in &mut followers {
        let msg = f.next_significant(HANG).await;
        assert_eq!(msg.seq(), n + 1, "from {k}: the new event");
        f.assert_quiet(Duration::from_millis(200)).await;
    }
}

/// `from_seq` beyond the end: caught_up{N} at once, then the new events
/// from `from_seq` on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_beyond_the_end_is_caught_up_at_once() {
    let d = Daemon::start_new();
    let id = d.create("beyond");
    let mut c = grpc(&d.socket).await;
    let n = 2;
    let mut next = Follow::from(&mut c, &id, n + 1).await;
    let mut later = Follow::from(&mut c, &id, n + 3).await;
    assert_eq!(next.next_significant(HANG).await, Msg::CaughtUp(n));
    assert_eq!(later.next_significant(HANG).await, Msg::CaughtUp(n));
    for i in 0..4 {
        append(&mut c, &id, "tick", i).await;
    }
    for seq in n + 1..=n + 4 {
        assert_eq!(next.next_significant(HANG).await.seq(), seq);
    }
    // Inclusive from n + 3: the two events before it are not sent.
    for seq in n + 3..=n + 4 {
        assert_eq!(later.next_significant(HANG).await.seq(), seq);
    }
    next.assert_quiet(Duration::from_millis(200)).await;
    later.assert_quiet(Duration::from_millis(200)).await;
}

/// With a type filter only that type arrives, in the replay and live; the
/// caught-up marker still carries the transaction's seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_type_filter_passes_only_that_type() {
    let d = Daemon::start_new();
    let id = d.create("filtered");
    let mut c = grpc(&d.socket).await;
    let mut ticks = Vec::new();
    for i in 0..3 {
        ticks.push(append(&mut c, &id, "tick", i).await);
        append(&mut c, &id, "other", i).await;
    }
    let n = 8;
    let mut f = Follow::open(
        &mut c,
        EventsRequest {
            txn: txn_ref("ttm", &id),
            from_seq: 1,
            event: "tick".into(),
            follow: true,
        },
    )
    .await;
    for seq in ticks {
        match f.next_significant(HANG).await {
            Msg::Event(e) => {
                assert_eq!((e.seq, e.event.as_str()), (seq, "tick"));
            }
            other => panic!("expected tick {seq}, got {other:?}"),
        }
    }
    assert_eq!(f.next_significant(HANG).await, Msg::CaughtUp(n));
    append(&mut c, &id, "other", 9).await;
    let tick = append(&mut c, &id, "tick", 9).await;
    append(&mut c, &id, "other", 10).await;
    match f.next_significant(HANG).await {
        Msg::Event(e) => assert_eq!((e.seq, e.event.as_str()), (tick, "tick")),
        other => panic!("expected the live tick, got {other:?}"),
    }
    f.assert_quiet(Duration::from_millis(200)).await;
}

/// An idle followed stream and an idle watch get heartbeats (200 ms here;
/// the binary's period is 10 s, so this runs ttmd in process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats() {
    let server = InProcess::start(|config| config.heartbeat = Duration::from_millis(200));
    let mut c = grpc(&server.socket).await;
    let id = c
        .create(CreateRequest {
            module: "ttm".into(),
            description: "heartbeats".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .state
        .expect("state")
        .txn_id;
    let mut f = Follow::from(&mut c, &id, 1).await;
    assert_eq!(f.next(HANG).await.expect("event 1").seq(), 1);
    assert_eq!(f.next(HANG).await.expect("event 2").seq(), 2);
    assert_eq!(f.next(HANG).await, Some(Msg::CaughtUp(2)));
    for _ in 0..3 {
        assert_eq!(f.next(HANG).await, Some(Msg::Heartbeat(2)), "idle");
    }
    assert_eq!(append(&mut c, &id, "tick", 0).await, 3);
    assert_eq!(f.next_significant(HANG).await.seq(), 3);
    // Heartbeats go on, with the new seq, and there is no second marker.
    for _ in 0..2 {
        assert_eq!(f.next(HANG).await, Some(Msg::Heartbeat(3)), "idle again");
    }

    let mut watch = c
        .watch(WatchRequest {
            module: "ttm".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    for _ in 0..2 {
        let beat = tokio::time::timeout(HANG, watch.message())
            .await
            .expect("an idle watch got no heartbeat")
            .expect("watch failed")
            .expect("watch ended");
        assert!(
            beat.heartbeat.is_some(),
            "a change on an idle module: {beat:?}"
        );
    }
    drop((f, watch, c));
    server.stop().await;
}

/// `status --follow` (another process ends the transaction): DONE → exit 0,
/// FAIL → exit 9 with the error on stderr; on an already ended transaction
/// it answers at once the same way.
#[test]
fn status_follow_ends_with_the_transaction() {
    let d = Daemon::start_new();
    let done = d.create("will commit");
    let follower = d.spawn_ctl(&["status", "--follow", "--json", "-t", &done]);
    // The summary line comes once it is following.
    assert_eq!(follower.json_line(HANG)["state"]["stage"], "NEW");
    d.ctl(&["event", "progress", r#"{"pct":50}"#, "-t", &done])
        .ok();
    assert_eq!(follower.json_line(HANG)["event"], "progress");
    d.ctl(&["commit", "-t", &done]).ok();
    let out = follower.wait(HANG);
    out.expect_code(0);
    assert!(out.stdout.contains("txn_commit"), "{}", out.stdout);

    let failed = d.create("will fail");
    let follower = d.spawn_ctl(&["status", "--follow", "--json", "-t", &failed]);
    assert_eq!(follower.json_line(HANG)["state"]["stage"], "NEW");
    d.ctl(&["fail", "disk on fire", "-t", &failed]).ok();
    follower
        .wait(HANG)
        .expect_code(9)
        .stderr_has(&["disk on fire"]);

    // Already ended: no waiting (the ctl timeout is the hang guard).
    d.ctl(&["status", "--follow", "-t", &done]).expect_code(0);
    d.ctl(&["status", "--follow", "-t", &failed])
        .expect_code(9)
        .stderr_has(&["disk on fire"]);
}

/// A monitor started on a fresh tree, before the module has any
/// transaction, waits for the first one instead of failing. (gRPC, so the
/// watch is surely open before the creation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_module_without_transactions_sees_the_first_one() {
    let d = Daemon::start_new();
    let mut c = grpc(&d.socket).await;
    let mut watch = c
        .watch(WatchRequest {
            module: "ttm".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("Watch on a module without transactions refused: {e}"))
        .into_inner();
    let id = c
        .create(CreateRequest {
            module: "ttm".into(),
            description: "first".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .state
        .expect("state")
        .txn_id;
    let change = tokio::time::timeout(HANG, watch.message())
        .await
        .expect("watch saw no creation")
        .expect("watch failed")
        .expect("watch ended");
    assert_eq!(
        (change.kind(), change.txn_id.as_str()),
        (ChangeKind::Created, id.as_str())
    );
}

/// `watch --json`: create, transition, activate, commit and fail each show
/// up once, with the kind, the transaction and the stages.
#[test]
fn watch_reports_each_change_once() {
    let d = Daemon::start_new();
    // The module exists (see the test above for a module without any).
    d.create("seed");
    let watch = d.spawn_ctl(&["watch", "--json"]);
    ttm_tests::sync_watch(&d, &watch);

    let a = d.create("watched a");
    d.ctl(&["transition", "SELECT", "-t", &a]).ok();
    let b = d.ctl(&["create", "watched b", "--no-activate"]).ok();
    d.ctl(&["activate", &b]).ok();
    d.ctl(&["commit", "-t", &a]).ok();
    d.ctl(&["fail", "boom", "-t", &b]).ok();
    let expected = [
        ("created", &a, "", "NEW"),
        ("activated", &a, "", "NEW"),
        ("stage_changed", &a, "NEW", "SELECT"),
        ("created", &b, "", "NEW"),
        ("activated", &b, "", "NEW"),
        ("committed", &a, "SELECT", "DONE"),
        ("failed", &b, "NEW", "FAIL"),
    ];
    let mut got = Vec::new();
    for _ in &expected {
        let line = watch.json_line(HANG);
        assert_eq!(line["module"], "ttm", "{line}");
        assert!(
            line["ts"].as_str().is_some_and(|ts| !ts.is_empty()),
            "{line}"
        );
        assert!(line["seq"].as_u64().is_some_and(|seq| seq > 0), "{line}");
        got.push(line);
    }
    let got: Vec<(&str, &str, &str, &str)> = got
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or("?"),
                l["txn_id"].as_str().unwrap_or("?"),
                l["from"].as_str().unwrap_or("?"),
                l["to"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let expected: Vec<(&str, &str, &str, &str)> = expected
        .iter()
        .map(|(k, id, from, to)| (*k, id.as_str(), *from, *to))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        watch.try_line(Duration::from_millis(300)),
        None,
        "a change reported twice or an extra change"
    );
}
