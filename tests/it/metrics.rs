//! Metrics (SPEC §15): `ttmctl metrics` and `--metrics-listen` serve the
//! Prometheus text format; read here with the real Python parser
//! (`prometheus_client`, installed by `.ci/run`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use ttm_tests::{CTL_TIMEOUT, Daemon, Need, run};

/// A Python that can `import prometheus_client`, or `None` outside CI.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("TTM_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || ttm_tests::repo_root().join("target/ci-venv/bin/python"),
            PathBuf::from,
        );
    let usable = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    let need = Need::check(
        "a Python with prometheus_client",
        "`.ci/run` installs .ci/requirements-tests.txt into target/ci-venv and sets \
         $TTM_TEST_PYTHON",
        if usable {
            Ok(())
        } else {
            Err(format!("no prometheus_client for {}", python.display()))
        },
    );
    need.met().then_some(python)
}

/// Parses `text` with `prometheus_client.parser`: families (name → type)
/// and samples (`name{labels}` with labels sorted → value).
fn parse(python: &PathBuf, text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
fams, samples = {}, {}
for f in text_string_to_metric_families(sys.stdin.read()):
    fams[f.name] = f.type
    for s in f.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"families": fams, "samples": samples}))
"#;
    let mut cmd = Command::new(python);
    cmd.args(["-c", script]);
    let out: Value = serde_json::from_str(&run(cmd, Some(text.as_bytes()), CTL_TIMEOUT).ok())
        .expect("parser output");
    let fams = out["families"].as_object().unwrap().iter();
    let samples = out["samples"].as_object().unwrap().iter();
    (
        fams.map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
        samples
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect(),
    )
}

/// A free loopback port (bound, then let go for ttmd to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` on 127.0.0.1:port: (status line, headers and body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(ttm_tests::HANG)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_parse_and_match_the_events_written() {
    let Some(python) = python() else {
        return;
    };
    let d = Daemon::start_new();
    let ids: Vec<String> = (0..3).map(|i| d.create(&format!("m{i}"))).collect();
    d.ctl(&["transition", "EXECUTE", "-t", &ids[0]]).ok();
    d.ctl(&["commit", "-t", &ids[0]]).ok();
    d.ctl(&["fail", "broken", "-t", &ids[1]]).ok();
    d.ctl(&["event", "progress", "-t", &ids[2]]).ok();
    // Counters are told by a task that follows the durable events: wait
    // until it has seen the last one.
    let mut samples = BTreeMap::new();
    let mut text = String::new();
    let caught_up = ttm_tests::wait_until(ttm_tests::HANG, || {
        text = d.ctl(&["metrics"]).ok();
        samples = parse(&python, &text).1;
        samples.get("ttm_events_total{event=user,module=ttm}") == Some(&1.0)
    });
    assert!(caught_up, "{text}");
    let (families, _) = parse(&python, &text);
    let want = [
        ("ttm_transactions{module=ttm,stage=DONE}", 1.0),
        ("ttm_transactions{module=ttm,stage=FAIL}", 1.0),
        ("ttm_transactions{module=ttm,stage=NEW}", 1.0),
        // EXECUTE, the commit's move to DONE, the failure's move to FAIL.
        ("ttm_transitions_total{module=ttm}", 3.0),
        ("ttm_commits_total{module=ttm}", 1.0),
        ("ttm_failures_total{module=ttm}", 1.0),
        ("ttm_stalls_total{module=ttm}", 0.0),
        ("ttm_overdue_total{module=ttm}", 0.0),
        ("ttm_events_total{event=txn_start,module=ttm}", 3.0),
        // Each create made its transaction active, logged with it.
        ("ttm_events_total{event=activated,module=ttm}", 3.0),
        (
            "ttm_stage_duration_seconds_count{module=ttm,stage=NEW}",
            2.0,
        ),
        (
            "ttm_stage_duration_seconds_count{module=ttm,stage=EXECUTE}",
            1.0,
        ),
        ("ttm_open_streams{}", 0.0),
        ("ttm_hooks_run_total{}", 0.0),
    ];
    for (name, value) in want {
        assert_eq!(samples.get(name), Some(&value), "{name} in\n{text}");
    }
    assert!(samples["ttm_last_done_timestamp_seconds{module=ttm}"] > 1.7e9);
    assert!(samples["ttm_append_seconds_count{}"] >= 4.0, "{text}");
    assert!(samples["ttm_fsync_seconds_count{}"] >= 1.0, "{text}");
    assert_eq!(families["ttm_stage_duration_seconds"], "histogram");
    assert_eq!(families["ttm_commits"], "counter");
    assert_eq!(families["ttm_transactions"], "gauge");
}

#[test]
fn metric_names_follow_the_prometheus_rules() {
    let d = Daemon::start_new();
    let id = d.create("names");
    d.ctl(&["commit", "-t", &id]).ok();
    let text = d.ctl(&["metrics"]).ok();
    let mut families = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        families += 1;
        let (name, kind) = rest.split_once(' ').unwrap();
        let first = name.chars().next().unwrap();
        assert!(
            (first.is_ascii_alphabetic() || first == '_' || first == ':')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{name}"
        );
        assert!(name.starts_with("ttm_"), "{name}");
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            "gauge" => assert!(!name.ends_with("_total"), "{name}"),
            other => panic!("{name}: unexpected type {other}"),
        }
        // Anything timed is in seconds.
        assert!(!name.contains("_ms") && !name.contains("millis"), "{name}");
    }
    assert!(families >= 15, "{text}");
}

#[test]
fn the_http_endpoint_serves_what_ttmctl_metrics_prints() {
    let port = free_port();
    let d = Daemon::start_with_args(&["--metrics-listen", &port.to_string()]);
    let id = d.create("http");
    d.ctl(&["commit", "-t", &id]).ok();
    let ok = ttm_tests::wait_until(ttm_tests::HANG, || {
        d.ctl(&["metrics"])
            .ok()
            .contains("ttm_commits_total{module=\"ttm\"} 1")
    });
    assert!(ok);
    let (head, body) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    // (`ok()` trims the last newline.)
    assert_eq!(body.trim_end(), d.ctl(&["metrics"]).ok());
    let (head, _) = http_get(port, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A bare port is loopback only.
    assert!(
        d.daemon_stderr().contains(&format!("127.0.0.1:{port}")),
        "{}",
        d.daemon_stderr()
    );
}

#[test]
fn the_last_done_time_survives_a_restart() {
    let mut d = Daemon::start_new();
    let id = d.create("nightly backup");
    d.ctl(&["commit", "-t", &id]).ok();
    let done = |d: &Daemon| {
        let text = d.ctl(&["metrics"]).ok();
        text.lines()
            .find_map(|l| l.strip_prefix("ttm_last_done_timestamp_seconds{module=\"ttm\"} "))
            .map(str::to_string)
    };
    assert!(ttm_tests::wait_until(ttm_tests::HANG, || done(&d).is_some()));
    let before = done(&d).unwrap();
    let ts = &d.state_json("ttm", &id)["last_checkpoint"];
    let want = chrono_epoch(ts.as_str().unwrap());
    assert_eq!(before.parse::<f64>().unwrap(), want);
    d.restart();
    assert_eq!(done(&d).as_deref(), Some(before.as_str()));
}

/// Epoch seconds of `2026-12-01T21:41:18.209Z` (ms precision).
fn chrono_epoch(ts: &str) -> f64 {
    let out = Command::new("date")
        .args(["-u", "-d", ts, "+%s%3N"])
        .output()
        .unwrap();
    let ms: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    ms / 1000.0
}
