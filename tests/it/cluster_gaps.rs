//! Cluster mode (SPEC §16), continued: a follower whose watch start was
//! compacted, a second daemon with a live host id, other hosts' rows in
//! `list --json`.

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, signal};

use super::cluster::{get, local_log, member, pair, read_through, text, wait_mirrored};

/// etcd's current revision.
fn revision(etcd: &EtcdCluster) -> i64 {
    let status: Value =
        serde_json::from_str(&etcd.etcdctl(&["endpoint", "status", "-w", "json"]).ok())
            .expect("status json");
    status[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// `n` events on `d`'s transaction `id`, each about 16 KiB: enough of
/// them fill etcd's buffers towards a frozen watcher (its HTTP/2 window).
fn append(d: &Daemon, id: &str, n: usize, what: &str) {
    let pad = "x".repeat(16 * 1024);
    for i in 0..n {
        let body = format!(r#"{{"i":{i},"pad":"{pad}"}}"#);
        d.ctl(&["event", what, &body, "-t", id]).ok();
    }
}

#[test]
fn a_follower_whose_watch_start_was_compacted_rereads_without_gap_or_repeat() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (a, b) = pair(&etcd);
    let id = a.create("followed from b across a compaction");
    wait_mirrored(&etcd, &a, "ttm", &id);
    let follower = b.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    let mut seen = 0;
    read_through(&follower, &mut seen, 2);
    // B frozen: its watch stops reading, etcd's send buffers fill and the
    // watch falls behind at a revision that the compaction then removes.
    assert!(signal(b.pid(), "STOP"), "cannot stop host-b's ttmd");
    append(&a, &id, 400, "while.frozen");
    wait_mirrored(&etcd, &a, "ttm", &id);
    etcd.etcdctl(&["compact", &revision(&etcd).to_string()])
        .ok();
    etcd.etcdctl(&["defrag"]).ok();
    assert!(signal(b.pid(), "CONT"), "cannot continue host-b's ttmd");
    read_through(&follower, &mut seen, 402);
    append(&a, &id, 3, "live.again");
    read_through(&follower, &mut seen, 405);
    assert_eq!(local_log(&a, "ttm", &id).len(), 405);
    let log = b.daemon_stderr();
    assert!(
        log.contains("watch start revision compacted"),
        "the compacted path was not taken:\n{log}"
    );
}

/// The `host/<id>` key's value and its lease.
fn host_card(etcd: &EtcdCluster, host: &str) -> Option<Value> {
    let kvs = get(etcd, &format!("/ttm/v1/host/{host}"), false);
    let kv = kvs.first()?;
    serde_json::from_str(&text(kv, "value")).ok()
}

#[test]
fn a_second_daemon_with_a_live_host_id_refuses_to_start() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let mut a = member(&etcd, "host-a");
    let second = Daemon::stopped();
    let out = ttm_tests::run(
        {
            let mut cmd = second.ttmd_command();
            cmd.args(["--cluster", &etcd.endpoints(), "--host-id", "host-a"]);
            cmd
        },
        None,
        ttm_tests::CTL_TIMEOUT,
    );
    assert_ne!(out.code(), 0, "a duplicate host id started: {}", out.stderr);
    assert!(
        out.stderr.contains(r#"host id "host-a""#) && out.stderr.contains("--host-id"),
        "{}",
        out.stderr
    );
    assert!(
        !second.socket.exists(),
        "the refused daemon left its socket"
    );
    let card = host_card(&etcd, "host-a").expect("host-a's key");
    assert_eq!(
        card["pid"],
        a.pid(),
        "the live daemon's key was overwritten"
    );
    // The same tree's daemon after a crash, within the old key's TTL, is
    // the same host coming back: it takes its key over.
    a.kill9();
    a.start();
    let card = host_card(&etcd, "host-a").expect("host-a's key");
    assert_eq!(
        card["pid"],
        a.pid(),
        "the restarted daemon did not take over"
    );
}

/// The row of `id` in `d`'s `list --json`.
fn listed(d: &Daemon, id: &str) -> Value {
    let list: Value = serde_json::from_str(&d.ctl(&["list", "--json"]).ok()).expect("list json");
    list["txns"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["txn_id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[test]
fn list_json_names_each_rows_home_in_cluster_mode_only() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (a, b) = pair(&etcd);
    let remote = a.create("homed on a");
    wait_mirrored(&etcd, &a, "ttm", &remote);
    let local = b.create("homed on b");
    let row = listed(&b, &remote);
    assert_eq!(row["home"], "host-a", "{row}");
    assert_eq!(row["stale"], false, "{row}");
    assert_eq!(row["mirror_lag"], 0, "{row}");
    assert_eq!(listed(&b, &local)["home"], "host-b");
    // state --json of another host's transaction says where it lives too.
    let state: Value =
        serde_json::from_str(&b.ctl(&["state", "-t", &remote]).ok()).expect("state json");
    assert_eq!(state["home"], "host-a", "{state}");
    // Without --cluster the rows are state.json as before.
    let alone = Daemon::start_new();
    let id = alone.create("no cluster");
    let row = listed(&alone, &id);
    assert!(
        row.get("home").is_none() && row.get("stale").is_none(),
        "{row}"
    );
}

#[test]
fn a_mirror_that_etcd_lost_is_pushed_again_after_a_restart() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let mut a = member(&etcd, "host-a");
    let id = a.create("mirrored, then lost by etcd");
    a.ctl(&["event", "before", "{}", "-t", &id]).ok();
    wait_mirrored(&etcd, &a, "ttm", &id);
    // The cursor file now says "all pushed"; etcd loses everything (as a
    // cluster rebuilt from scratch would) while the daemon is down.
    a.stop();
    etcd.etcdctl(&["del", "--prefix", "/ttm/"]).ok();
    a.start();
    wait_mirrored(&etcd, &a, "ttm", &id);
    a.ctl(&["event", "after", "{}", "-t", &id]).ok();
    wait_mirrored(&etcd, &a, "ttm", &id);
}
