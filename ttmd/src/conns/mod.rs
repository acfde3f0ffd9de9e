//! Connections: how many are open (per peer uid and in total), which are
//! idle, and the accept loop that enforces both. Without this, a few
//! thousand idle connections exhaust the daemon's file descriptors and every
//! client hangs.
//!
//! A connection is *idle* when it has no request in flight and no open
//! response stream (see [`layer`]) and nothing crossed it for a while. Idle
//! connections are closed after `limits.idle_secs`; at a limit, the
//! longest-idle connection in the same scope (the uid, or everyone) is
//! closed to make room, and if none is idle the new connection is closed at
//! once, so the client sees a closed connection rather than a hang.

mod io;
pub mod layer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use io::{ConnInfo, Tracked};

use crate::service::Shared;

/// File descriptors kept for everything but connections: the tree's files,
/// inotify, the log.
const RESERVED_FDS: u64 = 256;

/// At most one log line about refusals this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One open connection's bookkeeping.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    uid: Option<u32>,
    /// Milliseconds since the registry's epoch of the last byte either way.
    last: AtomicU64,
    /// Requests being handled plus response streams still open.
    in_flight: AtomicUsize,
    /// Set to close the connection; the reader then reports end of file.
    closing: AtomicBool,
    /// Wakes the reader so a close takes effect now.
    waker: Mutex<Option<Waker>>,
    registry: Weak<Registry>,
}

impl Conn {
    fn now(&self) -> u64 {
        self.registry.upgrade().map_or(0, |r| r.now())
    }

    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Whether nothing is in flight and nothing crossed for `idle`.
    fn idle_for(&self, idle: Duration) -> bool {
        let quiet = self.now().saturating_sub(self.last.load(Ordering::Relaxed));
        self.in_flight.load(Ordering::Relaxed) == 0 && u128::from(quiet) >= idle.as_millis()
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            r.conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}

/// Every open connection.
#[derive(Debug)]
pub(crate) struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Weak<Conn>>>,
    /// The most connections the open-file limit leaves room for.
    fd_room: usize,
    /// Per outcome (room made, new one closed): when the last line was
    /// logged, and refusals since.
    log: Mutex<[(Option<Instant>, u64); 2]>,
}

impl Registry {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a connection from `uid`, making room under `per_uid` and
    /// `total` by closing the longest-idle connection of the same scope; None
    /// when there is no room (the caller closes the new connection).
    fn admit(
        self: &Arc<Self>,
        uid: Option<u32>,
        per_uid: usize,
        total: usize,
    ) -> Option<Arc<Conn>> {
        let total = total.min(self.fd_room);
        // The lock is released before `live` is dropped: the last reference
        // to a connection may be in it, and `Conn::drop` takes the lock.
        // Only the accept loop admits, so nothing slips in between.
        let live: Vec<Arc<Conn>> = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .collect();
        let mine = live.iter().filter(|c| c.uid == uid).count();
        let scope = if mine >= per_uid {
            let who = uid.map_or("an unknown uid".to_string(), |u| format!("uid {u}"));
            Some((
                format!("limits.connections_per_uid = {per_uid} for {who}"),
                true,
            ))
        } else if live.len() >= total {
            Some((format!("limits.connections_total = {total}"), false))
        } else {
            None
        };
        if let Some((limit, same_uid)) = scope {
            let victim = live
                .iter()
                .filter(|c| !same_uid || c.uid == uid)
                .filter(|c| c.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|c| c.last.load(Ordering::Relaxed));
            self.note_refusal(&limit, victim.is_some());
            victim?.close();
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            uid,
            last: AtomicU64::new(self.now()),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            waker: Mutex::new(None),
            registry: Arc::downgrade(self),
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn.id, Arc::downgrade(&conn));
        Some(conn)
    }

    /// Logs a refusal, at most one line per [`LOG_EVERY`] with the count.
    fn note_refusal(&self, limit: &str, evicted: bool) {
        let mut logs = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let log = &mut logs[usize::from(!evicted)];
        log.1 += 1;
        if log.0.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        let what = if evicted {
            "closed the longest-idle connection to make room"
        } else {
            "no connection is idle: closed the new one"
        };
        tracing::warn!(
            refusals = log.1,
            "connection limit reached ({limit}): {what}; raise the limit in ttmd.toml if this \
             load is expected"
        );
        *log = (Some(Instant::now()), 0);
    }
}

/// Raises the soft open-file limit to the hard one, and returns how many
/// connections the result leaves room for.
pub fn raise_nofile() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit to its hard limit: {e}");
            limit = getrlimit(Resource::Nofile);
        }
    }
    let soft = limit.current.unwrap_or(u64::MAX);
    usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX)
}

/// Accepts connections from `listener` under the connection limits; the
/// stream is what the gRPC server serves. The task ends when the server
/// drops the stream, or is aborted.
pub fn accept(
    listener: UnixListener,
    shared: Arc<Shared>,
    fd_room: usize,
) -> (
    ReceiverStream<std::io::Result<Tracked>>,
    tokio::task::JoinHandle<()>,
) {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::default(),
        fd_room,
        log: Mutex::default(),
    });
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(accept_loop(listener, shared, registry, tx));
    (ReceiverStream::new(rx), task)
}

async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    tx: mpsc::Sender<std::io::Result<Tracked>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or memory: wait for connections to
                // close instead of spinning on the error.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let limits = shared.config().limits.clone();
        let Some(conn) = registry.admit(uid, limits.connections_per_uid, limits.connections_total)
        else {
            // Dropping the stream closes it: the client sees the connection
            // end at once and reports the daemon unreachable.
            continue;
        };
        let tracked = Tracked::new(stream, conn, limits.idle);
        if tx.send(Ok(tracked)).await.is_err() {
            return;
        }
    }
}
