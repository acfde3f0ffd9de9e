//! Cluster mode (SPEC §16): real etcd members on loopback, started by the
//! tests, and ttmd daemons with `--cluster` and distinct host ids.

use std::time::Duration;

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, HANG, Spawned, wait_until};

/// How long to wait for etcd's own timers (a lease TTL, an election): a
/// state to reach, not a guard on work.
pub(crate) const ETCD_TIMERS: Duration = Duration::from_secs(60);

/// A daemon of a fresh tree in the cluster as `host`.
pub(crate) fn member(etcd: &EtcdCluster, host: &str) -> Daemon {
    Daemon::start_with_args(&["--cluster", &etcd.endpoints(), "--host-id", host])
}

/// `etcdctl get KEY -w json`'s key-values, decoded (empty when absent).
pub(crate) fn get(etcd: &EtcdCluster, key: &str, prefix: bool) -> Vec<Value> {
    let mut args = vec!["get", key, "-w", "json"];
    if prefix {
        args.push("--prefix");
    }
    let out = etcd.etcdctl(&args);
    let reply: Value = serde_json::from_str(&out.ok()).expect("etcdctl json");
    reply["kvs"].as_array().cloned().unwrap_or_default()
}

/// Every key under `prefix` with its value, read with our own client.
pub(crate) fn prefix(etcd: &EtcdCluster, prefix: &str) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let endpoints = etcd.endpoints();
        let endpoints: Vec<&str> = endpoints.split(',').collect();
        let client = ttm_etcd::Etcd::connect(&endpoints).expect("endpoints");
        let range = client.prefix(prefix.as_bytes()).await.expect("etcd range");
        range
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).expect("utf-8 key"),
                    String::from_utf8(kv.value).expect("utf-8 value"),
                )
            })
            .collect()
    })
}

/// The log lines of `module/id` mirrored in etcd, in key (= seq) order,
/// with their seqs.
pub(crate) fn mirrored(etcd: &EtcdCluster, module: &str, id: &str) -> Vec<(u64, String)> {
    prefix(etcd, &format!("/ttm/v1/{module}/ev/{id}/"))
        .into_iter()
        .map(|(k, v)| {
            let seq = k
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("seq key");
            (seq, v)
        })
        .collect()
}

/// The local log of `module/id`, as (seq, line).
pub(crate) fn local_log(d: &Daemon, module: &str, id: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(d.txn_dir(module, id).join("events.ndjson")).expect("log");
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.to_owned()))
        .collect()
}

/// Waits until etcd mirrors exactly the local log of `module/id`.
#[track_caller]
pub(crate) fn wait_mirrored(etcd: &EtcdCluster, d: &Daemon, module: &str, id: &str) {
    let mut last = Vec::new();
    let done = wait_until(ETCD_TIMERS, || {
        last = mirrored(etcd, module, id);
        last == local_log(d, module, id)
    });
    assert!(
        done,
        "etcd does not mirror the log of {id}:\netcd: {last:?}\nlocal: {:?}\n{}",
        local_log(d, module, id),
        d.daemon_stderr()
    );
}

/// A base64 field of etcdctl's JSON, decoded.
pub(crate) fn text(kv: &Value, field: &str) -> String {
    let encoded = kv[field].as_str().unwrap_or_default();
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(encoded.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 -d");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn a_daemon_registers_its_host_on_its_etcd_lease_and_leaves_with_it() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let mut a = member(&etcd, "host-a");
    let kvs = get(&etcd, "/ttm/v1/host/host-a", false);
    assert_eq!(
        kvs.len(),
        1,
        "host key missing: {kvs:?}\n{}",
        a.daemon_stderr()
    );
    assert_ne!(
        kvs[0]["lease"].as_i64().unwrap_or(0),
        0,
        "not on a lease: {kvs:?}"
    );
    let card: Value = serde_json::from_str(&text(&kvs[0], "value")).expect("card json");
    assert_eq!(card["host"], "host-a");
    assert_eq!(card["pid"], a.pid());
    // A crash leaves the key until the session's TTL runs out, then etcd
    // removes it: the other hosts see this one gone.
    a.kill9();
    assert!(
        wait_until(ETCD_TIMERS, || get(&etcd, "/ttm/v1/host/host-a", false)
            .is_empty()),
        "host key outlived the daemon's etcd lease"
    );
}

#[test]
fn a_clean_stop_leaves_the_cluster_at_once() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let mut a = member(&etcd, "host-a");
    assert_eq!(get(&etcd, "/ttm/v1/host/", true).len(), 1);
    a.stop();
    // Revoked on stop: gone without waiting for the TTL.
    assert!(get(&etcd, "/ttm/v1/host/host-a", false).is_empty());
}

#[test]
fn without_cluster_no_etcd_is_needed_and_a_bad_host_id_is_refused() {
    let d = Daemon::start_new();
    d.create("no cluster");
    let mut bad = Daemon::stopped();
    let out = ttm_tests::run(
        {
            let mut cmd = bad.ttmd_command();
            cmd.args(["--cluster", "http://127.0.0.1:1", "--host-id", "a/b"]);
            cmd
        },
        None,
        ttm_tests::CTL_TIMEOUT,
    );
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("host id"), "{}", out.stderr);
    let _ = &mut bad;
}

#[test]
fn the_mirror_holds_exactly_the_log_in_order_with_state_home_and_evidence() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let a = member(&etcd, "host-a");
    let id = a.create("mirrored");
    for i in 0..25 {
        a.ctl(&["event", "tick", &format!(r#"{{"i":{i}}}"#), "-t", &id])
            .ok();
    }
    let file = a.tmp().join("notes.txt");
    std::fs::write(&file, b"evidence bytes").expect("write evidence");
    a.ctl(&[
        "ctx",
        "add",
        file.to_str().expect("utf-8"),
        "notes",
        "-t",
        &id,
    ])
    .ok();
    a.ctl(&["transition", "EXECUTE", "-t", &id]).ok();
    wait_mirrored(&etcd, &a, "ttm", &id);
    let state = prefix(&etcd, &format!("/ttm/v1/ttm/state/{id}"));
    let state: Value = serde_json::from_str(&state[0].1).expect("state json");
    assert_eq!(state["home"], "host-a");
    assert_eq!(state["stage"], "EXECUTE");
    let local = local_log(&a, "ttm", &id);
    assert_eq!(state["mirror_seq"], local.len() as u64);
    assert_eq!(state["seq"], local.len() as u64);
    let ctx = prefix(&etcd, &format!("/ttm/v1/ttm/ctx/{id}/"));
    assert_eq!(ctx.len(), 1, "{ctx:?}");
    let meta: Value = serde_json::from_str(&ctx[0].1).expect("ctx json");
    assert_eq!(meta["bytes"], 14);
    assert_eq!(meta["sha256"], ttm_tests::sha256_hex(b"evidence bytes"));
}

/// Two daemons on two trees in one cluster, as hosts `host-a` and `host-b`.
pub(crate) fn pair(etcd: &EtcdCluster) -> (Daemon, Daemon) {
    (member(etcd, "host-a"), member(etcd, "host-b"))
}

/// `events -t ID --json` on `d`, one line per event.
pub(crate) fn events_of(d: &Daemon, id: &str) -> String {
    d.ctl(&["events", "--json", "-t", id]).ok()
}

/// Reads `follower` (an `events --follow --json`) until seq `want`,
/// asserting each line is the next seq: no gap, no repeat.
pub(crate) fn read_through(follower: &Spawned, last: &mut u64, want: u64) {
    while *last < want {
        let line = follower.json_line(HANG);
        let seq = line["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {line}"));
        assert_eq!(seq, *last + 1, "{}: gap or repeat at {line}", follower.what);
        *last = seq;
    }
}

#[test]
fn another_host_reads_lists_and_sees_the_hosts() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (a, b) = pair(&etcd);
    let id = a.create("homed on a");
    for i in 0..10 {
        a.ctl(&["event", "tick", &format!(r#"{{"i":{i}}}"#), "-t", &id])
            .ok();
    }
    wait_mirrored(&etcd, &a, "ttm", &id);
    assert_eq!(events_of(&b, &id), events_of(&a, &id));
    let state: Value = serde_json::from_str(&b.ctl(&["state", "-t", &id]).ok()).expect("json");
    assert_eq!(state["txn_id"], id.as_str());
    assert_eq!(state["seq"], local_log(&a, "ttm", &id).len() as u64);
    let listed = b.ctl(&["list"]).ok();
    assert!(
        listed.contains(&id) && listed.contains("[home host-a"),
        "{listed}"
    );
    let hosts = b.ctl(&["hosts"]).ok();
    assert!(
        hosts.contains("host-a") && hosts.contains("host-b (this host)"),
        "{hosts}"
    );
    // Unknown everywhere is still NOT_FOUND.
    b.ctl(&["state", "-t", "nope-20250101T000000"])
        .expect_code(3);
    // status --follow on B ends with the home's outcome.
    let follow = b.spawn_ctl(&["status", "--follow", "-t", &id]);
    follow.line(HANG);
    a.ctl(&["fail", "broke on a", "-t", &id]).ok();
    let out = follow.wait(HANG);
    assert_eq!(
        out.code(),
        9,
        "FAIL on the home ends the follow with 9: {}",
        out.stderr
    );
    let status = b.ctl(&["status", "-t", &id]).ok();
    assert!(
        status.contains("FAIL") && status.contains("home host-a"),
        "{status}"
    );
}

#[test]
fn killing_the_etcd_leader_during_appends_loses_no_acknowledged_event() {
    if !EtcdCluster::need().met() {
        return;
    }
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = pair(&etcd);
    let id = a.create("leader killed");
    let acked = ttm_tests::Progress::new();
    std::thread::scope(|s| {
        let appender = s.spawn(|| {
            for i in 0..40 {
                a.ctl(&["event", "tick", &format!(r#"{{"i":{i}}}"#), "-t", &id])
                    .ok();
                acked.bump();
            }
        });
        acked.wait("appends before the kill", || {
            (acked.get() >= 10).then_some(())
        });
        let leader = etcd.leader().expect("a leader");
        etcd.kill9(leader);
        appender.join().expect("appender");
    });
    // txn_start, activated, then the 40 appends.
    assert_eq!(local_log(&a, "ttm", &id).len(), 42);
    wait_mirrored(&etcd, &a, "ttm", &id);
    assert_eq!(events_of(&b, &id), events_of(&a, &id));
}

#[test]
fn without_quorum_local_work_goes_on_coordination_exits_12_and_the_outbox_drains() {
    if !EtcdCluster::need().met() {
        return;
    }
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = pair(&etcd);
    let id = a.create("outage");
    a.ctl(&["event", "before", "-t", &id]).ok();
    wait_mirrored(&etcd, &a, "ttm", &id);
    etcd.stop(1);
    etcd.stop(2);
    for i in 0..5 {
        a.ctl(&["event", "during", &format!(r#"{{"i":{i}}}"#), "-t", &id])
            .ok();
    }
    a.ctl(&["list"]).ok();
    let out = b.ctl(&["events", "-t", &id]);
    out.expect_code(12).stderr_has(&["etcd"]);
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
    a.ctl(&["hosts"]).expect_code(12);
    etcd.start_member(1);
    etcd.start_member(2);
    for i in 0..3 {
        a.ctl(&["event", "after", &format!(r#"{{"i":{i}}}"#), "-t", &id])
            .ok();
    }
    wait_mirrored(&etcd, &a, "ttm", &id);
    // B refuses at once for a moment after its own failed call; then
    // reads again (waiting for a state, not a guard on work).
    assert!(wait_until(ETCD_TIMERS, || {
        b.ctl(&["events", "--json", "-t", &id]).code() == 0
    }));
    assert_eq!(events_of(&b, &id), events_of(&a, &id));
}

#[test]
fn a_follower_on_another_host_rides_out_compaction_and_restarts() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (mut a, mut b) = pair(&etcd);
    let id = a.create("followed from b");
    wait_mirrored(&etcd, &a, "ttm", &id);
    let follower = b.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    let mut seen = 0;
    // txn_start and activated.
    read_through(&follower, &mut seen, 2);
    let append = |d: &Daemon, n: usize, what: &str| {
        for i in 0..n {
            d.ctl(&["event", what, &format!(r#"{{"i":{i}}}"#), "-t", &id])
                .ok();
        }
    };
    append(&a, 5, "first");
    read_through(&follower, &mut seen, 7);
    let status: Value =
        serde_json::from_str(&etcd.etcdctl(&["endpoint", "status", "-w", "json"]).ok())
            .expect("status json");
    let revision = status[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision");
    etcd.etcdctl(&["compact", &revision.to_string()]).ok();
    append(&a, 5, "compacted");
    read_through(&follower, &mut seen, 12);
    a.restart();
    append(&a, 3, "home.restarted");
    read_through(&follower, &mut seen, 15);
    b.restart();
    append(&a, 3, "follower.restarted");
    read_through(&follower, &mut seen, 18);
    assert_eq!(local_log(&a, "ttm", &id).len(), 18);
}

#[test]
fn archiving_removes_the_mirrored_keys_and_remote_readers_hear_it() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (a, b) = pair(&etcd);
    let done = a.create("done and archived");
    let file = a.tmp().join("e.txt");
    std::fs::write(&file, b"x").expect("write evidence");
    a.ctl(&[
        "ctx",
        "add",
        file.to_str().expect("utf-8"),
        "e",
        "-t",
        &done,
    ])
    .ok();
    a.ctl(&["commit", "-t", &done]).ok();
    let other = a.create("keeps the active link");
    wait_mirrored(&etcd, &a, "ttm", &done);
    wait_mirrored(&etcd, &a, "ttm", &other);
    let follower = b.spawn_ctl(&["events", "--follow", "--json", "-t", &done]);
    follower.json_line(HANG);
    a.ctl(&["archive", "--yes"]).ok();
    let keys_of = |id: &str| {
        ["state", "ev", "ctx"]
            .iter()
            .map(|kind| prefix(&etcd, &format!("/ttm/v1/ttm/{kind}/{id}")).len())
            .sum::<usize>()
    };
    assert!(
        wait_until(ETCD_TIMERS, || keys_of(&done) == 0),
        "keys of an archived transaction left in etcd\n{}",
        a.daemon_stderr()
    );
    assert_ne!(keys_of(&other), 0, "a live transaction's keys went too");
    // The follower on B is told the transaction is gone (NOT_FOUND).
    let out = follower.wait(HANG);
    assert_eq!(out.code(), 3, "{}", out.stderr);
    b.ctl(&["state", "-t", &done]).expect_code(3);
}

#[test]
fn watch_on_another_host_announces_creation_stage_changes_and_the_outcome() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (a, b) = pair(&etcd);
    let watch = b.spawn_ctl(&["watch", "--json"]);
    ttm_tests::sync_watch(&b, &watch);
    // The remote half of the watch is an etcd watch opened beside the
    // local one: one of A's transactions seen means it is open.
    let probe = a.create("probe");
    while watch.json_line(HANG)["txn_id"] != probe.as_str() {}
    let id = a.create("watched from b");
    a.ctl(&["transition", "EXECUTE", "-t", &id]).ok();
    a.ctl(&["event", "noise", "-t", &id]).ok();
    a.ctl(&["commit", "-t", &id]).ok();
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("committed") {
        let change = watch.json_line(HANG);
        if change["txn_id"] == id.as_str() {
            kinds.push(change["kind"].as_str().unwrap_or("?").to_owned());
        }
    }
    assert_eq!(
        kinds,
        ["created", "stage_changed", "committed"],
        "{kinds:?}"
    );
}
