//! Server streams. A follower reads the log file itself, from its own byte
//! offset up to the durable end the transaction publishes; the publication
//! is only a wake-up. So a slow follower is never dropped and never skips:
//! it simply reads more lines on its next turn, in file (= seq) order.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ttm_proto::v1 as pb;
use ttm_proto::v1::events_response::Kind;

use super::status::to_status;
use super::{TtmService, blocking, pid_of};
use crate::config::Limits;
use crate::core::event;
use crate::core::id::quote;
use crate::core::{Error, Result};
use crate::shutdown::Shutdown;
use crate::store::log::Line;
use crate::store::module::{Change, ChangeKind};
use crate::store::txn::{Committed, Txn};

/// The stream type of both streaming RPCs.
pub type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

impl TtmService {
    pub(super) async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Stream<pb::EventsResponse>>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        check_filter(&r.event).map_err(to_status)?;
        let this = self.clone();
        let tref = r.txn.clone();
        let txn = match blocking(move || this.txn(tref)).await {
            Ok((_, txn)) => txn,
            Err(local) => return self.remote_events(local, pid_of(&client), r).await,
        };
        let config = self.shared.config();
        let slot = self
            .shared
            .streams
            .admit(pid_of(&client), &config.limits)
            .map_err(to_status)?;
        Ok(Response::new(self::events(
            txn,
            r,
            config.heartbeat,
            self.shared.shutdown.clone(),
            slot,
        )))
    }

    pub(super) async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Stream<pb::WatchResponse>>, Status> {
        let client = self.caller(&req)?;
        let name = req.into_inner().module;
        let mut changes = self.shared.store.watch(&name).map_err(to_status)?;
        if let Some(cluster) = self.shared.cluster() {
            let module = if name.is_empty() {
                crate::core::DEFAULT_MODULE
            } else {
                &name
            };
            changes = super::remote_watch::merged(
                cluster.clone(),
                module.to_owned(),
                changes,
                self.shared.shutdown.clone(),
            );
        }
        let config = self.shared.config();
        let slot = self
            .shared
            .streams
            .admit(pid_of(&client), &config.limits)
            .map_err(to_status)?;
        let name = if name.is_empty() {
            crate::core::DEFAULT_MODULE.to_string()
        } else {
            name
        };
        Ok(Response::new(self::watch(
            name,
            changes,
            config.heartbeat,
            self.shared.shutdown.clone(),
            slot,
        )))
    }
}

/// Refuses an event type filter no event could match (empty: all events).
fn check_filter(e: &str) -> Result<()> {
    let ok = e.len() <= event::EVENT_TYPE_MAX
        && e.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if e.is_empty() || ok {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "invalid event type filter {}",
        quote(e)
    )))
}

/// Messages buffered per stream before the sender waits for the client.
const BUFFER: usize = 16;
/// Bytes of log read per step by a follower. With [`BUFFER`], this bounds
/// what a stream whose client never reads can hold.
const READ_CHUNK: u64 = 16 << 10;
/// Follower reads on blocking threads at once, across all streams: enough
/// to keep the disk busy, few enough that followers cost no thread each.
const PARALLEL_READS: usize = 4;
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARALLEL_READS);

/// Open streams, in total and per client process, so a client that opens
/// streams and never reads them cannot exhaust the daemon: each stream
/// buffers at most [`BUFFER`] messages, and their number is limited.
#[derive(Debug, Default)]
pub struct Slots {
    total: AtomicU64,
    /// The most streams open at once since the last reset.
    pub(super) peak: AtomicU64,
    per_client: Mutex<HashMap<i32, usize>>,
}

impl Slots {
    /// Open streams now.
    pub fn open(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits one more stream for client process `pid`, or refuses naming
    /// the limit.
    pub fn admit(self: &Arc<Self>, pid: Option<i32>, limits: &Limits) -> Result<Counted> {
        let mut per = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if self.open() as usize >= limits.streams_total {
            return Err(Error::OverLimit(format!(
                "ttmd already serves {} open streams, its limit (limits.streams_total); close some \
                 followers or raise the limit",
                limits.streams_total
            )));
        }
        if let Some(pid) = pid {
            let mine = per.entry(pid).or_insert(0);
            if *mine >= limits.streams_per_client {
                return Err(Error::OverLimit(format!(
                    "process {pid} already has {mine} open streams, the limit per client \
                     (limits.streams_per_client)"
                )));
            }
            *mine += 1;
        }
        let now = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(Counted {
            slots: self.clone(),
            pid,
        })
    }
}

/// One admitted stream; its slot is freed when the stream ends.
#[derive(Debug)]
pub struct Counted {
    slots: Arc<Slots>,
    pid: Option<i32>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.slots.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(pid) = self.pid {
            let mut per = self
                .slots
                .per_client
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per.get_mut(&pid) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&pid);
                }
            }
        }
    }
}

/// Streams the events of `txn` from `req.from_seq`, then (with follow) new
/// ones as they become durable, with one caught-up marker and heartbeats.
pub fn events(
    txn: Arc<Txn>,
    req: pb::EventsRequest,
    heartbeat: Duration,
    shutdown: Shutdown,
    counted: Counted,
) -> Stream<pb::EventsResponse> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let _counted = counted;
        let mut follower = Follower::new(txn, req, heartbeat, shutdown, tx);
        // However it ends, the last message (if any) has been sent.
        let _ = follower.run().await;
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The stream is over: the client left, or its last message went out.
struct Ended;

/// One Events stream: where it is in the log, and where its messages go.
struct Follower {
    txn: Arc<Txn>,
    /// Lines before this seq are read (to learn offsets) but not sent.
    from: u64,
    /// Event type to send, empty for all.
    filter: String,
    follow: bool,
    heartbeat: Duration,
    shutdown: Shutdown,
    tx: mpsc::Sender<Result<pb::EventsResponse, Status>>,
    /// Byte offset of the next unread line, and that line's seq.
    offset: u64,
    next_seq: u64,
}

impl Follower {
    fn new(
        txn: Arc<Txn>,
        req: pb::EventsRequest,
        heartbeat: Duration,
        shutdown: Shutdown,
        tx: mpsc::Sender<Result<pb::EventsResponse, Status>>,
    ) -> Self {
        let from = req.from_seq.max(1);
        // Start at the indexed line nearest `from`, not at the top.
        let (offset, next_seq) = txn.seek(from);
        Follower {
            txn,
            from,
            filter: req.event,
            follow: req.follow,
            heartbeat,
            shutdown,
            tx,
            offset,
            next_seq,
        }
    }

    /// Replay, the caught-up marker, then (with follow) each durable
    /// change as it comes, until removal, shutdown or the client leaves.
    async fn run(&mut self) -> Result<(), Ended> {
        let mut committed = self.txn.subscribe();
        let end = committed.borrow_and_update().len;
        self.read_to(end).await?;
        if !self.follow {
            return Ok(());
        }
        self.send(Kind::CaughtUp(pb::CaughtUp {
            seq: self.next_seq - 1,
        }))
        .await?;
        loop {
            if self.txn.is_removed() {
                let gone = format!(
                    "transaction {} was removed from the tree; nothing more will come",
                    self.txn.id
                );
                return self.fail(Error::Gone(gone)).await;
            }
            self.wait(&mut committed).await?;
            let end = committed.borrow_and_update().len;
            self.read_to(end).await?;
        }
    }

    /// Sends the lines up to byte `end`, read in bounded chunks so a
    /// follower far behind (or a replay of a long log) never holds the
    /// whole log in memory.
    async fn read_to(&mut self, end: u64) -> Result<(), Ended> {
        let mut chunk = READ_CHUNK;
        while self.offset < end {
            let to = end.min(self.offset + chunk);
            let (lines, new_offset) = self.read(to).await?;
            if lines.is_empty() && to == end {
                // `end` is where a durable line ended: no line ending there
                // means the file changed under what ttmd wrote. Waiting
                // would wait forever.
                let changed = format!(
                    "the log of transaction {} changed behind ttmd's back (no line ends where \
                     ttmd wrote one); it is reloaded from disk or quarantined: ask again",
                    self.txn.id
                );
                return self.fail(Error::Refused(changed)).await;
            }
            if lines.is_empty() {
                // One line longer than the chunk: widen and read again.
                chunk = chunk.saturating_mul(2);
                continue;
            }
            chunk = READ_CHUNK;
            self.offset = new_offset;
            // Parsed lines are turned into messages (text only) before any
            // wait for the client, so a stalled stream holds no parsed JSON.
            let mut batch = Vec::with_capacity(lines.len());
            for line in lines {
                self.next_seq = line.seq + 1;
                if line.seq >= self.from
                    && let Some(msg) = event_message(line, &self.filter)
                {
                    batch.push(msg);
                }
            }
            for msg in batch {
                self.tx.send(Ok(msg)).await.map_err(|_| Ended)?;
            }
        }
        Ok(())
    }

    /// The whole lines from the current offset up to byte `to`, and the
    /// offset after them; the file is read on a blocking thread.
    async fn read(&self, to: u64) -> Result<(Vec<Line>, u64), Ended> {
        let txn = self.txn.clone();
        let (from_byte, first) = (self.offset, self.next_seq);
        // A permit first: a thousand followers woken by one commit must not
        // each take a blocking thread (the pool grows to hundreds, and glibc
        // keeps their arenas' memory after they leave).
        let Ok(_permit) = READERS.acquire().await else {
            return self.fail(Error::ShuttingDown).await;
        };
        let read = tokio::task::spawn_blocking(move || txn.read_lines(from_byte, to, first)).await;
        let err = match read {
            Ok(Ok(lines)) => return Ok(lines),
            Ok(Err(e)) => e,
            Err(e) => Error::Bug(format!("ttmd reader failed: {e}")),
        };
        self.fail(err).await
    }

    /// Waits for the next durable change; meanwhile sends heartbeats, and
    /// ends on shutdown or when the client leaves.
    async fn wait(&self, committed: &mut watch::Receiver<Committed>) -> Result<(), Ended> {
        tokio::select! {
            // An error means the transaction was dropped.
            changed = committed.changed() => changed.map_err(|_| Ended),
            _ = tokio::time::sleep(self.heartbeat) => {
                self.send(Kind::Heartbeat(pb::Heartbeat { seq: self.next_seq - 1 }))
                    .await
            }
            _ = self.shutdown.wait() => self.fail(Error::ShuttingDown).await,
            _ = self.tx.closed() => Err(Ended),
        }
    }

    async fn send(&self, kind: Kind) -> Result<(), Ended> {
        let msg = pb::EventsResponse { kind: Some(kind) };
        self.tx.send(Ok(msg)).await.map_err(|_| Ended)
    }

    /// Ends the stream with `err` as its last message.
    async fn fail<T>(&self, err: Error) -> Result<T, Ended> {
        let _ = self.tx.send(Err(to_status(err))).await;
        Err(Ended)
    }
}

/// The message for one log line, or `None` when `filter` (an event type,
/// empty for all) excludes it.
pub(super) fn event_message(line: Line, filter: &str) -> Option<pb::EventsResponse> {
    let field = |k: &str| {
        line.object
            .as_ref()
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let kind = field("event");
    if !filter.is_empty() && kind != filter {
        return None;
    }
    let ts = field("ts");
    let json = within_reply(line.text, line.seq, &kind, &ts);
    Some(pb::EventsResponse {
        kind: Some(Kind::Event(pb::Event {
            seq: line.seq,
            event: kind,
            ts,
            json,
        })),
    })
}

/// The longest line an `Event` message carries whole. The daemon's own
/// lines are far smaller (payloads are bounded by limits.payload), but
/// another program may append any line, and a message past 4 MiB would end
/// the stream of every standard gRPC client.
pub const EVENT_JSON_MAX: usize = 2 * 1024 * 1024;

/// `text`, or for a line too long to send a small object in its place that
/// says so and where to read it (the file keeps the line whole).
fn within_reply(text: String, seq: u64, kind: &str, ts: &str) -> String {
    if text.len() <= EVENT_JSON_MAX {
        return text;
    }
    serde_json::json!({
        "ts": ts,
        "event": kind,
        "seq": seq,
        "ttm_omitted_bytes": text.len(),
        "ttm_note": format!(
            "line {seq} of events.ndjson is {} bytes, more than the {EVENT_JSON_MAX} an \
             Events message carries; read it from the file",
            text.len()
        ),
    })
    .to_string()
}

/// Streams the changes of a module's transactions as they happen.
pub fn watch(
    module: String,
    mut changes: broadcast::Receiver<Change>,
    heartbeat: Duration,
    shutdown: Shutdown,
    counted: Counted,
) -> Stream<pb::WatchResponse> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let _counted = counted;
        loop {
            let msg = tokio::select! {
                change = changes.recv() => match change {
                    Ok(c) => change_message(&module, c),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let behind = format!(
                            "this watcher fell {n} changes behind; reconnect and re-list"
                        );
                        let _ = tx.send(Err(to_status(Error::FellBehind(behind)))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(heartbeat) => pb::WatchResponse {
                    module: module.clone(),
                    heartbeat: Some(pb::Heartbeat { seq: 0 }),
                    ..Default::default()
                },
                _ = shutdown.wait() => {
                    let _ = tx.send(Err(to_status(Error::ShuttingDown))).await;
                    return;
                }
                _ = tx.closed() => return,
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn change_message(module: &str, c: Change) -> pb::WatchResponse {
    pb::WatchResponse {
        kind: kind(c.kind) as i32,
        module: module.to_string(),
        txn_id: c.txn_id,
        from: c.from,
        to: c.to,
        seq: c.seq,
        ts: c.ts,
        heartbeat: None,
        warning: c.warning,
        lease: c.lease.as_ref().map(|l| l.0.clone()).unwrap_or_default(),
        token: c.lease.map_or(0, |l| l.1),
    }
}

fn kind(k: ChangeKind) -> pb::ChangeKind {
    match k {
        ChangeKind::Created => pb::ChangeKind::Created,
        ChangeKind::StageChanged => pb::ChangeKind::StageChanged,
        ChangeKind::Activated => pb::ChangeKind::Activated,
        ChangeKind::Committed => pb::ChangeKind::Committed,
        ChangeKind::Failed => pb::ChangeKind::Failed,
        ChangeKind::Removed => pb::ChangeKind::Removed,
        ChangeKind::Archived => pb::ChangeKind::Archived,
        ChangeKind::Warning => pb::ChangeKind::Warning,
        ChangeKind::LeaseRequested => pb::ChangeKind::LeaseRequested,
        ChangeKind::LeaseAcquired => pb::ChangeKind::LeaseAcquired,
        ChangeKind::LeaseReleased => pb::ChangeKind::LeaseReleased,
        ChangeKind::LeaseExpired => pb::ChangeKind::LeaseExpired,
    }
}
