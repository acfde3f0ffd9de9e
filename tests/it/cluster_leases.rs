//! Cluster-wide leases (SPEC §13, §16): two daemons on two trees with
//! distinct host ids share `@prod` through real etcd members. A holder
//! killed or paused past its TTL loses the name to the other host's
//! waiter, with a larger token; a paused holder's fenced writes are
//! refused when it wakes; without etcd quorum lease requests exit 12.

use std::time::Duration;

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, HANG, Progress, Spawned, read_events, signal, wait_until};

use super::cluster::{ETCD_TIMERS, member};
use super::leases::script;

/// A holder on `d`: creates a transaction with `@prod` (TTL 2 s), prints
/// its id, and heartbeats while it lives.
fn holder(d: &Daemon) -> (Spawned, String) {
    let s = Spawned::spawn(script(
        d,
        r#"id=$(ttmctl create holder --no-activate --lease @prod --lease-ttl 2s) || exit 1
echo "$id"
while true; do ttmctl heartbeat -t "$id" >/dev/null 2>&1; sleep 0.2; done"#,
    ));
    let id = s.line(HANG);
    (s, id)
}

fn events(d: &Daemon, id: &str) -> Vec<Value> {
    read_events(&d.txn_dir("ttm", id))
}

fn acquired_token(d: &Daemon, id: &str) -> u64 {
    let events = events(d, id);
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "lease_acquired")
        .and_then(|e| e["token"].as_u64())
        .unwrap_or_else(|| panic!("{id} was never granted: {events:#?}"))
}

fn has_event(d: &Daemon, id: &str, kind: &str) -> bool {
    events(d, id).iter().any(|e| e["event"] == kind)
}

/// The create-revision of `@prod`'s holder key, if it exists.
fn holder_key_revision(etcd: &EtcdCluster) -> Option<u64> {
    let out = etcd.etcdctl(&["get", "/ttm/v1/ttm/lease/@prod", "-w", "json"]);
    let reply: Value = serde_json::from_str(&out.ok()).expect("etcdctl json");
    reply["kvs"][0]["create_revision"].as_u64()
}

#[test]
fn a_killed_holders_lease_passes_to_the_other_hosts_waiter_after_its_ttl() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let mut a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let (hold, id_a) = holder(&a);
    let token_a = acquired_token(&a, &id_a);
    // The token is the holder key's create-revision.
    assert_eq!(holder_key_revision(&etcd), Some(token_a));
    // The holder's writes pass their fence.
    a.ctl(&["event", "deploy", "-t", &id_a]).ok();
    let id_b = b.ctl(&["create", "next", "--no-activate"]).ok();
    // Busy on the other host, naming the holder and its host.
    b.ctl(&["lease", "acquire", "@prod", "-t", &id_b, "--no-wait"])
        .expect_code(10)
        .stderr_has(&["@prod", &id_a, "host-a"]);
    let waiter = b.spawn_ctl(&["lease", "acquire", "@prod", "-t", &id_b]);
    // kill -9 the holder's daemon: its key goes with its etcd lease.
    a.kill9();
    hold.kill();
    let token_b: u64 = waiter.line(ETCD_TIMERS).parse().unwrap();
    assert!(token_b > token_a, "{token_b} <= {token_a}");
    assert_eq!(acquired_token(&b, &id_b), token_b);
    assert_eq!(holder_key_revision(&etcd), Some(token_b));
}

#[test]
fn a_paused_holder_daemon_finds_its_fenced_writes_refused_when_it_wakes() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let (hold, id_a) = holder(&a);
    let token_a = acquired_token(&a, &id_a);
    let id_b = b.ctl(&["create", "next", "--no-activate"]).ok();
    let waiter = b.spawn_ctl(&["lease", "acquire", "@prod", "-t", &id_b]);
    // Pause the holder's daemon past the TTL; the other host takes over.
    assert!(signal(a.pid(), "STOP"));
    let token_b: u64 = waiter.line(ETCD_TIMERS).parse().unwrap();
    assert!(token_b > token_a);
    assert!(signal(a.pid(), "CONT"));
    let fence = format!("@prod={token_a}");
    a.ctl(&["event", "deploy", "-t", &id_a, "--fence", &fence])
        .expect_code(5)
        .stderr_has(&["@prod"]);
    hold.kill();
    assert!(
        !has_event(&a, &id_a, "deploy"),
        "a fenced write got through"
    );
    let progress = Progress::new();
    progress.wait("the paused holder to log its lapse", || {
        has_event(&a, &id_a, "lease_expired").then_some(())
    });
    assert_eq!(holder_key_revision(&etcd), Some(token_b));
    let fence = format!("@prod={token_b}");
    b.ctl(&["event", "deploy", "-t", &id_b, "--fence", &fence])
        .ok();
}

#[test]
fn without_quorum_lease_requests_and_remote_writes_exit_12_and_local_work_goes_on() {
    if !EtcdCluster::need().met() {
        return;
    }
    let mut etcd = EtcdCluster::start(3);
    let a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let id = a.ctl(&["create", "before", "--no-activate"]).ok();
    let progress = Progress::new();
    progress.wait("host b to see a's transaction", || {
        (b.ctl(&["state", "-t", &id]).code() == 0).then_some(())
    });
    etcd.stop(1);
    etcd.stop(2);
    // A remote write needs etcd: refused at once, never queued.
    b.ctl(&["event", "remote", "-t", &id])
        .expect_code(12)
        .stderr_has(&["etcd"]);
    a.ctl(&["create", "x", "--no-activate", "--lease", "@prod"])
        .expect_code(12)
        .stderr_has(&["lease", "etcd"]);
    a.ctl(&["lease", "acquire", "@prod", "-t", &id])
        .expect_code(12)
        .stderr_has(&["lease @prod", "etcd"]);
    assert!(
        !has_event(&a, &id, "lease_requested"),
        "refused, yet logged"
    );
    // Local work needs no coordination.
    let local = a.ctl(&["create", "local", "--no-activate"]).ok();
    a.ctl(&["event", "step", "-t", &local]).ok();
    a.ctl(&["commit", "-t", &local]).ok();
    // Quorum back: lease requests and remote writes work again.
    etcd.start_member(1);
    etcd.start_member(2);
    back_after_the_outage(&a, &b, &id, "@prod");
}

#[test]
fn with_every_member_stopped_and_restarted_leases_and_remote_writes_come_back() {
    if !EtcdCluster::need().met() {
        return;
    }
    let mut etcd = EtcdCluster::start(3);
    let a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let id = a.ctl(&["create", "before", "--no-activate"]).ok();
    let progress = Progress::new();
    progress.wait("host b to see a's transaction", || {
        (b.ctl(&["state", "-t", &id]).code() == 0).then_some(())
    });
    // A holder renewing `@prod` all along (every 250 ms while it lives).
    let (hold, _) = holder(&a);
    for i in 0..3 {
        etcd.stop(i);
    }
    a.ctl(&["lease", "acquire", "@prod", "-t", &id])
        .expect_code(12)
        .stderr_has(&["lease @prod", "etcd"]);
    etcd.start_members(&[0, 1, 2]);
    back_after_the_outage(&a, &b, &id, "@stage");
    hold.kill();
}

/// After etcd came back: a lease request on `a` and a remote write from
/// `b` to `id` (homed on `a`) succeed, each retried while refused with
/// exit 12, for as long as etcd's own timers may take (elections, the
/// session's TTL) — a state to reach, not a measure of speed.
fn back_after_the_outage(a: &Daemon, b: &Daemon, id: &str, name: &str) {
    let mut last = String::new();
    let granted = wait_until(ETCD_TIMERS, || {
        let out = a.ctl(&["lease", "acquire", name, "-t", id, "--no-wait"]);
        match out.code() {
            0 => true,
            12 => {
                last = out.stderr;
                std::thread::sleep(Duration::from_millis(100));
                false
            }
            code => panic!(
                "lease request after the outage: exit {code}: {}",
                out.stderr
            ),
        }
    });
    assert!(
        granted,
        "lease requests still refused after the outage: {last}\n{}",
        a.daemon_stderr()
    );
    let written = wait_until(ETCD_TIMERS, || {
        let out = b.ctl(&["event", "remote", "-t", id]);
        match out.code() {
            0 => true,
            12 => {
                last = out.stderr;
                std::thread::sleep(Duration::from_millis(100));
                false
            }
            code => panic!("remote write after the outage: exit {code}: {}", out.stderr),
        }
    });
    assert!(
        written,
        "remote writes still refused after the outage: {last}\n{}",
        b.daemon_stderr()
    );
    let progress = Progress::new();
    progress.wait("the remote write to reach its home", || {
        has_event(a, id, "remote").then_some(())
    });
}

/// `d`'s `leases --json` entry for `@prod`.
fn listed_prod(d: &Daemon) -> Value {
    let listed = d.ctl(&["leases", "--json"]).json();
    listed["leases"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "@prod"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn leases_lists_every_hosts_holder_and_waiters_in_cluster_mode() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let (_hold, id_a) = holder(&a);
    let token_a = acquired_token(&a, &id_a);
    let id_b = b.ctl(&["create", "next", "--no-activate"]).ok();
    let _waiter = b.spawn_ctl(&["lease", "acquire", "@prod", "-t", &id_b]);
    let queued = |l: &Value| {
        l["queue"]
            .as_array()
            .is_some_and(|q| q.len() == 1 && q[0]["txn_id"] == id_b.as_str())
    };
    // Both hosts list A's holder and B's waiter, whoever asks.
    for (d, host) in [(&b, "host-b"), (&a, "host-a")] {
        let mut last = Value::Null;
        let seen = wait_until(ETCD_TIMERS, || {
            last = listed_prod(d);
            queued(&last)
        });
        assert!(seen, "{host} does not list host-b's waiter: {last}");
        let h = &last["holder"];
        assert_eq!(h["txn_id"], id_a.as_str(), "{host}: {last}");
        assert_eq!(h["host"], "host-a", "{host}: {last}");
        assert_eq!(h["token"], token_a, "{host}: {last}");
        assert!(
            h["expires_in_ms"].as_u64().unwrap_or(0) > 0,
            "{host}: {last}"
        );
    }
    let text = b.ctl(&["leases"]).ok();
    assert!(
        text.contains(&id_a) && text.contains("host-a") && text.contains(&id_b),
        "{text}"
    );
}
