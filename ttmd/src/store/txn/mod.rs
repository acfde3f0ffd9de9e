//! One transaction on disk and in memory. All its mutations go through its
//! writer ([`Txn::submit`] queues one, [`Txn::mutate`] waits its turn;
//! evidence takes the same path, with its file staged around the append),
//! in one order: check guards, build the event, ask the core whether it is
//! admitted, append it and sync (the log is the truth), then replace
//! `state.json` (the view). Different transactions never share a lock.
//!
//! - `open.rs`: loading and recovery (read-only too, repairing nothing);
//! - `probe.rs`: reading a finished transaction without loading it;
//! - `writer.rs`: the rounds that apply the queue, a batch at a time;
//! - `turn.rs`: the queue, and whose turn it is to write;
//! - `commit.rs`: syncing a round and publishing the view;
//! - `initial.rs`: a created transaction, and its derived files rebuilt;
//! - `evidence.rs`: incoming ctx files;
//! - `reconcile.rs`: lines and edits made behind the daemon's back.

mod commit;
mod evidence;
mod fold;
mod initial;
mod open;
mod probe;
mod reconcile;
mod turn;
mod writer;

pub use evidence::{NewEvidence, TempEvidence, scan_ctx};
use fold::fold_lines;
pub use initial::entries as initial_entries;
pub use probe::probe_finished;
pub use reconcile::{EDIT_REFUSED, FOREIGN_REFUSED};
pub use turn::use_runtime;
pub use writer::MAX_BATCH;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;

use crate::core::ctx::Entry;
use crate::core::event::{Body, Event, Logged};
use crate::core::fsm::Fsm;
use crate::core::state::State;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log::{self, Line};

/// File names inside a transaction directory.
pub const STATE_FILE: &str = "state.json";
pub const EVENTS_FILE: &str = "events.ndjson";
pub const CTX_DIR: &str = "ctx";
pub const BUILD_DIR: &str = "build";
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Lines between two entries of the seq → offset index.
pub const MARK_EVERY: u64 = 256;

/// Prefix of an evidence file stored but not yet named by the log.
pub const PENDING_PREFIX: &str = ".ttmd-pending-";

/// Compare-and-set guards and the idempotency key of one mutation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guards {
    /// Refuse unless the transaction is in this stage.
    pub expect_stage: Option<String>,
    /// Refuse unless the last event has this seq.
    pub expect_seq: Option<u64>,
    /// Return the first answer if this key was already used.
    pub request_id: Option<String>,
    /// What the request asks for, digested ([`event::request_digest`]):
    /// recorded with the id, and a reuse of the id with another digest is
    /// refused rather than answered with the first request's answer.
    pub request_digest: Option<String>,
    /// Refuse unless the transaction still holds each lease with that
    /// fencing token.
    pub fences: Vec<(String, u64)>,
}

/// How far the log is durably written; followers read up to here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Seq of the last complete line.
    pub seq: u64,
    /// Bytes of complete lines.
    pub len: u64,
}

/// An event as the log holds it: its line number and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub seq: u64,
    pub line: Logged,
}

/// What a mutation produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state after the mutation.
    pub state: Arc<State>,
    /// The event that recorded it (for a replayed request: the first one);
    /// `None` when the change was admitted without an event (activating a
    /// finished transaction moves only the pointer).
    pub event: Option<Arc<Recorded>>,
    /// True when a request id matched an earlier mutation and nothing was
    /// written.
    pub replayed: bool,
}

impl Outcome {
    /// What the logged event says: `None` when nothing was logged, or when
    /// a replayed request id was first carried by a line another program
    /// appended that is not one of ours.
    pub fn body(&self) -> Option<&Body> {
        match &self.event.as_ref()?.line.event {
            Event::Body(body) => Some(body),
            Event::Foreign { .. } | Event::Malformed => None,
        }
    }

    /// The seq of the event that recorded the change, or of the state when
    /// nothing was logged.
    pub fn seq(&self) -> u64 {
        self.event.as_ref().map_or(self.state.seq, |e| e.seq)
    }
}

/// Request id → the event it produced and the request's digest.
type Requests = HashMap<String, (Arc<Recorded>, Option<String>)>;

/// Who asked for a mutation, recorded as the event's `client`.
pub type Client = Option<Value>;

/// A loaded transaction.
#[derive(Debug)]
pub struct Txn {
    /// The transaction id (its directory name).
    pub id: String,
    /// `<module>/txns/<id>`.
    pub dir: PathBuf,
    /// The request id its creation carried (in `txn_start`), so a retried
    /// create finds it.
    pub create_request: Option<String>,
    durability: Durability,
    /// The writer side. A std mutex: it is held across file I/O on blocking
    /// threads only, never across an `.await`.
    inner: Mutex<Inner>,
    /// The latest state, for readers that must not wait behind a sync.
    snapshot: Mutex<Arc<State>>,
    /// Where the durable log ends, for followers.
    committed: watch::Sender<Committed>,
    /// The writer's queue and turn (writer.rs).
    queue: Mutex<turn::Queue>,
    /// This transaction as shared, so a writer can outlive the caller
    /// that started it; unset for a transaction never shared.
    me: std::sync::OnceLock<std::sync::Weak<Txn>>,
    /// Held while `state.json` and the snapshot are brought into line, so a
    /// reconcile never compares a new file with an old snapshot.
    view: Mutex<()>,
    /// Set when the directory was removed from the tree behind our back.
    removed: std::sync::atomic::AtomicBool,
    /// `state.json` was replaced without a sync; the checkpoint syncs it.
    view_dirty: std::sync::atomic::AtomicBool,
    /// Syncing ctx/ after a stored evidence file failed; the checkpoint
    /// retries.
    ctx_dirty: std::sync::atomic::AtomicBool,
    /// (seq, byte offset) of every [`MARK_EVERY`]-th line, so a follower
    /// starting near the end of a long log seeks instead of scanning it.
    marks: Mutex<Vec<(u64, u64)>>,
}

#[derive(Debug)]
struct Inner {
    /// Shared with the snapshot until the next change (copy on write), so
    /// an idle transaction holds one copy of its state, not two.
    state: Arc<State>,
    /// The log opened for appending, while the transaction is live: opened
    /// on the first write, closed when it ends, so a tree of many finished
    /// transactions does not hold a descriptor for each.
    log: Option<File>,
    /// (device, inode) of the log when loaded: a log removed or replaced
    /// behind the daemon's back is never appended to.
    log_id: Option<(u64, u64)>,
    /// Bytes of complete lines in the log.
    len: u64,
    /// ctx/ entries with their hashes, computed on first need.
    ctx: Option<Vec<Entry>>,
    /// request id → the event it produced and the request's digest (if
    /// its line records one).
    requests: Requests,
    /// Why the log can no longer be appended to (it shrank or changed
    /// under what ttmd wrote); set once, never cleared: the watcher
    /// reloads the transaction from disk, which quarantines it.
    damaged: Option<String>,
}

/// What a mutation does on disk besides appending its line: evidence is
/// staged before the append and named after it. Failure paths need no
/// hook: what an effect staged is held by guards that undo it when dropped.
trait Effect {
    /// Runs once the event is admitted, right before it is appended.
    fn before_append(&mut self, _inner: &mut Inner) -> Result<()> {
        Ok(())
    }
    /// Whether [`Effect::after_append`] needs the line written first
    /// (rather than staged in the round's buffer).
    const WRITES_LINE_FIRST: bool = false;
    /// Runs once the line is appended, still under the lock.
    fn after_append(&mut self, _inner: &mut Inner) -> Result<()> {
        Ok(())
    }
}

/// A mutation that is its event line and nothing else.
struct LineOnly;
impl Effect for LineOnly {}

impl Inner {
    /// The log opened for appending, opening it if needed; refused if the
    /// file at `path` is no longer the log this transaction was loaded
    /// from (deleted, replaced, or a symlink planted in its place).
    fn log_file(&mut self, path: &Path) -> Result<&mut File> {
        if file_id(path) != self.log_id || self.log_id.is_none() {
            self.log = None;
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: "was removed or replaced behind ttmd's back; nothing was written, \
                          and ttmd reloads the transaction from what is on disk"
                    .into(),
            });
        }
        let file = match self.log.take() {
            Some(f) => f,
            None => fsio::open_append(path, false).map_err(|e| Error::io("opening", path, e))?,
        };
        Ok(self.log.insert(file))
    }
}

/// (device, inode) of a regular file at `path`, not following a symlink.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every field is
    // updated only after its file write succeeded), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Txn {
    /// The latest state.
    pub fn state(&self) -> Arc<State> {
        lock(&self.snapshot).clone()
    }

    /// Subscribes to the end of the durable log.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The end of the durable log now.
    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// The log's complete lines between byte `from` (a line boundary whose
    /// line is `first_seq`) and `to`, read from the file: the file is the
    /// truth followers see, including lines other programs appended.
    pub fn read_lines(&self, from: u64, to: u64, first_seq: u64) -> Result<(Vec<Line>, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        if to <= from {
            return Ok((Vec::new(), from));
        }
        let path = self.dir.join(EVENTS_FILE);
        let mut f = fsio::open_read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let mut buf = Vec::with_capacity((to - from) as usize);
        f.seek(SeekFrom::Start(from))
            .and_then(|_| f.take(to - from).read_to_end(&mut buf))
            .map_err(|e| Error::io("reading", &path, e))?;
        if (buf.len() as u64) < to - from {
            // Bytes ttmd wrote (or counted) are gone: waiting for them
            // would wait forever.
            return Err(reconcile::shrank(&path, from + buf.len() as u64, to));
        }
        let (lines, used) = log::parse_lines(&buf, first_seq);
        Ok((lines, from + used as u64))
    }

    /// Applies one mutation. `make` sees the current state and returns the
    /// event to log (or a refusal); the core then decides whether the
    /// transaction admits it ([`crate::core::admit::admit`]). Nothing is written when `make`
    /// refuses, a guard fails or the event is not admitted.
    pub fn mutate(
        &self,
        fsm: &Fsm,
        guards: &Guards,
        client: &Client,
        make: impl FnOnce(&State, DateTime<Utc>) -> Result<Body>,
    ) -> Result<Outcome> {
        let make = |inner: &mut Inner, _: &mut LineOnly, now| make(&inner.state, now);
        self.mutate_with(fsm, guards, client, &mut LineOnly, make)
    }

    /// Answers a repeated request id with its first outcome: the event it
    /// wrote and the state right after it (refolded from the log, so later
    /// events do not leak into the answer; retries are rare).
    /// A reuse of the id by a different request is refused.
    fn replay(&self, inner: &Inner, guards: &Guards) -> Result<Option<Outcome>> {
        let Some(id) = guards.request_id.as_ref() else {
            return Ok(None);
        };
        let Some((event, first)) = inner.requests.get(id) else {
            return Ok(None);
        };
        if let (Some(first), Some(now)) = (first, &guards.request_digest)
            && first != now
        {
            return Err(Error::RequestIdReused(format!(
                "request id {id} was already used on transaction {} for a different request \
                 (seq {}, {}); nothing was changed. Use a new request id for a new request",
                self.id,
                event.seq,
                event.line.event.kind()
            )));
        }
        let event = event.clone();
        let state = self
            .read_lines(0, inner.len, 1)
            .ok()
            .and_then(|(lines, _)| {
                let upto: Vec<Line> = lines.into_iter().filter(|l| l.seq <= event.seq).collect();
                fold_lines(&upto, &inner.state.module, None)
                    .ok()
                    .map(|(s, _)| s)
            })
            .unwrap_or_else(|| (*inner.state).clone());
        Ok(Some(Outcome {
            state: Arc::new(state),
            event: Some(event),
            replayed: true,
        }))
    }

    /// Runs `f` while holding the transaction's lock, if it is DONE or FAIL
    /// under that lock; `None` (and `f` not run) if it is live.
    pub fn while_final<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let inner = lock(&self.inner);
        inner.state.is_terminal().then(f)
    }

    /// Whether the directory was removed from the tree while loaded.
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the transaction gone (its directory was deleted or moved away)
    /// and wakes its followers so they can end.
    pub fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Release);
        self.committed.send_modify(|_| {});
    }

    fn refuse_if_removed(&self) -> Result<()> {
        if self.is_removed() {
            return Err(Error::Unknown(format!(
                "transaction {} was removed from the tree",
                self.id
            )));
        }
        Ok(())
    }
}

pub(crate) fn check_guards(state: &State, guards: &Guards) -> Result<()> {
    if let Some(want) = &guards.expect_stage
        && *want != state.stage
    {
        return Err(Error::Conflict(format!(
            "expected transaction {} to be in stage {want}, but it is in {} (seq {}); nothing \
             was changed",
            state.txn_id, state.stage, state.seq
        )));
    }
    if let Some(want) = guards.expect_seq
        && !state.expects_seq(want)
    {
        return Err(Error::Conflict(format!(
            "expected transaction {} to be at seq {want}, but it is at seq {} (stage {}); \
             nothing was changed",
            state.txn_id, state.seq, state.stage
        )));
    }
    crate::core::lease::check_fences(&state.txn_id, &state.leases, &guards.fences)
}

/// Renames without replacing anything already at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(std::io::Error::from)
}
