//! Remote mutations (SPEC §16): writes to a transaction homed on another
//! host go through etcd and are applied by the home's daemon; with the
//! home down they are refused at once (exit 12) naming it.

use std::time::Duration;

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, Progress, Spawned, read_events, wait_until};

/// How long to wait for the mirror to reach etcd: a state to reach, not a
/// guard on work.
const MIRROR: Duration = Duration::from_secs(60);

use super::cluster::member;

/// A transaction homed on `a` that `b` can see (mirrored).
fn homed_on_a(a: &Daemon, b: &Daemon) -> String {
    let id = a.create("homed on a");
    assert!(
        wait_until(MIRROR, || b.ctl(&["state", "-t", &id]).code() == 0),
        "host b never saw {id}"
    );
    id
}

/// `events -t ID --json` on `d`, one value per event.
fn events_of(d: &Daemon, id: &str) -> Vec<Value> {
    d.ctl(&["events", "--json", "-t", id])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn sixty_four_writers_on_two_hosts_append_to_one_transaction_without_loss() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let id = homed_on_a(&a, &b);
    let writers: Vec<(String, Spawned)> = (0..64)
        .map(|w| {
            let d = if w % 2 == 0 { &a } else { &b };
            let data = format!(r#"{{"w":{w}}}"#);
            let cmd = d.ctl_command(&["event", "write", &data, "-t", &id]);
            (format!("writer {w}"), Spawned::spawn(cmd))
        })
        .collect();
    for (what, w) in writers {
        let out = w.wait(ttm_tests::HANG);
        assert_eq!(out.code(), 0, "{what}: {}", out.stderr);
    }
    let log = read_events(&a.txn_dir("ttm", &id));
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gap or repeat"
    );
    let mut ws: Vec<u64> = log
        .iter()
        .filter(|e| e["event"] == "write")
        .map(|e| e["data"]["w"].as_u64().unwrap())
        .collect();
    ws.sort_unstable();
    assert_eq!(ws, (0..64).collect::<Vec<_>>(), "lost or duplicated");
    let progress = Progress::new();
    let home = events_of(&a, &id);
    progress.wait("host b's view to equal the home's log", || {
        (events_of(&b, &id) == home).then_some(())
    });
}

#[test]
fn remote_writes_are_applied_by_the_home_and_refused_with_exit_12_when_it_is_down() {
    if !EtcdCluster::need().met() {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let mut a = member(&etcd, "host-a");
    let b = member(&etcd, "host-b");
    let id = homed_on_a(&a, &b);
    b.ctl(&["event", "remote", "-t", &id]).ok();
    let events = read_events(&a.txn_dir("ttm", &id));
    let remote = events.iter().find(|e| e["event"] == "remote");
    let remote = remote.expect("the home never applied the remote write");
    // A routed write always carries a request id, so a home that applied it
    // but crashed before answering cannot apply it twice.
    let rid = remote["request_id"].as_str().unwrap_or_default();
    assert!(rid.starts_with("routed-host-b-"), "{remote}");
    // Evidence stays on its home host: refused with the reason (exit 4).
    let file = b.tmp().join("report.txt");
    std::fs::write(&file, "evidence\n").unwrap();
    b.ctl(&["ctx", "add", file.to_str().unwrap(), "-t", &id])
        .expect_code(4)
        .stderr_has(&["lives on host host-a", "evidence files stay on their home"]);
    a.stop();
    b.ctl(&["event", "late", "-t", &id])
        .expect_code(12)
        .stderr_has(&["home host host-a is not reachable"]);
}
