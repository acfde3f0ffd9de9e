//! Many clients at once on one transaction — ttmctl processes and in-process
//! gRPC clients: every mutation is serialised, nothing is lost, duplicated or
//! torn, and a follower running meanwhile sees exactly the file.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::process::{Child, Stdio};
use std::thread;

use serde_json::Value;
use tonic::transport::Channel;
use ttm_proto::v1::add_context_request::Part;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::{AddContextHeader, AddContextRequest, AddContextResponse, AppendEventRequest};
use ttm_tests::{Daemon, HANG, Progress, check_log, grpc, read_json, sha256_hex, txn_ref};

/// Starts `ttmctl args…` for each of `args`, all at once; returns exit codes
/// and stdouts in the same order.
fn all_at_once(d: &Daemon, args: &[Vec<String>]) -> Vec<(i32, String)> {
    let children: Vec<Child> = args
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            d.ctl_command(&a)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            )
        })
        .collect()
}

#[test]
fn concurrent_ctx_adds_get_distinct_numbers() {
    const CLIENTS: usize = 6;
    let d = Daemon::start_new();
    let id = d.create("many adds");
    let files: Vec<Vec<String>> = (0..CLIENTS)
        .map(|i| {
            let path = d.tmp().join(format!("f{i}.txt"));
            fs::write(&path, format!("file {i}\n")).unwrap();
            vec![
                "ctx".into(),
                "add".into(),
                path.to_str().unwrap().into(),
                "-t".into(),
                id.clone(),
            ]
        })
        .collect();
    let results = all_at_once(&d, &files);
    let mut names: Vec<String> = results
        .iter()
        .map(|(code, name)| {
            assert_eq!(*code, 0, "a concurrent ctx add failed");
            name.clone()
        })
        .collect();
    names.sort();
    let numbers: Vec<String> = names.iter().map(|n| n[..4].to_owned()).collect();
    let expected: Vec<String> = (0..CLIENTS).map(|i| format!("{}_", 100 + 10 * i)).collect();
    assert_eq!(numbers, expected, "{names:?}");
    let dir = d.txn_dir("ttm", &id);
    let events = check_log(&dir);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "evidence_added")
            .count(),
        CLIENTS
    );
    let env = d.ctl(&["ctx", "env"]).ok();
    assert!(env.contains(&format!("e_count={CLIENTS}")), "{env}");
    assert!(
        env.contains("e1=") && env.contains(&format!("e{CLIENTS}=")),
        "{env}"
    );
}

/// 32 writer threads each run `ttmctl event` 100 times on the active
/// transaction while `ttmctl events --follow --json` runs from seq 1: the
/// follower prints exactly the file, line for line.
#[test]
fn ctl_writers_and_a_follower_agree_on_every_line() {
    const WRITERS: usize = 32;
    const CALLS: usize = 100;
    let mut d = Daemon::start_new();
    let id = d.create("many writers");
    let dir = d.txn_dir("ttm", &id);

    let follower = d.spawn_ctl(&["events", "--follow", "--json", "-t", &id]);
    // The replay (txn_start, activated): the follower is connected.
    let mut seen = vec![follower.line(HANG), follower.line(HANG)];

    thread::scope(|s| {
        for w in 0..WRITERS {
            let d = &d;
            s.spawn(move || {
                for n in 0..CALLS {
                    d.ctl(&["event", "work", &format!(r#"{{"w":{w},"n":{n}}}"#)])
                        .ok();
                }
            });
        }
    });

    let n = 2 + WRITERS * CALLS;
    let events = check_log(&dir); // seq == line number, state.json's seq == N
    assert_eq!(events.len(), n, "the log's line count");
    while seen.len() < n {
        match follower.next_line(HANG) {
            Some(line) => seen.push(line),
            None => panic!(
                "the follower ended after {} of {n} lines: {}",
                seen.len(),
                follower.wait(HANG).stderr
            ),
        }
    }
    let file = fs::read_to_string(dir.join("events.ndjson")).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    for (i, (got, want)) in seen.iter().zip(&lines).enumerate() {
        assert_eq!(
            got,
            want,
            "the follower's line {} differs from the file's",
            i + 1
        );
    }
    assert_eq!(
        follower.try_line(std::time::Duration::from_millis(300)),
        None,
        "the follower printed more lines than the file has"
    );
    follower.kill();

    let mut pairs = HashSet::new();
    for e in events.iter().filter(|e| e["event"] == "work") {
        let pair = (
            e["data"]["w"].as_u64().unwrap(),
            e["data"]["n"].as_u64().unwrap(),
        );
        assert!(pairs.insert(pair), "{pair:?} logged twice");
    }
    assert_eq!(pairs.len(), WRITERS * CALLS, "every (w, n) once");
    assert_eq!(
        read_json(&dir.join("state.json"))["seq"].as_u64(),
        Some(n as u64)
    );
    d.assert_state_is_fold("ttm", &id);
}

/// Pseudo-random content of adder `i`: sizes from a few bytes to ~0.6 MB.
fn blob(i: usize) -> Vec<u8> {
    let len = match i % 4 {
        0 => 17 + i,
        1 => 70_000 + 1_009 * i,
        2 => 300_000 + 7_919 * i,
        _ => 640_000 - 3_331 * i,
    };
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Streams `data` as a ctx file named `name` in 64 KiB chunks.
async fn add_context(
    c: &mut TtmClient<Channel>,
    id: &str,
    name: &str,
    data: &[u8],
) -> AddContextResponse {
    const CHUNK: usize = 64 * 1024;
    let mut messages = vec![AddContextRequest {
        part: Some(Part::Header(AddContextHeader {
            txn: txn_ref("ttm", id),
            file_name: name.to_owned(),
            description: String::new(),
            pre: None,
        })),
    }];
    messages.extend(data.chunks(CHUNK).map(|chunk| AddContextRequest {
        part: Some(Part::Chunk(chunk.to_vec())),
    }));
    messages.push(AddContextRequest {
        part: Some(Part::End(ttm_proto::v1::AddContextEnd {
            bytes: data.len() as u64,
            sha256: String::new(),
        })),
    });
    c.add_context(tokio_stream::iter(messages))
        .await
        .unwrap_or_else(|e| panic!("AddContext {name} failed: {e}"))
        .into_inner()
}

/// The ctx digest as README defines it: sha256 over, for each ctx file
/// sorted by name, `name NUL length NUL sha256-hex LF`.
fn ctx_digest(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut text = Vec::new();
    for (name, bytes) in files {
        text.extend_from_slice(
            format!("{name}\0{}\0{}\n", bytes.len(), sha256_hex(bytes)).as_bytes(),
        );
    }
    sha256_hex(&text)
}

/// 64 gRPC clients, each on its own connection, append 1000 events each
/// while 16 others stream ctx files (up to ~0.6 MB in 64 KiB chunks).
/// Run with `--durability none` to keep it short in a debug build; what is
/// checked (order, counts, checksums) does not depend on syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_appenders_and_ctx_adders_lose_nothing() {
    const APPENDERS: usize = 64;
    const APPENDS: usize = 1000;
    const ADDERS: usize = 16;
    let d = Daemon::start_with_args(&["--durability", "none"]);
    let id = d.create("grpc load");
    let dir = d.txn_dir("ttm", &id);
    // Every acknowledged append or stored file is a step: the joins below
    // fail only when no step was acknowledged for STALL, however long the
    // whole load takes on a busy machine.
    let progress = Progress::new();

    let mut appenders = Vec::new();
    for client in 0..APPENDERS {
        let mut c = grpc(&d.socket).await;
        let id = id.clone();
        let progress = progress.clone();
        appenders.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(APPENDS);
            for n in 0..APPENDS {
                let reply = c
                    .append_event(AppendEventRequest {
                        txn: txn_ref("ttm", &id),
                        event: "load".into(),
                        data_json: format!(r#"{{"c":{client},"n":{n}}}"#),
                        pre: None,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("AppendEvent c={client} n={n} failed: {e}"));
                progress.bump();
                seqs.push((reply.into_inner().seq, client, n));
            }
            seqs
        }));
    }
    let mut adders = Vec::new();
    for i in 0..ADDERS {
        let mut c = grpc(&d.socket).await;
        let id = id.clone();
        let progress = progress.clone();
        adders.push(tokio::spawn(async move {
            let data = blob(i);
            let reply = add_context(&mut c, &id, &format!("blob{i}.bin"), &data).await;
            progress.bump();
            (i, data, reply)
        }));
    }
    let mut appended = Vec::new();
    for task in appenders {
        let seqs = progress
            .guard("an appender", task)
            .await
            .expect("an appender failed");
        appended.extend(seqs);
    }
    let mut added = Vec::new();
    for task in adders {
        added.push(
            progress
                .guard("an adder", task)
                .await
                .expect("an adder failed"),
        );
    }

    let events = check_log(&dir);
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(count("load"), APPENDERS * APPENDS);
    assert_eq!(count("evidence_added"), ADDERS);
    assert_eq!(count("txn_start"), 1);
    assert_eq!(count("activated"), 1);
    assert_eq!(events.len(), 2 + APPENDERS * APPENDS + ADDERS);

    // Each answer's seq is the line holding that client's event.
    let mut seqs = HashSet::new();
    for (seq, client, n) in &appended {
        assert!(seqs.insert(*seq), "seq {seq} answered twice");
        let e = &events[*seq as usize - 1];
        assert_eq!(e["event"], "load", "line {seq}");
        assert_eq!(
            (&e["data"]["c"], &e["data"]["n"]),
            (&Value::from(*client), &Value::from(*n)),
            "line {seq} is not the event its answer named"
        );
    }

    // Distinct numbers 100, 110, …, no gap; each file is what was sent.
    let ctx_dir = dir.join("ctx");
    let mut stored = BTreeMap::new();
    for entry in fs::read_dir(&ctx_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        stored.insert(name, fs::read(entry.path()).unwrap());
    }
    let mut numbers: Vec<u64> = stored
        .keys()
        .map(|name| name.split('_').next().unwrap().parse().unwrap())
        .filter(|n| *n >= 100)
        .collect();
    numbers.sort_unstable();
    let expected: Vec<u64> = (0..ADDERS as u64).map(|i| 100 + 10 * i).collect();
    assert_eq!(numbers, expected, "ctx numbers: {:?}", stored.keys());
    let evidence: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "evidence_added")
        .collect();
    for (i, data, reply) in &added {
        let sha = sha256_hex(data);
        assert!(
            reply.file.ends_with(&format!("_blob{i}.bin")),
            "adder {i} stored {}",
            reply.file
        );
        let bytes = stored
            .get(&reply.file)
            .unwrap_or_else(|| panic!("{} is not in ctx/", reply.file));
        assert_eq!(
            sha256_hex(bytes),
            sha,
            "{}: stored bytes differ from the sent ones",
            reply.file
        );
        assert_eq!(reply.sha256, sha, "{}: the answer's sha256", reply.file);
        assert_eq!(reply.bytes, data.len() as u64, "{}: bytes", reply.file);
        let event = evidence
            .iter()
            .find(|e| e["file"] == reply.file.as_str())
            .unwrap_or_else(|| panic!("no evidence_added for {}", reply.file));
        assert_eq!(
            event["sha256"],
            sha.as_str(),
            "{}: the event's sha256",
            reply.file
        );
        assert_eq!(event["seq"], reply.seq, "{}: the event's seq", reply.file);
    }
    let state = read_json(&dir.join("state.json"));
    let last = evidence.last().unwrap();
    assert_eq!(
        state["ctx_digest"], last["ctx_digest"],
        "state.json's ctx_digest is not the last evidence_added's"
    );
    assert_eq!(
        state["ctx_digest"],
        ctx_digest(&stored).as_str(),
        "ctx_digest is not the documented digest of ctx/"
    );
}
