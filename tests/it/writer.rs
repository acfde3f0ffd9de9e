//! The writer per transaction (issue 20, item 3): many clients on one
//! transaction are applied in batches, and a batch keeps every guarantee
//! of a single append: nothing acknowledged is lost to `kill -9`, seqs stay
//! contiguous, nothing is logged twice, and a request refused inside a
//! batch fails alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use tonic::Code;
use tonic::transport::Channel;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::{AppendEventRequest, Preconditions};
use ttm_tests::{Daemon, HANG, Progress, check_log, grpc, runtime, txn_ref, wait_until};

const CLIENTS: u64 = 64;

async fn append(
    c: &mut TtmClient<Channel>,
    id: &str,
    data: String,
    pre: Option<Preconditions>,
) -> Result<u64, tonic::Status> {
    let call = c.append_event(AppendEventRequest {
        txn: txn_ref("ttm", id),
        event: "work".into(),
        data_json: data,
        pre,
    });
    tokio::time::timeout(HANG, call)
        .await
        .unwrap_or_else(|_| panic!("AppendEvent hung for {HANG:?}"))
        .map(|r| r.into_inner().seq)
}

/// (w, n) → seq of every `work` line of the log.
fn logged_work(events: &[serde_json::Value]) -> HashMap<(u64, u64), u64> {
    let mut logged = HashMap::new();
    for e in events.iter().filter(|e| e["event"] == "work") {
        let key = (
            e["data"]["w"].as_u64().unwrap(),
            e["data"]["n"].as_u64().unwrap(),
        );
        let seq = e["seq"].as_u64().unwrap();
        assert!(logged.insert(key, seq).is_none(), "{key:?} logged twice");
    }
    logged
}

#[test]
fn sixty_four_writers_killed_mid_run_lose_nothing_acknowledged() {
    let rt = runtime();
    let mut d = Daemon::start_new(); // fsync durability: the default
    let id = d.create("64 writers");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ended = Progress::new();
    let clients: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..CLIENTS {
            v.push(grpc(&d.socket).await);
        }
        v
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            let (id, acked, stop, ended) = (id.clone(), acked.clone(), stop.clone(), ended.clone());
            rt.spawn(async move {
                let mut acks = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let data = format!(r#"{{"w":{w},"n":{n}}}"#);
                    match append(&mut c, &id, data, None).await {
                        Ok(seq) => {
                            acks.push((w as u64, n, seq));
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break, // the daemon is gone
                    }
                }
                ended.bump();
                acks
            })
        })
        .collect();
    // Kill while the writers are busy (after some acknowledgements).
    assert!(
        wait_until(HANG, || acked.load(Ordering::Relaxed) >= 300),
        "the writers made no progress"
    );
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    let acks: Vec<(u64, u64, u64)> = rt.block_on(async {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(ended.guard("a writer after the kill", task).await.unwrap());
        }
        all
    });
    assert!(acks.len() >= 300);

    d.start();
    let dir = d.txn_dir("ttm", &id);
    // Seqs are line numbers, contiguous from 1; state.json agrees.
    let events = check_log(&dir);
    let logged = logged_work(&events);
    for (w, n, seq) in &acks {
        assert_eq!(
            logged.get(&(*w, *n)),
            Some(seq),
            "writer {w}'s call {n} was acknowledged at seq {seq} but the log after the restart \
             does not have it there"
        );
    }
    // A call the kill cut off may have landed; each writer's calls that did
    // land are a prefix (it waits for each answer before the next call).
    for w in 0..CLIENTS {
        let mut ns: Vec<u64> = logged.keys().filter(|k| k.0 == w).map(|k| k.1).collect();
        ns.sort_unstable();
        assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>(), "writer {w}");
    }
    d.assert_state_is_fold("ttm", &id);
}

#[test]
fn a_request_refused_in_a_batch_fails_alone() {
    const CALLS: u64 = 20;
    let rt = runtime();
    let mut d = Daemon::start_new();
    let id = d.create("refusals in batches");
    let wrong = || {
        Some(Preconditions {
            expect_stage: Some("SELECT".into()), // it is in PLAN
            ..Default::default()
        })
    };
    let clients: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..CLIENTS {
            v.push(grpc(&d.socket).await);
        }
        v
    });
    let go = Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            let (id, go) = (id.clone(), go.clone());
            rt.spawn(async move {
                let mut outcomes = Vec::new();
                for n in 1..=CALLS {
                    go.wait().await; // all 64 at once: one batch or a few
                    // Every eighth client asks for the wrong stage.
                    let pre = if w % 8 == 3 { wrong() } else { None };
                    let data = format!(r#"{{"w":{w},"n":{n}}}"#);
                    outcomes.push((w as u64, n, append(&mut c, &id, data, pre).await));
                }
                outcomes
            })
        })
        .collect();
    // ttmctl's --expect-stage alongside, refused the same way (exit 5).
    let ctl = thread::scope(|s| {
        let ctls: Vec<_> = (0..4)
            .map(|i| {
                let d = &d;
                let id = &id;
                s.spawn(move || {
                    let data = format!(r#"{{"w":{},"n":1}}"#, 1000 + i);
                    let args = ["event", "work", &data, "-t", id, "--expect-stage", "SELECT"];
                    d.ctl(&args).code()
                })
            })
            .collect();
        ctls.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        ctl,
        [5, 5, 5, 5],
        "ttmctl --expect-stage SELECT exits 5 (conflict)"
    );
    let outcomes: Vec<_> = rt.block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let events = check_log(&d.txn_dir("ttm", &id));
    let logged = logged_work(&events);
    let mut seqs = HashSet::new();
    for (w, n, result) in outcomes {
        if w % 8 == 3 {
            let status = result.expect_err("a wrong --expect-stage was applied");
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
            assert!(
                !logged.contains_key(&(w, n)),
                "refused ({w}, {n}) was logged"
            );
        } else {
            let seq = result.unwrap_or_else(|s| panic!("({w}, {n}) failed: {s:?}"));
            assert_eq!(logged.get(&(w, n)), Some(&seq), "({w}, {n})");
            assert!(seqs.insert(seq));
        }
    }
    assert_eq!(
        logged.len(),
        seqs.len(),
        "only the accepted calls are logged"
    );
    d.assert_state_is_fold("ttm", &id);
}

/// `ttm_fsync_seconds_count` from `ttmctl metrics`: the syncs made so far.
fn syncs(d: &Daemon) -> u64 {
    let text = d.ctl(&["metrics"]).ok();
    let line = text
        .lines()
        .find(|l| l.starts_with("ttm_fsync_seconds_count"))
        .unwrap_or_else(|| panic!("no ttm_fsync_seconds_count in:\n{text}"));
    let value = line.rsplit(' ').next().unwrap();
    value.parse::<f64>().unwrap() as u64
}

/// SPEC §5: concurrent appends share one sync (group commit). 64 clients
/// released together, 10 times, on one transaction: every append is
/// acknowledged after a sync, and far fewer syncs than appends are made.
#[test]
fn concurrent_appends_share_their_syncs() {
    const ROUNDS: u64 = 10;
    let rt = runtime();
    let d = Daemon::start_new(); // fsync durability: the default
    let id = d.create("group commit");
    let before = syncs(&d);
    let clients: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..CLIENTS {
            v.push(grpc(&d.socket).await);
        }
        v
    });
    let go = Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            let (id, go) = (id.clone(), go.clone());
            rt.spawn(async move {
                for n in 1..=ROUNDS {
                    go.wait().await;
                    let data = format!(r#"{{"w":{w},"n":{n}}}"#);
                    append(&mut c, &id, data, None).await.unwrap();
                }
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let appends = CLIENTS * ROUNDS;
    let made = syncs(&d) - before;
    let logged = logged_work(&check_log(&d.txn_dir("ttm", &id)));
    assert_eq!(logged.len() as u64, appends);
    assert!(made >= 1, "no sync was made for {appends} appends");
    assert!(
        made < appends,
        "{made} syncs for {appends} concurrent appends: none was shared"
    );
}
