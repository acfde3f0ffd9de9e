//! ttmd as a service (SPEC §8, issue #5): systemd units, socket activation,
//! the notify protocol, graceful shutdown under load, reload, the version
//! handshake and `ttmctl daemon`.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use ttm_proto::v1::{AppendEventRequest, HelloRequest, TxnRef};
use ttm_tests::{
    Daemon, Need, Progress, Spawned, accepts, grpc, read_events, signal, ttmd_bin, wait_timeout,
    wait_until,
};

const T: Duration = Duration::from_secs(20);

/// Runs `systemd-analyze verify` on copies of the units whose `ExecStart`
/// points at the built `ttmd` (verify checks that the binary exists), and
/// demands silence: verify exits 0 even on unknown keys, it only warns.
#[test]
fn systemd_units_verify_cleanly() {
    if !Need::tool("systemd-analyze", "systemd").met() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("rt");
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    for (kind, user) in [("user", true), ("system", false)] {
        let dir = tmp.path().join(kind);
        fs::create_dir(&dir).unwrap();
        for unit in ["ttmd.service", "ttmd.socket"] {
            let text =
                fs::read_to_string(ttm_tests::repo_root().join("systemd").join(kind).join(unit))
                    .unwrap();
            let text: String = text
                .lines()
                .map(|l| match l.strip_prefix("ExecStart=") {
                    Some(rest) => {
                        let args = rest.split_once(' ').map(|(_, a)| a).unwrap_or("");
                        format!("ExecStart={} {args}\n", ttmd_bin().display())
                    }
                    None => format!("{l}\n"),
                })
                .collect();
            fs::write(dir.join(unit), text).unwrap();
        }
        let mut cmd = Command::new("systemd-analyze");
        if user {
            cmd.arg("--user");
        }
        let out = cmd
            .args(["verify", "./ttmd.socket", "./ttmd.service"])
            .current_dir(&dir)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{kind} units: {said}"
        );
    }
}

/// `systemd-socket-activate` passes a listening socket as fd 3 with
/// LISTEN_FDS, as systemd does: ttmd serves it instead of binding its own,
/// and leaves it in place at shutdown (it belongs to systemd).
#[test]
fn socket_activation_serves_the_passed_socket() {
    if !Need::tool("systemd-socket-activate", "systemd").met() {
        return;
    }
    let d = Daemon::stopped();
    let sock = d.tmp().join("act.sock");
    let act = Spawned::spawn({
        let mut c = Command::new("systemd-socket-activate");
        c.arg("-l")
            .arg(&sock)
            .arg(ttmd_bin())
            .arg("--root")
            .arg(&d.root);
        c
    });
    assert!(wait_until(T, || sock.exists()), "no activation socket");
    let ctl = |args: &[&str]| {
        let mut c = ttm_tests::clean_command(ttm_tests::ttmctl_bin());
        c.arg("--socket")
            .arg(&sock)
            .args(args)
            .env("TTM_NO_AUTOSTART", "1");
        ttm_tests::run(c, None, T)
    };
    let id = ctl(&["create", "activated"]).ok();
    assert!(id.starts_with("activated-"), "{id}");
    let status = ctl(&["--json", "daemon", "status"]).json();
    assert_eq!(status["socket"], sock.to_string_lossy().as_ref());
    assert_eq!(status["transactions"], 1);
    ctl(&["daemon", "stop"]).ok();
    assert!(
        sock.exists(),
        "a socket handed over by systemd is not removed"
    );
    act.kill();
}

/// Plays systemd's side of sd_notify: READY=1 comes after recovery (the
/// socket answers as soon as it arrives), WATCHDOG=1 arrives periodically
/// while the daemon answers, STOPPING=1 on SIGTERM, and the exit is 0.
#[test]
fn notify_protocol_ready_watchdog_stopping() {
    let d = Daemon::stopped();
    let notify_path = d.tmp().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = d
        .ttmd_command()
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv_until = |seen: &mut Vec<String>, want: &str, deadline: Duration| {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(n) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    assert!(recv_until(&mut seen, "READY=1", T), "no READY=1: {seen:?}");
    // Ready means served: the first request after READY succeeds at once.
    assert!(accepts(&d.socket));
    let out = d.ctl(&["create", "after ready"]);
    out.ok();
    assert!(
        seen.iter().any(|m| m.contains("STATUS=serving")),
        "READY should carry a STATUS line: {seen:?}"
    );
    // Periodic: three more pings, each one bounded by lack of progress
    // rather than the three together by a total time.
    for ping in 1..=3 {
        assert!(
            recv_until(&mut seen, "WATCHDOG=1", T),
            "WATCHDOG=1 number {ping} never came: {seen:?}"
        );
    }
    assert!(signal(child.id(), "TERM"));
    assert!(
        recv_until(&mut seen, "STOPPING=1", T),
        "no STOPPING=1: {seen:?}"
    );
    let status = wait_timeout(&mut child, T).expect("ttmd did not exit after SIGTERM");
    assert!(status.success(), "{status}");
}

/// SIGTERM while 8 clients append: every append that was acknowledged is in
/// the log after a restart, and every client that got no OK got an error
/// with a message (not a hang).
#[test]
fn sigterm_under_load_keeps_every_acknowledged_append() {
    let mut d = Daemon::start_new();
    let id = d.create("load");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socket = d.socket.clone();
    let pid = d.pid();
    // Every acknowledged append, and every client's end, is progress: the
    // joins fail only when none came for STALL.
    let progress = Progress::new();
    let (acked, errors) = rt.block_on(async move {
        let mut tasks = Vec::new();
        for w in 0..8u32 {
            let socket = socket.clone();
            let id = id.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = grpc(&socket).await;
                let mut acked = Vec::new();
                for n in 0..100_000u32 {
                    let r = c
                        .append_event(AppendEventRequest {
                            txn: Some(TxnRef {
                                module: "ttm".into(),
                                txn_id: id.clone(),
                            }),
                            event: "load".into(),
                            data_json: format!("{{\"w\":{w},\"n\":{n}}}"),
                            pre: None,
                        })
                        .await;
                    progress.bump();
                    match r {
                        Ok(_) => acked.push((w, n)),
                        Err(status) => return (acked, Some(status)),
                    }
                }
                (acked, None)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(pid, "TERM");
        let mut acked = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            let (a, e) = progress.guard("a client", t).await.unwrap();
            acked.extend(a);
            errors.extend(e);
        }
        (acked, errors)
    });
    d.stop();
    assert!(
        !acked.is_empty(),
        "no append was acknowledged before SIGTERM"
    );
    for e in &errors {
        assert!(!e.message().is_empty(), "an error without a message: {e:?}");
    }
    d.start();
    let dir = d.txn_dir("ttm", &d.ctl(&["active"]).ok());
    let logged: std::collections::HashSet<(u64, u64)> = read_events(&dir)
        .iter()
        .filter(|e| e["event"] == "load")
        .map(|e| {
            (
                e["data"]["w"].as_u64().unwrap(),
                e["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    for (w, n) in &acked {
        assert!(
            logged.contains(&(*w as u64, *n as u64)),
            "acknowledged ({w},{n}) lost"
        );
    }
}

/// SIGHUP re-reads topology and FSM files: a broken file is reported and
/// the one in use kept; a good one takes effect.
#[test]
fn sighup_reload_keeps_old_on_bad_files_and_takes_good_ones() {
    let topology = |root: &Path, text: &str| {
        fs::create_dir_all(root.join("ttm")).unwrap();
        fs::write(root.join("ttm/topology.json"), text).unwrap();
    };
    let d = Daemon::with_tree(|root| {
        topology(
            root,
            r#"{"@edge": {"type": "ssh", "host": "edge1.example"}}"#,
        )
    });
    let resolve = |target: &str| {
        let id = d.ctl(&["create", "r", "--target", target]).ok();
        d.ctl(&["resolve", "-t", &id])
    };
    assert_eq!(resolve("@edge").ok(), "edge1.example");

    topology(&d.root, "{ broken");
    let reloaded = d.ctl(&["daemon", "reload"]).ok();
    assert!(
        reloaded.contains("keeping the topology in use"),
        "{reloaded}"
    );
    signal(d.pid(), "HUP");
    assert!(wait_until(T, || d
        .daemon_stderr()
        .contains("keeping the topology in use")));
    assert_eq!(
        resolve("@edge").ok(),
        "edge1.example",
        "old topology still used"
    );

    topology(
        &d.root,
        r#"{"@edge": {"type": "ssh", "host": "edge1.example"}, "@edge2": {"type": "ssh", "host": "edge2.example"}}"#,
    );
    let before = d.daemon_stderr().matches("topology reloaded").count();
    signal(d.pid(), "HUP");
    assert!(wait_until(T, || d
        .daemon_stderr()
        .matches("topology reloaded")
        .count()
        > before));
    assert_eq!(resolve("@edge2").ok(), "edge2.example");

    // The same for a module's FSM.
    let id = d.ctl(&["create", "fsm", "-m", "ops"]).ok();
    fs::write(d.root.join("ops/fsm.json"), "{\"stages\": [").unwrap();
    let report = d.ctl(&["daemon", "reload"]).ok();
    assert!(
        report.contains("module ops") && report.contains("keeping the FSM in use"),
        "{report}"
    );
    d.ctl(&["transition", "SELECT", "-m", "ops", "-t", &id])
        .ok();
    fs::write(
        d.root.join("ops/fsm.json"),
        r#"{"stages": ["NEW", "SELECT", "SHIP"]}"#,
    )
    .unwrap();
    let report = d.ctl(&["daemon", "reload"]).ok();
    assert!(report.contains("module ops: FSM reloaded"), "{report}");
    d.ctl(&["transition", "SHIP", "-m", "ops", "-t", &id]).ok();
}

/// A client of another API generation is refused with one message naming
/// both versions and saying to restart ttmd.
#[test]
fn another_api_generation_is_refused_with_both_versions() {
    let d = Daemon::start_new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let mut c = grpc(&d.socket).await;
        let mut req = tonic::Request::new(HelloRequest::default());
        req.metadata_mut()
            .insert("ttm-api-version", "2".parse().unwrap());
        req.metadata_mut()
            .insert("ttm-client-version", "9.9.9".parse().unwrap());
        let refused = c.hello(req).await.unwrap_err();
        let mut same = tonic::Request::new(HelloRequest::default());
        same.metadata_mut()
            .insert("ttm-api-version", "1".parse().unwrap());
        c.hello(same).await.expect("same generation is served");
        refused
    });
    assert_eq!(status.code(), Code::FailedPrecondition);
    let m = status.message();
    assert!(
        m.contains("9.9.9")
            && m.contains("ttm.v2")
            && m.contains("ttm.v1")
            && m.contains("restart ttmd"),
        "{m}"
    );
}

/// `ttmctl daemon status` reports the facts; `stop` shuts down gracefully
/// and waits for the exit; neither starts a daemon.
#[test]
fn ttmctl_daemon_status_and_stop() {
    let mut d = Daemon::start_new();
    d.create("one");
    let s = d.ctl(&["--json", "daemon", "status"]).json();
    assert_eq!(s["pid"], d.pid());
    assert_eq!(s["transactions"], 1);
    assert_eq!(s["root"], d.root.to_string_lossy().as_ref());
    assert_eq!(s["durability"], "fsync");
    let human = d.ctl(&["daemon", "status"]).ok();
    assert!(
        human.contains("uptime") && human.contains("open streams"),
        "{human}"
    );
    let stopped = d.ctl(&["daemon", "stop"]).ok();
    assert!(stopped.contains("stopped"), "{stopped}");
    d.stop();
    assert!(!d.socket.exists());
    d.ctl(&["daemon", "status"]).expect_code(7);
}

/// Every durability setting ttmd documents (`--help`, README) starts and
/// serves a whole lifecycle, and what it wrote survives a restart.
#[test]
fn every_documented_durability_serves_a_lifecycle() {
    for durability in ["fsync", "strict", "none"] {
        let mut d = Daemon::start_with_args(&["--durability", durability]);
        let s = d.ctl(&["--json", "daemon", "status"]).json();
        assert_eq!(s["durability"], durability);
        let id = d.create(durability);
        d.ctl_stdin(&["ctx", "add", "-", "log"], b"evidence\n").ok();
        d.ctl(&["transition", "EXECUTE"]).ok();
        d.ctl(&["commit"]).ok();
        d.restart();
        assert_eq!(
            d.ctl(&["--json", "state", "-t", &id]).json()["stage"],
            "DONE"
        );
        let dir = d.txn_dir("ttm", &id);
        // start, activated, evidence, transition, the commit's transition, commit
        assert_eq!(ttm_tests::check_log(&dir).len(), 6, "{durability}");
        d.assert_state_is_fold("ttm", &id);
    }
}
