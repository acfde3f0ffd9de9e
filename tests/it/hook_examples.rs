//! The example hooks in `examples/hooks/`, installed as the README says
//! (symlinks in `<module>/hooks/`) and run by the real ttmd against a
//! local HTTP server this test starts.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use serde_json::Value;
use ttm_tests::{Daemon, HANG, Need};

use crate::hooks::wait_runs;

/// One request the server received: "METHOD /path" and its body.
type Request = (String, String);

/// An HTTP server on a free loopback port answering 200 to everything;
/// each request arrives on the receiver.
fn http_server() -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap_or(0);
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap_or(());
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
            let line: Vec<&str> = first.split_whitespace().take(2).collect();
            let _ = tx.send((line.join(" "), String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (port, rx)
}

/// Links `examples/hooks/<example>` as hook `name` of module `ttm`.
fn install(d: &Daemon, example: &str, name: &str) {
    let dir = d.root.join("ttm/hooks");
    fs::create_dir_all(&dir).unwrap();
    let target = ttm_tests::repo_root()
        .join("examples/hooks")
        .join(example)
        .canonicalize()
        .unwrap();
    std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
}

fn next(rx: &mpsc::Receiver<Request>) -> Request {
    rx.recv_timeout(HANG).expect("the hook's request arrived")
}

#[test]
fn the_webhook_example_posts_the_event() {
    if !Need::tool("curl", "curl").met() {
        return;
    }
    let d = Daemon::start_new();
    let (port, rx) = http_server();
    install(&d, "webhook.sh", "on-commit");
    let url = format!("http://127.0.0.1:{port}/hook\n");
    fs::write(d.root.join("ttm/hooks/webhook.url"), url).unwrap();
    let id = d.create("webhooked");
    d.ctl(&["commit", "-t", &id]).ok();
    let (request, body) = next(&rx);
    assert_eq!(request, "POST /hook");
    let sent: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(sent["event"], "txn_commit");
    assert_eq!(sent["txn_id"], id.as_str());
    assert_eq!(
        (&sent["module"], &sent["stage"]),
        (&"ttm".into(), &"DONE".into())
    );
    assert_eq!(sent["line"]["event"], "txn_commit");
    assert_eq!(sent["line"]["seq"], sent["seq"]);
    assert!(sent["text"].as_str().unwrap().contains(&id));
    let runs = wait_runs(&d, &id, 1);
    assert_eq!(runs[0]["exit_code"], 0, "{runs:?}");
}

#[test]
fn the_healthchecks_example_pings_start_success_and_fail() {
    if !Need::tool("curl", "curl").met() {
        return;
    }
    let d = Daemon::start_new();
    let (port, rx) = http_server();
    for h in ["on-start", "on-commit", "on-fail"] {
        install(&d, "healthchecks.sh", h);
    }
    let url = format!("http://127.0.0.1:{port}/ping/abc\n");
    fs::write(d.root.join("ttm/hooks/healthchecks.url"), url).unwrap();
    let good = d.create("nightly backup");
    d.ctl(&["commit", "-t", &good]).ok();
    let bad = d.create("nightly backup again");
    d.ctl(&["fail", "disk full", "-t", &bad]).ok();
    // Hooks run concurrently: the four pings in any order.
    let mut got: Vec<Request> = (0..4).map(|_| next(&rx)).collect();
    got.sort();
    let paths: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        paths,
        [
            "POST /ping/abc",
            "POST /ping/abc/fail",
            "POST /ping/abc/start",
            "POST /ping/abc/start"
        ]
    );
    // Each ping carries its event's line.
    assert!(got[0].1.contains("\"txn_commit\""), "{got:?}");
    assert!(got[1].1.contains("\"txn_fail\"") && got[1].1.contains("disk full"));
    assert!(
        got[2].1.contains("\"txn_start\"") && got[2].1.contains(&good),
        "{got:?}"
    );
}

#[test]
fn the_notify_example_tells_of_a_failure() {
    let d = Daemon::start_new();
    install(&d, "notify.sh", "on-fail");
    let id = d.create("notified");
    d.ctl(&["fail", "out of coffee", "-t", &id]).ok();
    let runs = wait_runs(&d, &id, 1);
    assert_eq!(runs[0]["exit_code"], 0, "{runs:?}\n{}", d.daemon_stderr());
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !desktop {
        // No desktop session: the line goes to stderr, into ttmd's log.
        let log = d.daemon_stderr();
        let want = format!("ttm ttm: txn_fail {id}: stage FAIL: out of coffee");
        assert!(log.contains(&want), "{want} not in\n{log}");
    }
}
