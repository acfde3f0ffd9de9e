//! Cluster-wide reads (SPEC §16): another host's transactions, read from
//! the etcd mirror its home keeps (`cluster/mirror.rs`).
//!
//! - `state`: the `state/<txn>` key, as state.json plus `home`.
//! - `list`: every other host's `state/` rows beside the local ones; while
//!   etcd is unreachable, the rows of the last read marked stale.
//! - `events [--follow]`: SPEC §9's guarantees from etcd: a range read from
//!   the next seq, then a watch from the range's revision + 1; a compacted
//!   revision (or a lost watch) re-reads the range from the next seq, and
//!   lines are sent only in seq order, so nothing is skipped or repeated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use ttm_etcd::mvccpb::event::EventType;
use ttm_etcd::{EtcdError, WatchItem, prefix_end};
use ttm_proto::v1 as pb;
use ttm_proto::v1::events_response::Kind;

use super::convert::txn_state;
use super::status::to_status;
use super::streams::{Counted, Stream, event_message};
use crate::cluster::{Cluster, keys};
use crate::core::state::State;
use crate::core::{Error, Result};
use crate::shutdown::Shutdown;
use crate::store::log::Line;

/// Tries of a followed range or watch in a row that may fail (an etcd
/// leader election) before the stream ends with "coordination unavailable".
const TRIES: u32 = 10;
/// Pause between those tries.
const PAUSE: Duration = Duration::from_millis(500);

/// The rows of other hosts last read per module, shown (stale) while etcd
/// is unreachable.
static LAST_ROWS: Mutex<Option<HashMap<String, Vec<pb::TxnState>>>> = Mutex::new(None);

/// The API form of a `state/<txn>` value; `None` for a value that is not
/// one (or is this host's own).
fn row(cluster: &Cluster, value: &[u8]) -> Option<pb::TxnState> {
    let mut object: Map<String, Value> = serde_json::from_slice(value).ok()?;
    let home = object.remove("home")?.as_str()?.to_owned();
    object.remove("mirror_seq");
    if home == cluster.host_id() {
        return None;
    }
    let state: State = serde_json::from_value(Value::Object(object)).ok()?;
    let mut row = txn_state(&state, std::path::Path::new(""), false);
    row.home = home;
    Some(row)
}

/// Another host's transaction `module/id`, or `None` when etcd has none
/// homed elsewhere. Refused at once while etcd is unreachable.
pub async fn state(cluster: &Cluster, module: &str, id: &str) -> Result<Option<pb::TxnState>> {
    let what = format!("reading transaction {id}, which is not on this host,");
    cluster.require(&what)?;
    let key = keys::state(module, id);
    let kv = cluster.note(&what, cluster.etcd().get(key.as_bytes()).await)?;
    Ok(kv.and_then(|kv| row(cluster, &kv.value)))
}

/// The rows of other hosts' transactions in `module` (of `stage`, if
/// given): read from etcd, or the last read marked stale while it is
/// unreachable.
pub async fn rows(cluster: &Cluster, module: &str, stage: &str) -> Vec<pb::TxnState> {
    let read = match cluster.require("listing other hosts' transactions") {
        Ok(()) => Some(cluster.etcd().prefix(keys::states(module).as_bytes()).await),
        Err(_) => None,
    };
    let mut last = LAST_ROWS.lock().unwrap_or_else(|p| p.into_inner());
    let cache = last.get_or_insert_with(HashMap::new);
    let rows = match read {
        Some(Ok(range)) => {
            cluster.up();
            let rows: Vec<pb::TxnState> = range
                .kvs
                .iter()
                .filter_map(|kv| row(cluster, &kv.value))
                .collect();
            cache.insert(module.to_owned(), rows.clone());
            rows
        }
        failed => {
            // Only a failure to reach etcd says etcd is down.
            if let Some(Err(e)) = failed.filter(|r| r.as_ref().is_err_and(|e| e.is_unavailable())) {
                cluster.down(e.to_string());
            }
            let mut rows = cache.get(module).cloned().unwrap_or_default();
            for r in &mut rows {
                r.stale = true;
            }
            rows
        }
    };
    rows.into_iter()
        .filter(|r| stage.is_empty() || r.stage == stage)
        .collect()
}

/// The evidence files etcd lists for `module/id`, in `$eN` order.
pub async fn context(cluster: &Cluster, module: &str, id: &str) -> Result<Vec<pb::ContextFile>> {
    let what = format!("listing the evidence of transaction {id} of another host");
    cluster.require(&what)?;
    let range = cluster.note(
        &what,
        cluster
            .etcd()
            .prefix(keys::ctxs(module, id).as_bytes())
            .await,
    )?;
    let mut sizes = HashMap::new();
    for kv in &range.kvs {
        let Some(name) = keys::last_segment(&kv.key) else {
            continue;
        };
        let meta: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        sizes.insert(
            name.to_owned(),
            meta.get("bytes").and_then(Value::as_u64).unwrap_or(0),
        );
    }
    let order = crate::core::ctx::evidence_order(sizes.keys().cloned().collect());
    Ok(order
        .into_iter()
        .map(|(name, index)| pb::ContextFile {
            number: crate::core::ctx::number_of(&name).unwrap_or(0),
            bytes: sizes.get(&name).copied().unwrap_or(0),
            path: String::new(),
            evidence_index: index,
            name,
        })
        .collect())
}

/// The hosts registered in etcd.
pub async fn hosts(cluster: &Cluster) -> Result<pb::ListHostsResponse> {
    let what = "listing the cluster's hosts";
    cluster.require(what)?;
    let range = cluster.note(what, cluster.etcd().prefix(keys::hosts().as_bytes()).await)?;
    let hosts = range
        .kvs
        .iter()
        .filter_map(|kv| {
            let id = keys::host_of(&kv.key)?.to_owned();
            let card: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let text = |k: &str| card.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let num = |k: &str| card.get(k).and_then(Value::as_u64).unwrap_or(0);
            Some(pb::HostInfo {
                this_host: id == cluster.host_id(),
                host_id: id,
                alive: kv.lease != 0,
                version: text("version"),
                pid: u32::try_from(num("pid")).unwrap_or(0),
                started: text("started"),
                mirror_lag_events: num("mirror_lag_events"),
                mirror_lag_txns: num("mirror_lag_txns"),
            })
        })
        .collect();
    Ok(pb::ListHostsResponse {
        hosts,
        endpoints: cluster.etcd().endpoints(),
    })
}

/// Streams the events of another host's transaction `module/id` from
/// etcd, as `streams::events` does for a local one.
pub fn events(
    cluster: Arc<Cluster>,
    module: String,
    id: String,
    req: pb::EventsRequest,
    heartbeat: Duration,
    shutdown: Shutdown,
    counted: Counted,
) -> Stream<pb::EventsResponse> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _counted = counted;
        let mut follower = RemoteFollower {
            prefix: keys::events(&module, &id),
            cluster,
            id,
            next: req.from_seq.max(1),
            filter: req.event,
            follow: req.follow,
            heartbeat,
            shutdown,
            tx,
        };
        let _ = follower.run().await;
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The stream is over (the client left, or its last message went out).
struct Ended;

struct RemoteFollower {
    cluster: Arc<Cluster>,
    id: String,
    /// `/ttm/v1/<module>/ev/<txn>/`.
    prefix: String,
    /// The next seq to send: lines are sent in seq order, once.
    next: u64,
    filter: String,
    follow: bool,
    heartbeat: Duration,
    shutdown: Shutdown,
    tx: mpsc::Sender<Result<pb::EventsResponse, Status>>,
}

/// Why a watch ended.
enum Again {
    /// Read the range from the next seq and watch again.
    Reread,
    /// etcd could not be reached: count a failed try.
    Failed(String),
}

impl RemoteFollower {
    /// Range, caught-up marker, then watch; after a compaction or a lost
    /// watch, range again from the next seq.
    async fn run(&mut self) -> Result<(), Ended> {
        let mut caught_up = false;
        let mut failures = 0;
        loop {
            let again = match self.replay().await {
                Ok(revision) => {
                    if !self.follow {
                        return Ok(());
                    }
                    if !caught_up {
                        caught_up = true;
                        self.send(Kind::CaughtUp(pb::CaughtUp { seq: self.next - 1 }))
                            .await?;
                    }
                    failures = 0;
                    self.watch(revision + 1).await?
                }
                Err(e) => Again::Failed(e.to_string()),
            };
            if let Again::Failed(why) = again {
                failures += 1;
                if failures >= TRIES {
                    let what = format!("following transaction {} of another host", self.id);
                    return self
                        .fail(Error::CoordinationUnavailable(format!(
                            "{what} needs the etcd cluster, which is unreachable: {why}; \
                             follow again once etcd is back (see docs/cluster.md)"
                        )))
                        .await;
                }
                tokio::select! {
                    () = tokio::time::sleep(PAUSE) => {}
                    () = self.shutdown.wait() => return self.fail(Error::ShuttingDown).await,
                    () = self.tx.closed() => return Err(Ended),
                }
            }
        }
    }

    /// Sends the mirrored lines from the next seq; returns the revision
    /// they were read at.
    async fn replay(&mut self) -> Result<i64, EtcdError> {
        let start = keys::event_in(&self.prefix, self.next);
        let range = self
            .cluster
            .etcd()
            .range(start.as_bytes(), &prefix_end(self.prefix.as_bytes()))
            .await?;
        for kv in range.kvs {
            if self.line(&kv.key, kv.value).await.is_err() {
                break;
            }
        }
        Ok(range.revision)
    }

    /// Sends the line `value` of key `key` if it is the next seq; an error
    /// for a line past the next (a gap this view must not paper over).
    async fn line(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), ()> {
        let Some(seq) = keys::seq_of(key) else {
            return Ok(());
        };
        if seq < self.next {
            return Ok(()); // seen already
        }
        if seq > self.next {
            return Err(());
        }
        self.next += 1;
        let text = String::from_utf8_lossy(&value).into_owned();
        let line = Line {
            seq,
            object: serde_json::from_str(&text).ok(),
            bytes: text.len() as u64 + 1,
            text,
        };
        if let Some(msg) = event_message(line, &self.filter) {
            self.tx.send(Ok(msg)).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// Follows the mirror from `revision`; heartbeats while idle.
    async fn watch(&mut self, revision: i64) -> Result<Again, Ended> {
        let etcd = self.cluster.etcd().clone();
        let mut watch = match etcd.watch_prefix(self.prefix.as_bytes(), revision).await {
            Ok(w) => w,
            Err(e) => return Ok(Again::Failed(e.to_string())),
        };
        loop {
            let item = tokio::select! {
                item = watch.next() => item,
                () = tokio::time::sleep(self.heartbeat) => {
                    self.send(Kind::Heartbeat(pb::Heartbeat { seq: self.next - 1 })).await?;
                    continue;
                }
                () = self.shutdown.wait() => return self.fail(Error::ShuttingDown).await,
                () = self.tx.closed() => return Err(Ended),
            };
            let events = match item {
                Ok(WatchItem::Events { events, .. }) => events,
                Ok(WatchItem::Progress { .. }) => continue,
                Ok(WatchItem::Compacted { compact_revision }) => {
                    // Logged so a compaction met by a follower can be seen
                    // (and tested); the range from the next seq is re-read.
                    tracing::info!(txn = %self.id, next = self.next, compact_revision,
                        "remote follow: watch start revision compacted; re-reading the range");
                    return Ok(Again::Reread);
                }
                Ok(WatchItem::Canceled { reason }) => return Ok(Again::Failed(reason)),
                Err(e) => return Ok(Again::Failed(e.to_string())),
            };
            for event in events {
                let Some(kv) = event.kv else { continue };
                if event.r#type == EventType::Delete as i32 {
                    let gone = format!(
                        "transaction {} was archived or removed on its home host; \
                         nothing more will come",
                        self.id
                    );
                    return self.fail(Error::Gone(gone)).await;
                }
                if self.line(&kv.key, kv.value).await.is_err() {
                    if self.tx.is_closed() {
                        return Err(Ended);
                    }
                    return Ok(Again::Reread);
                }
            }
        }
    }

    async fn send(&self, kind: Kind) -> Result<(), Ended> {
        let msg = pb::EventsResponse { kind: Some(kind) };
        self.tx.send(Ok(msg)).await.map_err(|_| Ended)
    }

    async fn fail<T>(&self, err: Error) -> Result<T, Ended> {
        let _ = self.tx.send(Err(to_status(err))).await;
        Err(Ended)
    }
}
