//! Cluster mode (SPEC §16): real etcd members on loopback, started by the
//! tests, and ttmd daemons with `--cluster` and distinct host ids.

use std::time::Duration;

use serde_json::Value;
use ttm_tests::etcd::EtcdCluster;
use ttm_tests::{Daemon, wait_until};

/// How long to wait for etcd's own timers (a lease TTL, an election): a
/// state to reach, not a guard on work.
const ETCD_TIMERS: Duration = Duration::from_secs(60);

/// A daemon of a fresh tree in the cluster as `host`.
fn member(etcd: &EtcdCluster, host: &str) -> Daemon {
    Daemon::start_with_args(&["--cluster", &etcd.endpoints(), "--host-id", host])
}

/// `etcdctl get KEY -w json`'s key-values, decoded (empty when absent).
fn get(etcd: &EtcdCluster, key: &str, prefix: bool) -> Vec<Value> {
    let mut args = vec!["get", key, "-w", "json"];
    if prefix {
        args.push("--prefix");
    }
    let out = etcd.etcdctl(&args);
    let reply: Value = serde_json::from_str(&out.ok()).expect("etcdctl json");
    reply["kvs"].as_array().cloned().unwrap_or_default()
}

/// Every key under `prefix` with its value, read with our own client.
fn prefix(etcd: &EtcdCluster, prefix: &str) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = ttm_etcd::Etcd::connect(&[etcd.endpoints()]).expect("endpoints");
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
fn mirrored(etcd: &EtcdCluster, module: &str, id: &str) -> Vec<(u64, String)> {
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
fn local_log(d: &Daemon, module: &str, id: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(d.txn_dir(module, id).join("events.ndjson")).expect("log");
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.to_owned()))
        .collect()
}

/// Waits until etcd mirrors exactly the local log of `module/id`.
#[track_caller]
fn wait_mirrored(etcd: &EtcdCluster, d: &Daemon, module: &str, id: &str) {
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
fn text(kv: &Value, field: &str) -> String {
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
