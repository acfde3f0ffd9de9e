//! No reply outgrows what standard gRPC clients accept by default (4 MiB):
//! `List` answers in pages that grpcio and ttmctl follow to the end, and a
//! change that would make a state (which replies carry) larger than
//! `limits.state` is refused before anything is written.

use std::path::Path;

use ttm_tests::{Daemon, STALL, paged_ids, read_events, run_watched, tree_activity};

/// As many transactions as make the old single `List` reply pass 4 MiB:
/// each row carries its ~60 KB description (twice in full rows).
const TXNS: usize = 80;

fn big_module(daemon: &Daemon) -> Vec<String> {
    let description = "d".repeat(60_000);
    (0..TXNS)
        .map(|_| {
            daemon
                .ctl(&["create", "--no-activate", &description])
                .ok()
                .trim()
                .to_owned()
        })
        .collect()
}

fn grpcio_list(python: &Path, daemon: &Daemon) -> String {
    let mut cmd = ttm_tests::clean_command(python);
    cmd.arg(ttm_tests::repo_root().join("tests/py/grpcio_cases.py"))
        .arg(&daemon.socket)
        .args(["ttm", "list"])
        .env("TETRA_DIR", &daemon.root)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_watched(cmd, None, STALL, || tree_activity(&daemon.root)).ok()
}

#[test]
fn a_module_whose_listing_passes_4_mib_is_listed_whole_in_pages() {
    let daemon = Daemon::start_new();
    let ids = big_module(&daemon);

    // ttmctl follows the pages: every row, oldest first, as before.
    let table = daemon.ctl(&["list"]).ok();
    let listed: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| ids.iter().any(|id| id == w)))
        .collect();
    assert_eq!(listed, ids, "ttmctl list rows");
    let json = daemon.ctl(&["list", "--json"]).json();
    let rows: Vec<&str> = json["txns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["txn_id"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ids, "ttmctl list --json rows");
    let completed = daemon.ctl(&["__txn-ids"]).ok();
    assert_eq!(completed.lines().count(), TXNS, "completion ids");

    // grpcio with its default 4 MiB receive limit.
    let Some(python) = crate::languages::python() else {
        return;
    };
    let out = grpcio_list(&python, &daemon);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(format!("full {TXNS}").as_str()), "{out}");
    assert_eq!(
        lines.next(),
        Some(format!("brief {TXNS}").as_str()),
        "{out}"
    );
    assert_eq!(lines.collect::<Vec<_>>(), ids, "grpcio rows");
}

#[test]
fn an_update_past_the_state_limit_is_refused_and_writes_nothing() {
    let daemon = Daemon::start_with_args(&["--limit-state", "200000"]);
    let id = daemon.create("big state");
    let dir = daemon.txn_dir("ttm", &id);
    let patch = |key: &str| format!("{{\"{key}\": \"{}\"}}", "v".repeat(120_000));
    daemon
        .ctl_stdin(&["update", "-", "-t", &id], patch("a").as_bytes())
        .ok();
    let state_before = std::fs::read(dir.join("state.json")).unwrap();
    let events_before = read_events(&dir).len();

    let out = daemon.ctl_stdin(&["update", "-", "-t", &id], patch("b").as_bytes());
    out.expect_code(8)
        .stderr_has(&["limits.state", "200000", "nothing was written"]);
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), state_before);
    assert_eq!(
        read_events(&dir).len(),
        events_before,
        "an event was logged"
    );
    // A failure's error text grows the state too, and is bounded alike.
    let error = "e".repeat(120_000);
    daemon
        .ctl(&["fail", &error, "-t", &id])
        .expect_code(8)
        .stderr_has(&["limits.state"]);
    assert_eq!(read_events(&dir).len(), events_before);
    // Smaller changes still go through.
    daemon.ctl(&["update", "{\"small\": 1}", "-t", &id]).ok();
}

/// Another program may append a line of any size to events.ndjson; the
/// `Events` stream sends a note in its place rather than a message no
/// standard client accepts, and the lines after it still arrive.
#[test]
fn a_huge_line_appended_by_another_program_does_not_break_events() {
    let daemon = Daemon::start_new();
    let id = daemon.create("huge line");
    let dir = daemon.txn_dir("ttm", &id);
    let n = read_events(&dir).len() as u64;
    let line = format!(
        "{{\"event\":\"note\",\"ts\":\"2025-10-18T14:30:22Z\",\"blob\":\"{}\"}}\n",
        "b".repeat(5 * 1024 * 1024)
    );
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.ndjson"))
        .unwrap();
    std::io::Write::write_all(&mut log, line.as_bytes()).unwrap();
    drop(log);
    let folded = ttm_tests::wait_until(STALL, || {
        daemon.ctl(&["state", "-t", &id]).json()["seq"] == n + 1
    });
    assert!(folded, "the appended line was never folded in");
    daemon.ctl(&["event", "after", "-t", &id]).ok();

    let out = daemon.ctl(&["--json", "events", "-t", &id]).ok();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, n + 2, "{out:.2000}");
    let note = &lines[n as usize];
    assert_eq!(note["seq"], n + 1, "{note}");
    assert_eq!(note["event"], "note", "{note}");
    assert_eq!(note["ttm_omitted_bytes"], line.len() - 1, "{note}");
    assert_eq!(lines[n as usize + 1]["event"], "after");
}

/// `ListContext` pages like `List`: ctx/ of a transaction with so many (and
/// so long) file names that one reply would pass 4 MiB is listed whole by
/// ttmctl and by grpcio with its default limits.
#[test]
fn a_ctx_listing_that_passes_4_mib_is_listed_whole_in_pages() {
    const FILES: usize = 10_000;
    let mut daemon = Daemon::start_new();
    let id = daemon.create("many files");
    daemon.stop();
    // Files put into ctx/ by hand are listed too; empty ones cost no disk.
    let ctx = daemon.txn_dir("ttm", &id).join("ctx");
    let long = "n".repeat(200);
    for i in 0..FILES {
        std::fs::File::create(ctx.join(format!("{}_{long}.txt", 100 + 10 * i))).unwrap();
    }
    daemon.start();

    let json = daemon.ctl(&["--json", "ctx", "list", "-t", &id]).json();
    let files = json.as_array().unwrap();
    assert_eq!(files.len(), FILES + 2, "ttmctl ctx list --json");
    let numbers: Vec<u64> = files
        .iter()
        .map(|f| f["number"].as_u64().unwrap())
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(numbers, sorted, "numeric order across pages");
    assert_eq!(files[FILES + 1]["evidence_index"], FILES as u64);

    let Some(python) = crate::languages::python() else {
        return;
    };
    let mut cmd = ttm_tests::clean_command(&python);
    cmd.arg(ttm_tests::repo_root().join("tests/py/grpcio_cases.py"))
        .arg(&daemon.socket)
        .args(["ttm", "list-context", &id])
        .env("TETRA_DIR", &daemon.root)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_watched(cmd, None, STALL, || tree_activity(&daemon.root)).ok();
    assert_eq!(out.trim(), format!("files {}", FILES + 2));
}

/// A state that grew past the limit before it existed (or before it was
/// lowered) takes no change that keeps it so large, since each reply would
/// carry it; changes that shrink it are taken.
#[test]
fn an_oversized_state_takes_only_changes_that_shrink_it() {
    let daemon = Daemon::start_new();
    let id = daemon.create("old big state");
    let dir = daemon.txn_dir("ttm", &id);
    let blob = format!("{{\"blob\": \"{}\", \"other\": 1}}", "v".repeat(150_000));
    daemon
        .ctl_stdin(&["update", "-", "-t", &id], blob.as_bytes())
        .ok();
    std::fs::write(daemon.root.join("ttmd.toml"), "[limits]\nstate = 100000\n").unwrap();
    daemon.ctl(&["daemon", "reload"]).ok();
    let events_before = read_events(&dir).len();

    daemon
        .ctl(&["transition", "SELECT", "-t", &id])
        .expect_code(8)
        .stderr_has(&["limits.state", "100000", "Shrink it first"]);
    daemon
        .ctl(&["update", "{\"other\": 2}", "-t", &id])
        .expect_code(8);
    assert_eq!(
        read_events(&dir).len(),
        events_before,
        "an event was logged"
    );

    daemon.ctl(&["update", "{\"blob\": null}", "-t", &id]).ok();
    daemon.ctl(&["transition", "SELECT", "-t", &id]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pages_list_live_and_finished_transactions_in_order() {
    let daemon = Daemon::start_new();
    // Live and finished ones interleaved (finished ones are kept apart, as
    // summaries), with shared creation seconds so the id breaks ties.
    let mut done = Vec::new();
    for i in 0..7 {
        let id = daemon.create(&format!("paged {i}"));
        if i % 2 == 0 {
            daemon.ctl(&["commit", "-t", &id]).ok();
            done.push(id);
        }
    }
    let whole: Vec<String> = daemon.ctl(&["list", "--json"]).json()["txns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["txn_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(whole.len(), 7);
    for size in [1, 2, 3, 7, 8] {
        assert_eq!(
            paged_ids(&daemon.socket, "", size).await,
            whole,
            "size {size}"
        );
    }
    let whole_done: Vec<String> = whole
        .iter()
        .filter(|id| done.contains(id))
        .cloned()
        .collect();
    assert_eq!(paged_ids(&daemon.socket, "DONE", 1).await, whole_done);
}
