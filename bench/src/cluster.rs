//! Cluster-mode figures (issue 19), against a running etcd: the append
//! rate with and without `--cluster` (the mirror must not slow
//! acknowledgements), the mirror lag under 64 writers (acknowledgement →
//! line in etcd) and the remote follow latency (acknowledgement on host A →
//! event on a follower of host B).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use ttm_etcd::{Etcd, WatchItem};
use ttm_proto::v1 as pb;
use ttmd::store::Durability;

use super::{Call, Daemon, Error, median, percentiles, rate, repeat};

pub async fn bench(
    base: &Path,
    endpoints: &str,
    calls: usize,
    runs: usize,
    follow: usize,
) -> Result<(), Error> {
    println!("# ttm-bench --cluster {endpoints} — {runs} runs each, median reported");
    println!("\n## AppendEvent/s, durability fsync, without and with --cluster");
    println!("| clients | without | with --cluster | with/without |");
    println!("|---:|---:|---:|---:|");
    let plain = Daemon::start(base, Durability::Fsync).await?;
    let clustered = Daemon::start_in_cluster(base, endpoints, "bench-a").await?;
    let (t1, t2) = (plain.create().await?, clustered.create().await?);
    for clients in [1, 8, 64] {
        let without = median(
            repeat(runs, || {
                rate(&plain, clients, calls, Call::Append(t1.clone()))
            })
            .await?,
        );
        let with = median(
            repeat(runs, || {
                rate(&clustered, clients, calls, Call::Append(t2.clone()))
            })
            .await?,
        );
        println!(
            "| {clients} | {without:.0} | {with:.0} | {:.3} |",
            with / without
        );
    }
    plain.stop().await;
    let etcd = Etcd::connect(&endpoints.split(',').collect::<Vec<_>>())?;
    let txn = clustered.create().await?;
    let (m50, m99) = mirror_lag(&clustered, &etcd, &txn, 64, calls).await?;
    println!(
        "\nmirror lag (ack → line in etcd), 64 writers, {calls} appends: p50 {m50:.1} ms, p99 {m99:.1} ms"
    );
    let b = Daemon::start_in_cluster(base, endpoints, "bench-b").await?;
    let (f50, f99) = remote_follow(&clustered, &b, &txn, follow).await?;
    println!(
        "remote follow latency (ack on A → event on B's follower): p50 {f50:.1} ms, p99 {f99:.1} ms"
    );
    b.stop().await;
    clustered.stop().await;
    Ok(())
}

fn txn_ref(txn: &str) -> Option<pb::TxnRef> {
    Some(pb::TxnRef {
        module: String::new(),
        txn_id: txn.to_owned(),
    })
}

/// p50/p99 in ms from each append's acknowledgement to its line's arrival
/// on an etcd watch, with `writers` concurrent writers.
async fn mirror_lag(
    d: &Daemon,
    etcd: &Etcd,
    txn: &str,
    writers: usize,
    calls: usize,
) -> Result<(f64, f64), Error> {
    let prefix = format!("/ttm/v1/ttm/ev/{txn}/");
    let mut watch = etcd.watch_prefix(prefix.as_bytes(), 0).await?;
    let arrived = Arc::new(Mutex::new(HashMap::new()));
    let sink = arrived.clone();
    let total = (calls / writers).max(1) * writers;
    let reader = tokio::spawn(async move {
        while let Ok(WatchItem::Events { events, .. }) = watch.next().await {
            let now = Instant::now();
            let mut a = sink.lock().await;
            for e in events {
                let Some(kv) = e.kv else { continue };
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                if let Some(seq) = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) {
                    a.insert(seq, now);
                }
            }
            if a.len() >= total {
                break;
            }
        }
    });
    let acked = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let mut c = d.client().await?;
        let (acked, txn) = (acked.clone(), txn.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in 0..total / writers {
                let r = c
                    .append_event(pb::AppendEventRequest {
                        txn: txn_ref(&txn),
                        event: "lag".into(),
                        data_json: format!("{{\"i\":{i}}}"),
                        pre: None,
                    })
                    .await?;
                acked
                    .lock()
                    .await
                    .push((r.into_inner().seq, Instant::now()));
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    tokio::time::timeout(Duration::from_secs(120), reader).await??;
    let arrived = arrived.lock().await;
    let mut lag: Vec<f64> = acked
        .lock()
        .await
        .iter()
        .filter_map(|(seq, t0)| {
            arrived
                .get(seq)
                .map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1e3)
        })
        .collect();
    Ok(percentiles(&mut lag))
}

/// p50/p99 in ms from an append acknowledged by `a` to the event on a
/// follower of `b` (a transaction homed on `a`), one event at a time.
async fn remote_follow(
    a: &Daemon,
    b: &Daemon,
    txn: &str,
    count: usize,
) -> Result<(f64, f64), Error> {
    let mut follower = b.client().await?;
    let mut stream = follower
        .events(pb::EventsRequest {
            txn: txn_ref(txn),
            from_seq: 0,
            event: "remote".into(),
            follow: true,
        })
        .await?
        .into_inner();
    let received = Arc::new(Mutex::new(HashMap::new()));
    let sink = received.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            if let Some(pb::events_response::Kind::Event(e)) = msg.kind {
                let mut r = sink.lock().await;
                r.insert(e.seq, Instant::now());
                if r.len() >= count {
                    break;
                }
            }
        }
    });
    let mut writer = a.client().await?;
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let r = writer
            .append_event(pb::AppendEventRequest {
                txn: txn_ref(txn),
                event: "remote".into(),
                data_json: format!("{{\"i\":{i}}}"),
                pre: None,
            })
            .await?;
        sent.push((r.into_inner().seq, Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(60), reader).await??;
    let received = received.lock().await;
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(seq, t0)| {
            received
                .get(seq)
                .map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1e3)
        })
        .collect();
    Ok(percentiles(&mut lat))
}
