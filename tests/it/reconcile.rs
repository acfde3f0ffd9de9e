//! Hand edits behind the daemon's back (SPEC §8, last bullet; §9): a
//! transaction directory moved or copied into `txns/`, one removed with
//! `rm -r` or moved away, lines appended to a log by another program, a
//! hand-edited or deleted `state.json`, a directory that cannot be loaded
//! (quarantined) — each against a running daemon, with a follower or a
//! watcher asserting what it receives. And the daemon's own writes do not
//! come back as "changes made behind its back".
//!
//! Notifications are asynchronous: every expectation is polled with a hang
//! guard ([`GUARD`]), never timed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::transport::Channel;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::{AppendEventRequest, Event};
use ttm_tests::{
    CTL_TIMEOUT, Daemon, Follow, Msg, Spawned, check_log, copy_dir, grpc, read_events, read_json,
    run, txn_ref,
};

/// Hang guard of every wait in this module: far beyond the ~1 s the daemon
/// needs, so hitting it means "never happened".
const GUARD: Duration = Duration::from_secs(20);

// --------------------------------------------------------------- helpers --

/// A daemon on a tree whose module `ttm` exists before it starts, so these
/// tests do not depend on the daemon catching a module created while it runs
/// (that has a test of its own below).
fn daemon() -> Daemon {
    Daemon::with_tree(|root| fs::create_dir_all(root.join("ttm/txns")).unwrap())
}

/// Runs `script` with `sh -c` (a person's `mv`, `cp -r`, `rm -r`, `echo >>`);
/// asserts it succeeded.
#[track_caller]
fn sh(script: &str) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    run(cmd, None, CTL_TIMEOUT).ok();
}

/// `path` single-quoted for `sh` (temporary paths hold no quotes).
fn q(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// Polls `cond` every 50 ms until it holds; panics after [`GUARD`] naming
/// `what`, with the daemon's log. A wait for the daemon to notice a change
/// (a state), not a guard on work, so a fixed generous bound.
#[track_caller]
fn eventually(d: &Daemon, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still not so after {GUARD:?}\nttmd's log:\n{}",
            d.daemon_stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `ttmctl --json list`: the served ids and the `quarantined` entries.
#[track_caller]
fn listed(d: &Daemon) -> (Vec<String>, Vec<Value>) {
    let list = d.ctl(&["--json", "list"]).json();
    let ids = list["txns"]
        .as_array()
        .unwrap_or_else(|| panic!("list --json has no txns: {list}"))
        .iter()
        .map(|t| t["txn_id"].as_str().unwrap_or("?").to_owned())
        .collect();
    let quarantined = list["quarantined"]
        .as_array()
        .unwrap_or_else(|| panic!("list --json has no top-level quarantined array: {list}"))
        .clone();
    (ids, quarantined)
}

fn is_listed(d: &Daemon, id: &str) -> bool {
    listed(d).0.iter().any(|i| i == id)
}

/// state.json's `seq`, or `None` while it is missing or not JSON.
fn state_seq(dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(dir.join("state.json")).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["seq"].as_u64()
}

/// The raw lines of `<dir>/events.ndjson`.
fn log_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("events.ndjson"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A synced `ttmctl watch --json` on module ttm.
fn watcher(d: &Daemon) -> Spawned {
    let watch = d.spawn_ctl(&["watch", "--json"]);
    ttm_tests::sync_watch(d, &watch);
    watch
}

/// The watcher's next change; asserts its kind and transaction.
#[track_caller]
fn expect_change(d: &Daemon, watch: &Spawned, kind: &str, id: &str) -> Value {
    let line = watch.try_line(GUARD).unwrap_or_else(|| {
        panic!(
            "the watcher heard nothing for {GUARD:?} (expected {kind} {id})\n\
             ttmd's log:\n{}",
            d.daemon_stderr()
        )
    });
    let change: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("a watch line is not JSON ({e}): {line}"));
    assert_eq!(
        (change["kind"].as_str(), change["txn_id"].as_str()),
        (Some(kind), Some(id)),
        "unexpected change: {change}\nttmd's log:\n{}",
        d.daemon_stderr()
    );
    assert_eq!(change["module"], "ttm", "{change}");
    change
}

/// Asserts the watcher reports nothing more: creates a marker transaction
/// and asserts that its creation is the watcher's next line.
#[track_caller]
fn expect_no_change(d: &Daemon, watch: &Spawned) {
    let marker = d.ctl(&["create", "quiet marker", "--no-activate"]).ok();
    expect_change(d, watch, "created", &marker);
}

/// `ttmctl events --follow --json -t id`, its replay (seq 1..=n) read.
#[track_caller]
fn ctl_follower(d: &Daemon, id: &str, n: u64) -> Spawned {
    let follower = d.spawn_ctl(&["events", "--follow", "--json", "-t", id]);
    for seq in 1..=n {
        assert_eq!(follower.json_line(GUARD)["seq"], seq, "replay of {id}");
    }
    follower
}

/// A followed gRPC `Events` stream of one transaction, driven from a
/// synchronous test (its runtime runs the connection in the background).
struct GrpcFollow {
    rt: tokio::runtime::Runtime,
    _client: TtmClient<Channel>,
    follow: Follow,
}

impl GrpcFollow {
    /// Opens the stream from seq 1 and reads the replay up to the caught-up
    /// marker; returns the stream and the seq it caught up at.
    #[track_caller]
    fn open(d: &Daemon, id: &str) -> (GrpcFollow, u64) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (client, follow, caught_up) = rt.block_on(async {
            let mut client = grpc(&d.socket).await;
            let mut follow = Follow::from(&mut client, id, 1).await;
            let mut last = 0;
            loop {
                match follow.next_significant(GUARD).await {
                    Msg::Event(e) => {
                        assert_eq!(e.seq, last + 1, "replay gap or disorder");
                        last = e.seq;
                    }
                    Msg::CaughtUp(seq) => {
                        assert_eq!(seq, last, "caught up at the wrong seq");
                        break;
                    }
                    Msg::Heartbeat(_) => unreachable!(),
                }
            }
            (client, follow, last)
        });
        (
            GrpcFollow {
                rt,
                _client: client,
                follow,
            },
            caught_up,
        )
    }

    /// The next message other than a heartbeat, the stream's end or its
    /// error status; panics after [`GUARD`] (heartbeats do not extend it).
    #[track_caller]
    fn next(&mut self) -> Result<Option<Msg>, tonic::Status> {
        let follow = &mut self.follow;
        self.rt.block_on(async {
            let deadline = Instant::now() + GUARD;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "the events stream sent only heartbeats for {GUARD:?}"
                );
                match follow.next_result(left).await {
                    Ok(Some(Msg::Heartbeat(_))) => {}
                    other => return other,
                }
            }
        })
    }

    /// The next event.
    #[track_caller]
    fn event(&mut self) -> Event {
        match self.next() {
            Ok(Some(Msg::Event(e))) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// How the stream ends: its error status (panics on an event or a
    /// clean end).
    #[track_caller]
    fn end(&mut self) -> tonic::Status {
        match self.next() {
            Err(status) => status,
            other => panic!("expected the stream to end with an error status, got {other:?}"),
        }
    }

    /// Asserts nothing but heartbeats arrives within `wait`.
    fn quiet(&mut self, wait: Duration) {
        let follow = &mut self.follow;
        self.rt.block_on(follow.assert_quiet(wait));
    }
}

/// A transaction made by another daemon on a tree of its own (stopped
/// since), to be moved or copied into a tree by hand: its daemon (which
/// holds the temporary directory), id, directory and number of events.
fn foreign_txn(description: &str) -> (Daemon, String, PathBuf, u64) {
    let mut src = Daemon::start_new();
    let id = src.create(description);
    src.ctl(&["event", "made.elsewhere", r#"{"n":1}"#]).ok();
    src.ctl(&["transition", "SELECT"]).ok();
    src.stop();
    let dir = src.txn_dir("ttm", &id);
    let n = check_log(&dir).len() as u64;
    (src, id, dir, n)
}

/// Asserts that `id` (with `n` events, in SELECT) is served like any other
/// transaction: listed, readable, followable, writable.
#[track_caller]
fn assert_served(d: &Daemon, id: &str, n: u64) {
    assert!(
        is_listed(d, id),
        "{id} is not listed: {}",
        d.ctl(&["list"]).stdout
    );
    let state = d.ctl(&["state", "-t", id]).json();
    assert_eq!(state["txn_id"], id, "{state}");
    assert_eq!(state["seq"], n, "{state}");
    assert_eq!(state["stage"], "SELECT", "{state}");
    let follower = ctl_follower(d, id, n);
    d.ctl(&["event", "after.arrival", "-t", id]).ok();
    let line = follower.json_line(GUARD);
    assert_eq!(
        (line["seq"].as_u64(), line["event"].as_str()),
        (Some(n + 1), Some("after.arrival")),
        "{line}"
    );
    d.ctl(&["transition", "ASSEMBLE", "-t", id]).ok();
    assert_eq!(follower.json_line(GUARD)["seq"], n + 2);
    check_log(&d.txn_dir("ttm", id));
}

// ------------------------------------------------- directories come in --

/// `mv` of a complete transaction directory into `txns/`: watchers hear
/// `created` (with its stage and seq), and it is served like any other.
#[test]
fn a_transaction_moved_into_txns_is_loaded_and_announced() {
    let d = daemon();
    d.create("seed");
    let watch = watcher(&d);
    let (_src, id, dir, n) = foreign_txn("moved in");

    sh(&format!("mv {} {}", q(&dir), q(&d.root.join("ttm/txns"))));

    let change = expect_change(&d, &watch, "created", &id);
    assert_eq!(change["to"], "SELECT", "{change}");
    assert_eq!(change["seq"], n, "{change}");
    assert_served(&d, &id, n);
    // Its own transition is a change like any other; nothing else came.
    expect_change(&d, &watch, "stage_changed", &id);
    expect_no_change(&d, &watch);
    let (_, quarantined) = listed(&d);
    assert!(quarantined.is_empty(), "{quarantined:?}");
}

/// `cp -r` of a transaction directory into `txns/`: loaded and announced
/// once, like a moved one.
#[test]
fn a_transaction_copied_with_cp_r_is_loaded_and_announced() {
    let d = daemon();
    d.create("seed");
    let watch = watcher(&d);
    let (_src, id, dir, n) = foreign_txn("copied in");

    sh(&format!(
        "cp -r {} {}",
        q(&dir),
        q(&d.root.join("ttm/txns"))
    ));

    eventually(&d, &format!("{id} listed after `cp -r`"), || {
        is_listed(&d, &id)
    });
    let change = expect_change(&d, &watch, "created", &id);
    assert_eq!(change["to"], "SELECT", "{change}");
    assert_eq!(change["seq"], n, "{change}");
    assert_served(&d, &id, n);
    let (_, quarantined) = listed(&d);
    assert!(quarantined.is_empty(), "{quarantined:?}");
}

/// A copy that takes a while (a big ctx/, a slow disk, rsync): the daemon
/// sees the directory before its files. Once the copy is complete the
/// transaction is served and announced, not left quarantined as a
/// half-copied directory.
#[test]
fn a_slowly_copied_transaction_is_loaded_once_complete() {
    let d = daemon();
    d.create("seed");
    let watch = watcher(&d);
    let (_src, id, dir, n) = foreign_txn("copied slowly");
    let target = d.txn_dir("ttm", &id);

    // The directory first, as `cp -r` makes it; the files a moment later.
    fs::create_dir(&target).unwrap();
    thread::sleep(Duration::from_millis(500));
    copy_dir(&dir, &target);

    eventually(
        &d,
        &format!("{id} listed once its copy is complete"),
        || is_listed(&d, &id),
    );
    let change = expect_change(&d, &watch, "created", &id);
    assert_eq!(change["seq"], n, "{change}");
    assert_served(&d, &id, n);
    let (_, quarantined) = listed(&d);
    assert!(quarantined.is_empty(), "{quarantined:?}");
}

// ------------------------------------------------- directories go away --

/// What a removed transaction looks like from outside: its followers
/// (`ttmctl events --follow` and a gRPC stream) end with NOT_FOUND "was
/// removed from the tree" (ttmctl exit 3), watchers hear `removed`, it is
/// not listed, and requests on it fail with NOT_FOUND (exit 3). The other
/// transactions are untouched.
fn assert_removal(d: &Daemon, remove: impl FnOnce(&Path)) -> (String, u64) {
    let id = d.create("doomed");
    d.ctl(&["event", "work", r#"{"n":1}"#, "-t", &id]).ok();
    d.ctl(&["transition", "SELECT", "-t", &id]).ok();
    let keep = d.ctl(&["create", "kept", "--no-activate"]).ok();
    let dir = d.txn_dir("ttm", &id);
    let n = check_log(&dir).len() as u64;
    let watch = watcher(d);
    let follower = ctl_follower(d, &id, n);
    let (mut stream, caught_up) = GrpcFollow::open(d, &id);
    assert_eq!(caught_up, n);

    remove(&dir);

    follower
        .wait(GUARD)
        .expect_code(3)
        .stderr_has(&["was removed from the tree"]);
    let status = stream.end();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("was removed from the tree"),
        "{status:?}"
    );
    let change = expect_change(d, &watch, "removed", &id);
    assert_eq!(change["from"], "SELECT", "{change}");
    assert_eq!(change["seq"], n, "{change}");

    let (ids, quarantined) = listed(d);
    assert!(!ids.contains(&id), "{id} still listed: {ids:?}");
    assert!(ids.contains(&keep), "{keep} not listed: {ids:?}");
    assert!(quarantined.is_empty(), "{quarantined:?}");
    for args in [
        &["event", "late", "-t", &id][..],
        &["transition", "ASSEMBLE", "-t", &id],
        &["update", r#"{"a":1}"#, "-t", &id],
        &["commit", "-t", &id],
        &["state", "-t", &id],
        &["events", "--follow", "-t", &id],
    ] {
        d.ctl(args).expect_code(3);
    }
    assert!(!dir.exists(), "a request recreated the removed directory");

    d.ctl(&["event", "still.fine", "-t", &keep]).ok();
    check_log(&d.txn_dir("ttm", &keep));
    expect_no_change(d, &watch);
    (id, n)
}

/// `rm -r` of a transaction directory.
#[test]
fn a_transaction_removed_with_rm_r_ends_its_followers() {
    let d = daemon();
    assert_removal(&d, |dir| sh(&format!("rm -r {}", q(dir))));
}

/// `mv` of a transaction directory out of the tree; moved back, it is
/// served again, with its history.
#[test]
fn a_transaction_moved_away_ends_its_followers_and_can_come_back() {
    let d = daemon();
    let away = d.tmp().join("away");
    let (id, n) = assert_removal(&d, |dir| sh(&format!("mv {} {}", q(dir), q(&away))));
    assert!(away.join("events.ndjson").is_file());

    let watch = watcher(&d);
    sh(&format!("mv {} {}", q(&away), q(&d.txn_dir("ttm", &id))));
    let change = expect_change(&d, &watch, "created", &id);
    assert_eq!(change["seq"], n, "{change}");
    assert_served(&d, &id, n);
}

// ------------------------------------------------ lines of other programs --

/// `echo '{"event":"note",…}' >> events.ndjson` by another program: the
/// line gets its line number as seq, is folded into state.json and reaches
/// followers; the next event the daemon writes gets the following seq.
#[test]
fn a_line_appended_by_another_program_is_folded_and_streamed() {
    let d = daemon();
    let id = d.create("appended to");
    d.ctl(&["event", "work", "-t", &id]).ok();
    let dir = d.txn_dir("ttm", &id);
    let (mut stream, n) = GrpcFollow::open(&d, &id);
    let follower = ctl_follower(&d, &id, n);

    let line = r#"{"event":"note","ts":"2025-10-18T14:30:22Z"}"#;
    sh(&format!(
        "echo '{line}' >> {}",
        q(&dir.join("events.ndjson"))
    ));

    let e = stream.event();
    assert_eq!(
        (e.seq, e.event.as_str(), e.json.as_str()),
        (n + 1, "note", line)
    );
    assert_eq!(
        follower.line(GUARD),
        line,
        "ttmctl prints the line verbatim"
    );
    eventually(&d, "state.json's seq counts the appended line", || {
        state_seq(&dir) == Some(n + 1)
    });
    assert_eq!(d.ctl(&["state", "-t", &id]).json()["seq"], n + 1);

    d.ctl(&["event", "tick", "-t", &id]).ok();
    let e = stream.event();
    assert_eq!((e.seq, e.event.as_str()), (n + 2, "tick"));
    let next = follower.json_line(GUARD);
    assert_eq!(
        (next["seq"].as_u64(), next["event"].as_str()),
        (Some(n + 2), Some("tick"))
    );
    let lines = log_lines(&dir);
    assert_eq!(lines.len() as u64, n + 2);
    assert_eq!(lines[n as usize], line, "the foreign line was rewritten");
    assert_eq!(state_seq(&dir), Some(n + 2));
    assert!(
        !d.daemon_stderr().contains("not a JSON object"),
        "{}",
        d.daemon_stderr()
    );
    stream.quiet(Duration::from_millis(300));
}

/// A malformed line appended by another program (not JSON): reported in
/// the daemon's log, skipped by the fold but keeps its seq (followers get
/// it under that seq, as it is); the next event the daemon writes gets the
/// following seq. A restart agrees.
#[test]
fn a_malformed_appended_line_keeps_its_seq() {
    let mut d = daemon();
    let id = d.create("garbage appended");
    let dir = d.txn_dir("ttm", &id);
    let stage = d.ctl(&["state", "-t", &id]).json()["stage"].clone();
    let (mut stream, n) = GrpcFollow::open(&d, &id);
    let follower = ctl_follower(&d, &id, n);

    sh(&format!(
        "echo 'this is not json' >> {}",
        q(&dir.join("events.ndjson"))
    ));

    let e = stream.event();
    assert_eq!((e.seq, e.json.as_str()), (n + 1, "this is not json"));
    assert_eq!(follower.line(GUARD), "this is not json");
    eventually(&d, "state.json's seq counts the malformed line", || {
        state_seq(&dir) == Some(n + 1)
    });
    eventually(&d, "the daemon's log reports the malformed line", || {
        let log = d.daemon_stderr();
        log.contains(&format!("line {} of events.ndjson", n + 1))
            && log.contains("not a JSON object")
    });
    let state = d.ctl(&["state", "-t", &id]).json();
    assert_eq!(state["seq"], n + 1, "{state}");
    assert_eq!(state["stage"], stage, "the malformed line changed the fold");

    d.ctl(&["event", "tick", "-t", &id]).ok();
    assert_eq!(stream.event().seq, n + 2);
    assert_eq!(follower.json_line(GUARD)["seq"], n + 2);
    let lines = log_lines(&dir);
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["seq"], n + 2, "{last}");
    assert_eq!(state_seq(&dir), Some(n + 2));
    drop((stream, follower));

    d.restart();
    let state = d.ctl(&["state", "-t", &id]).json();
    assert_eq!(state["seq"], n + 2, "{state}");
    d.ctl(&["event", "after.restart", "-t", &id]).ok();
    assert_eq!(state_seq(&dir), Some(n + 3));
}

// ---------------------------------------------------------- state.json --

/// A hand-edited state.json (SPEC §8): the changed user field becomes a
/// logged `state_updated`, the changed reserved field (`stage`) a
/// `state_edit_refused` event and a warning; both are streamed, the view is
/// rebuilt from the log, and the daemon goes on from the log's state.
#[test]
fn a_hand_edited_state_json_is_logged_or_refused_never_lost() {
    let d = daemon();
    let id = d.create("hand edited");
    d.ctl(&["update", r#"{"owner":"ops"}"#, "-t", &id]).ok();
    let dir = d.txn_dir("ttm", &id);
    let path = dir.join("state.json");
    let (mut stream, n) = GrpcFollow::open(&d, &id);

    let mut edited = read_json(&path);
    edited["stage"] = "DONE".into();
    edited["owner"] = "mallory".into();
    let tmp = dir.join("state.json.edit");
    fs::write(&tmp, serde_json::to_string_pretty(&edited).unwrap() + "\n").unwrap();
    fs::rename(&tmp, &path).unwrap();

    let updated = stream.event();
    assert_eq!(
        (updated.seq, updated.event.as_str()),
        (n + 1, "state_updated")
    );
    assert!(updated.json.contains("mallory"), "{}", updated.json);
    let refused = stream.event();
    assert_eq!(
        (refused.seq, refused.event.as_str()),
        (n + 2, "state_edit_refused")
    );
    assert!(refused.json.contains("stage"), "{}", refused.json);
    eventually(&d, "a warning about the edit in the daemon's log", || {
        d.daemon_stderr().contains("state.json edited by hand")
    });
    let state = d.ctl(&["state", "-t", &id]).json();
    assert_eq!(
        (state["stage"].as_str(), state["owner"].as_str()),
        (Some("NEW"), Some("mallory")),
        "{state}"
    );
    eventually(&d, "state.json rebuilt from the log", || {
        state_seq(&dir) == Some(n + 2)
    });
    assert_eq!(read_json(&path)["stage"], "NEW");

    // The daemon goes on from the log's state, not the edit's.
    d.ctl(&["transition", "SELECT", "-t", &id]).ok();
    assert_eq!(stream.event().seq, n + 3);
    check_log(&dir);
    assert_eq!(read_json(&path)["stage"], "SELECT");
}

/// A deleted state.json is left alone (an `rm -r` of the directory is not
/// fought) until the next write, which recreates it; followers see only
/// that write.
#[test]
fn a_deleted_state_json_is_left_alone_until_the_next_write() {
    let d = daemon();
    let id = d.create("state deleted");
    let dir = d.txn_dir("ttm", &id);
    let path = dir.join("state.json");
    let (mut stream, n) = GrpcFollow::open(&d, &id);

    fs::remove_file(&path).unwrap();
    // Not timing: the absence must hold; a second gives the daemon every
    // chance to (wrongly) recreate it.
    stream.quiet(Duration::from_secs(1));
    assert!(!path.exists(), "state.json recreated behind the deletion");
    // Still served from memory meanwhile.
    assert_eq!(d.ctl(&["state", "-t", &id]).json()["seq"], n);
    assert!(is_listed(&d, &id));

    d.ctl(&["event", "tick", "-t", &id]).ok();
    assert_eq!(stream.event().seq, n + 1);
    eventually(&d, "state.json recreated by the next write", || {
        state_seq(&dir) == Some(n + 1)
    });
    check_log(&dir);
    assert!(
        !d.daemon_stderr().contains("changed behind ttmd's back"),
        "{}",
        d.daemon_stderr()
    );
}

// ------------------------------------------------- our own writes, quiet --

/// Many writes of the daemon's own (creates, hundreds of concurrent
/// appends, updates, transitions, evidence, commit) come back as
/// notifications and find nothing to do: no warnings about changes behind
/// its back, nothing "folded from another program", no extra watch
/// changes. A foreign append at the end is the sentinel: once it is
/// folded, every earlier notification was handled.
#[test]
fn the_daemons_own_writes_do_not_loop_back() {
    const TXNS: usize = 3;
    const APPENDS: usize = 100;
    let d = daemon();
    d.create("seed");
    let watch = watcher(&d);

    let ids: Vec<String> = (0..TXNS)
        .map(|i| {
            d.ctl(&["create", &format!("busy {i}"), "--no-activate"])
                .ok()
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut writers = Vec::new();
        for (w, id) in ids.iter().enumerate() {
            for half in 0..2 {
                let mut c = grpc(&d.socket).await;
                let id = id.clone();
                writers.push(tokio::spawn(async move {
                    for i in 0..APPENDS / 2 {
                        c.append_event(AppendEventRequest {
                            txn: txn_ref("ttm", &id),
                            event: "busy".into(),
                            data_json: format!(r#"{{"w":{w},"h":{half},"i":{i}}}"#),
                            pre: None,
                        })
                        .await
                        .unwrap_or_else(|e| panic!("append {i} to {id} failed: {e}"));
                    }
                }));
            }
        }
        for w in writers {
            w.await.expect("a writer failed");
        }
    });
    let evidence = d.tmp().join("evidence.txt");
    fs::write(&evidence, "some evidence\n").unwrap();
    for id in &ids {
        d.ctl(&["update", r#"{"k":"v"}"#, "-t", id]).ok();
        d.ctl(&["ctx", "add", evidence.to_str().unwrap(), "proof", "-t", id])
            .ok();
        d.ctl(&["transition", "SELECT", "-t", id]).ok();
    }
    d.ctl(&["activate", &ids[0]]).ok();
    d.ctl(&["commit", "-t", &ids[1]]).ok();

    // The sentinel.
    let sentinel = &ids[2];
    let dir = d.txn_dir("ttm", sentinel);
    let n = log_lines(&dir).len() as u64;
    sh(&format!(
        "echo '{{\"event\":\"sentinel\",\"ts\":\"2025-10-18T14:30:22Z\"}}' >> {}",
        q(&dir.join("events.ndjson"))
    ));
    eventually(&d, "the sentinel line folded", || {
        state_seq(&dir) == Some(n + 1)
    });

    let log = d.daemon_stderr();
    for needle in [
        "changed behind ttmd's back",
        "appeared in the tree",
        "removed from the tree",
        "quarantined",
        "not a JSON object",
        "rescanning",
    ] {
        assert!(
            !log.contains(needle),
            "the daemon's own writes came back as {needle:?}:\n{log}"
        );
    }
    let folded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("folded lines appended by another program"))
        .collect();
    assert!(
        folded.len() == 1 && folded[0].contains(sentinel.as_str()),
        "own appends folded as foreign ones (only the sentinel is):\n{}",
        folded.join("\n")
    );

    let mut expected: Vec<(&str, &str)> = ids.iter().map(|id| ("created", id.as_str())).collect();
    for id in &ids {
        expected.push(("stage_changed", id.as_str()));
    }
    expected.push(("activated", &ids[0]));
    expected.push(("committed", &ids[1]));
    for (kind, id) in expected {
        expect_change(&d, &watch, kind, id);
    }
    expect_no_change(&d, &watch);
    for id in &ids {
        let events = read_events(&d.txn_dir("ttm", id));
        let busy = events.iter().filter(|e| e["event"] == "busy").count();
        assert_eq!(busy, APPENDS, "{id}");
        if id != sentinel {
            check_log(&d.txn_dir("ttm", id));
        }
    }
}

// --------------------------------------------------------- quarantine --

/// Transaction directories moved in that cannot be loaded — events.ndjson
/// is a directory; its first line is not `txn_start` — are quarantined:
/// listed with the reason (`--json`: top-level `quarantined`; human: `! id
/// QUARANTINED reason`), never announced as created, requests on them fail
/// with exit 4 and the reason, and they are left exactly as they are.
/// Moved away again, they are no longer listed.
#[test]
fn an_unloadable_transaction_directory_is_quarantined() {
    let d = daemon();
    let seed = d.create("seed");
    let watch = watcher(&d);
    let staging = d.tmp().join("staging");

    let log_is_dir = "log-is-dir-20250101T000000";
    fs::create_dir_all(staging.join(log_is_dir).join("events.ndjson")).unwrap();
    fs::create_dir_all(staging.join(log_is_dir).join("ctx")).unwrap();
    let no_start = "no-start-20250101T000000";
    fs::create_dir_all(staging.join(no_start).join("ctx")).unwrap();
    fs::write(
        staging.join(no_start).join("events.ndjson"),
        "{\"ts\":\"2025-01-01T00:00:00Z\",\"event\":\"note\",\"seq\":1}\n",
    )
    .unwrap();
    let broken = [log_is_dir, no_start];
    let before: Vec<_> = broken
        .iter()
        .map(|id| ttm_tests::snapshot(&staging.join(id)))
        .collect();

    for id in broken {
        sh(&format!(
            "mv {} {}",
            q(&staging.join(id)),
            q(&d.root.join("ttm/txns"))
        ));
    }
    eventually(&d, "both listed as quarantined", || listed(&d).1.len() == 2);

    let (ids, quarantined) = listed(&d);
    assert!(ids.contains(&seed));
    let human = d.ctl(&["list"]).ok();
    for (id, before) in broken.iter().zip(&before) {
        assert!(!ids.iter().any(|i| i == id), "{id} is served: {ids:?}");
        let entry = quarantined
            .iter()
            .find(|q| q["txn_id"] == *id)
            .unwrap_or_else(|| panic!("{id} not quarantined: {quarantined:?}"));
        let reason = entry["reason"].as_str().unwrap_or("");
        assert!(!reason.trim().is_empty(), "{entry}");
        assert!(
            human
                .lines()
                .any(|l| l == format!("! {id}  QUARANTINED  {reason}")),
            "no quarantine line for {id} in `list`:\n{human}"
        );
        for args in [
            &["state", "-t", id][..],
            &["event", "poke", "-t", id],
            &["transition", "SELECT", "-t", id],
            &["events", "-t", id],
        ] {
            d.ctl(args).expect_code(4).stderr_has(&[reason]);
        }
        ttm_tests::assert_same_tree(
            before,
            &ttm_tests::snapshot(&d.txn_dir("ttm", id)),
            &format!("quarantined {id} must be left as it is"),
        );
    }
    assert!(
        d.daemon_stderr().contains("quarantined"),
        "{}",
        d.daemon_stderr()
    );
    // Never announced as created.
    expect_no_change(&d, &watch);

    // Moved away: no longer listed.
    sh(&format!(
        "mv {} {}",
        q(&d.txn_dir("ttm", log_is_dir)),
        q(&d.tmp().join("fixed-later"))
    ));
    eventually(
        &d,
        "a quarantined directory moved away is forgotten",
        || {
            let (_, quarantined) = listed(&d);
            quarantined.len() == 1 && quarantined[0]["txn_id"] == no_start
        },
    );
    d.ctl(&["state", "-t", log_is_dir]).expect_code(3);
    d.ctl(&["event", "fine", "-t", &seed]).ok();
    check_log(&d.txn_dir("ttm", &seed));
}

// ------------------------------------------------- modules made at run time --

/// Modules created while the daemon runs (here by `ttmctl -m <new> create`
/// on a fresh tree, as on a new user's first call) are watched like the
/// others: a line another program appends to a transaction of each is
/// folded. Many modules, because a lost notification shows only sometimes.
#[test]
fn hand_edits_are_seen_in_modules_created_while_running() {
    const MODULES: usize = 40;
    let d = Daemon::start_new();
    for i in 0..MODULES {
        let module = format!("mod{i}");
        let id = d.ctl(&["-m", &module, "create", "new module"]).ok();
        let dir = d.root.join(&module).join("txns").join(&id);
        let n = log_lines(&dir).len() as u64;
        sh(&format!(
            "echo '{{\"event\":\"note\",\"ts\":\"2025-10-18T14:30:22Z\"}}' >> {}",
            q(&dir.join("events.ndjson"))
        ));
        eventually(
            &d,
            &format!("the line appended in module {module} (created while running) folded"),
            || state_seq(&dir) == Some(n + 1),
        );
    }
}
