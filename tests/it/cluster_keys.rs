//! Cluster mode (SPEC §16): what this host leaves in etcd — the keys of a
//! transaction archived while its deletion could not reach etcd, routed
//! writes' inbox keys, a mirror push etcd keeps refusing.

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, signal, wait_until};

use super::cluster::{ETCD_TIMERS, get, pair, prefix, text, wait_mirrored};

/// How many keys etcd holds of `module/id` (state, lines, evidence).
fn keys_of(etcd: &EtcdCluster, id: &str) -> usize {
    ["state", "ev", "ctx"]
        .iter()
        .map(|kind| prefix(etcd, &format!("/ttm/v1/ttm/{kind}/{id}")).len())
        .sum()
}

/// Whether `d`'s `list --json` has a row for `id`.
fn lists(d: &Daemon, id: &str) -> bool {
    let out = d.ctl(&["list", "--json"]);
    let list: Value = serde_json::from_str(&out.ok()).expect("list json");
    list["txns"]
        .as_array()
        .is_some_and(|rows| rows.iter().any(|r| r["txn_id"] == id))
}

#[test]
fn keys_of_a_transaction_archived_before_a_crash_go_after_the_restart() {
    if !EtcdCluster::need().met() {
        return;
    }
    let mut etcd = EtcdCluster::start(1);
    let (mut a, b) = pair(&etcd);
    let done = a.create("archived while etcd is down");
    a.ctl(&["commit", "-t", &done]).ok();
    let other = a.create("keeps the active link");
    wait_mirrored(&etcd, &a, "ttm", &done);
    wait_mirrored(&etcd, &a, "ttm", &other);
    assert!(lists(&b, &done));
    // The archive is local work and goes on without etcd; the deletion of
    // its keys cannot, and the daemon dies before etcd is back.
    etcd.stop(0);
    a.ctl(&["archive", "--yes"]).ok();
    assert!(
        a.txn_dir("ttm", &done)
            .parent()
            .is_some_and(|txns| !txns.join(&done).exists())
    );
    a.kill9();
    etcd.start_member(0);
    a.start();
    assert!(
        wait_until(ETCD_TIMERS, || keys_of(&etcd, &done) == 0),
        "keys of a transaction archived before the crash stay in etcd\n{}",
        a.daemon_stderr()
    );
    assert_ne!(
        keys_of(&etcd, &other),
        0,
        "a live transaction's keys went too"
    );
    assert!(
        wait_until(ETCD_TIMERS, || !lists(&b, &done)),
        "another host still lists the archived transaction"
    );
    assert!(lists(&b, &other));
}

/// The keys under host `home`'s inbox (module `ttm`), with their leases.
fn inbox(etcd: &EtcdCluster, home: &str) -> Vec<(String, i64)> {
    get(etcd, &format!("/ttm/v1/ttm/inbox/{home}/"), true)
        .iter()
        .map(|kv| (text(kv, "key"), kv["lease"].as_i64().unwrap_or(0)))
        .collect()
}

#[test]
fn routed_writes_leave_no_inbox_keys_even_when_their_caller_dies() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let (a, mut b) = pair(&etcd);
    let id = a.create("written to from host-b");
    wait_mirrored(&etcd, &a, "ttm", &id);
    for i in 0..5 {
        b.ctl(&["event", "routed", &format!(r#"{{"i":{i}}}"#), "-t", &id])
            .ok();
    }
    assert_eq!(inbox(&etcd, "host-a"), vec![], "answered requests stay");
    // The home does not answer (stopped) while the caller's daemon dies
    // with its request waiting: neither the request nor the answer the
    // home gives when it wakes may stay in etcd.
    assert!(signal(a.pid(), "STOP"), "cannot stop host-a's ttmd");
    let caller = b.spawn_ctl(&["event", "orphaned", "-t", &id]);
    let mut waiting = Vec::new();
    let put = wait_until(ETCD_TIMERS, || {
        waiting = inbox(&etcd, "host-a");
        !waiting.is_empty()
    });
    assert!(signal(a.pid(), "CONT"), "cannot continue host-a's ttmd");
    assert!(put, "the routed request never reached the inbox");
    assert!(
        waiting.iter().all(|(_, lease)| *lease != 0),
        "a request not on its caller's session lease: {waiting:?}"
    );
    b.kill9();
    drop(caller);
    assert!(
        wait_until(ETCD_TIMERS, || inbox(&etcd, "host-a").is_empty()),
        "inbox keys of a dead caller stay: {:?}\n{}",
        inbox(&etcd, "host-a"),
        a.daemon_stderr()
    );
}
