//! Cluster mode (SPEC §16): what this host leaves in etcd — the keys of a
//! transaction archived while its deletion could not reach etcd, routed
//! writes' inbox keys, a mirror push etcd keeps refusing.

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, wait_until};

use super::cluster::{ETCD_TIMERS, pair, prefix, wait_mirrored};

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
