//! Cluster mode (SPEC §16): what this host leaves in etcd — the keys of a
//! transaction archived while its deletion could not reach etcd, routed
//! writes' inbox keys, a mirror push etcd keeps refusing.

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, signal, wait_until};

use super::cluster::{ETCD_TIMERS, get, local_log, pair, prefix, text, wait_mirrored};

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

/// etcd's count of applied proposals: every write, a refused Txn included.
fn proposals(etcd: &EtcdCluster) -> u64 {
    use std::io::{Read, Write};
    let address = etcd.endpoint(0).replace("http://", "");
    let mut conn = std::net::TcpStream::connect(&address).expect("etcd's client port");
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("ask etcd's metrics");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("etcd's metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_server_proposals_applied_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("etcd_server_proposals_applied_total") as u64
}

/// Lines of `d`'s log that mention `id` and say `what`.
fn said(d: &Daemon, id: &str, what: &str) -> usize {
    d.daemon_stderr()
        .lines()
        .filter(|l| l.contains(id) && l.contains(what))
        .count()
}

#[test]
fn a_push_etcd_keeps_refusing_backs_off_and_is_logged_once() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let a = super::cluster::member(&etcd, "host-a");
    let stray = a.create("a stray line key in etcd");
    let foreign = a.create("homed on another host in etcd");
    wait_mirrored(&etcd, &a, "ttm", &stray);
    wait_mirrored(&etcd, &a, "ttm", &foreign);
    // A key for the next line that this mirror did not put, and a state
    // key another host claims: etcd refuses both transactions' pushes.
    let seq = local_log(&a, "ttm", &stray).len() + 1;
    let next = format!("/ttm/v1/ttm/ev/{stray}/{seq:012}");
    etcd.etcdctl(&["put", &next, "{}"]).ok();
    let claimed = format!("/ttm/v1/ttm/state/{foreign}");
    etcd.etcdctl(&["put", &claimed, r#"{"home":"host-z","mirror_seq":0}"#])
        .ok();
    a.ctl(&["event", "blocked", "-t", &stray]).ok();
    a.ctl(&["event", "blocked", "-t", &foreign]).ok();
    let refusing = "keeps refusing";
    let given_up = "not mirrored to etcd";
    assert!(
        wait_until(ETCD_TIMERS, || said(&a, &stray, refusing) > 0
            && said(&a, &foreign, given_up) > 0),
        "{}",
        a.daemon_stderr()
    );
    // A window of several sweeps (500 ms each): a busy retry would make
    // hundreds of etcd writes in it and a re-woken given-up transaction
    // a warning per sweep.
    let before = proposals(&etcd);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let writes = proposals(&etcd) - before;
    assert!(
        writes <= 10,
        "{writes} etcd writes while both pushes are refused"
    );
    assert_eq!(said(&a, &stray, refusing), 1, "{}", a.daemon_stderr());
    assert_eq!(said(&a, &foreign, given_up), 1, "{}", a.daemon_stderr());
    let list: Value = serde_json::from_str(&a.ctl(&["list", "--json"]).ok()).expect("list json");
    let lag = |id: &str| {
        list["txns"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["txn_id"] == id))
            .map(|r| r["mirror_lag"].as_u64().unwrap_or(0))
    };
    assert_eq!(lag(&stray), Some(1), "{list}");
    assert_eq!(lag(&foreign), Some(1), "{list}");
    // The stray key gone, the next try (at most the cap away) goes through.
    etcd.etcdctl(&["del", &next]).ok();
    wait_mirrored(&etcd, &a, "ttm", &stray);
    // Logged just after etcd took the push.
    assert!(wait_until(ETCD_TIMERS, || said(
        &a,
        &stray,
        "mirror pushes again"
    ) > 0));
    assert_eq!(said(&a, &stray, "mirror pushes again"), 1);
}
