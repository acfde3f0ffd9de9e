//! The writer's turn: who may run a round of a transaction now. A
//! request queues and the first on an idle transaction starts a writer
//! on the blocking pool; a synchronous caller waits in the same queue,
//! or takes the turn over from a writer that could not start.

use std::collections::VecDeque;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::writer::SendStage;
use super::{Outcome, Txn, lock};
use crate::core::{Error, Result};

/// The runtime writers run on when the caller is a plain thread (the
/// file watcher): set once by the daemon at start. Without it a writer
/// started from such a thread would run on that thread, which would then
/// write for every client instead of watching the tree.
static RUNTIME: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();

/// Makes writers started outside the runtime run on its blocking pool.
pub fn use_runtime(handle: tokio::runtime::Handle) {
    let _ = RUNTIME.set(handle);
}

/// How long a synchronous caller waits for the turn before checking
/// whether the writer that holds it has not even started.
const TAKE_OVER_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// A request queued by [`Txn::submit`].
pub(super) struct Queued {
    pub(super) stage: SendStage,
    pub(super) reply: oneshot::Sender<Result<Outcome>>,
}

pub(super) enum Entry {
    Request(Queued),
    /// A synchronous caller waiting for the turn (with its number).
    Turn(u64, mpsc::SyncSender<()>),
}

/// The requests waiting for the writer, and whether someone holds the turn.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) entries: VecDeque<Entry>,
    pub(super) writing: bool,
    /// The turn belongs to a writer spawned on the blocking pool that has
    /// not started yet. A synchronous caller (itself on a pool thread)
    /// takes the turn over rather than wait for it: with the pool full of
    /// such callers the spawned writer would never get a thread.
    spawned: bool,
    /// Numbers the waiting callers, so one can take its place back.
    turns: u64,
}

impl Queue {
    /// Hands the turn to the caller waiting at the head of the queue, if
    /// one is still there (callers that gave up are dropped); true if one
    /// took it.
    pub(super) fn hand_to_waiting(&mut self) -> bool {
        while let Some(Entry::Turn(..)) = self.entries.front() {
            if let Some(Entry::Turn(_, turn)) = self.entries.pop_front()
                && turn.send(()).is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Whether a writer holds the turn or requests wait.
    pub(super) fn is_busy(&self) -> bool {
        self.writing || !self.entries.is_empty()
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("entries", &self.entries.len())
            .field("writing", &self.writing)
            .finish()
    }
}

impl Txn {
    /// Runs `f` holding the writer's turn (no round runs meanwhile).
    pub(super) fn with_turn<T>(&self, f: impl FnOnce() -> T) -> T {
        self.take_turn();
        let unwinding = TurnOnPanic(self);
        let result = f();
        drop(unwinding);
        self.pass_turn();
        result
    }

    /// Holds the writer's turn until [`Txn::release_writes`]: a creation
    /// keeps writes out until its directory is durable in `txns/`.
    pub fn hold_writes(&self) {
        self.take_turn();
    }

    /// Lets writes held by [`Txn::hold_writes`] go on.
    pub fn release_writes(&self) {
        self.pass_turn();
    }

    /// Waits until this thread holds the writer's turn.
    pub(super) fn take_turn(&self) {
        let (me, wait) = {
            let mut q = lock(&self.queue);
            if !q.writing || std::mem::take(&mut q.spawned) {
                q.writing = true;
                return;
            }
            let (turn, wait) = mpsc::sync_channel(1);
            q.turns += 1;
            let me = q.turns;
            q.entries.push_back(Entry::Turn(me, turn));
            (me, wait)
        };
        loop {
            match wait.recv_timeout(TAKE_OVER_AFTER) {
                // Handed over; or the writer dropped the sender unsent,
                // which only a bug does: go on then, rather than hang.
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.take_over(me) {
                        return;
                    }
                }
            }
        }
    }

    /// Takes the turn from a writer spawned on the pool that has not
    /// started, if caller `me` still waits in the queue: this caller holds
    /// a pool thread, and with every pool thread held by such callers the
    /// writer would never start.
    fn take_over(&self, me: u64) -> bool {
        let mut q = lock(&self.queue);
        if !q.spawned {
            return false;
        }
        let mine = |e: &Entry| matches!(e, Entry::Turn(n, _) if *n == me);
        let Some(at) = q.entries.iter().position(mine) else {
            // Already handed over: the answer is on its way.
            return false;
        };
        q.entries.remove(at);
        q.spawned = false;
        true
    }

    /// Hands the turn on after a synchronous caller's round: to a writer
    /// on the blocking pool if requests are waiting, so the caller's thread
    /// is not kept writing for others.
    pub(super) fn pass_turn(&self) {
        let mut q = lock(&self.queue);
        // A caller waiting next gets the turn straight from this one (no
        // pool thread needed to hand it over).
        if q.hand_to_waiting() {
            return;
        }
        if q.entries.is_empty() {
            q.writing = false;
            return;
        }
        drop(q);
        self.start_writer();
    }

    pub(super) fn start_writer(&self) {
        let me = self.me.get().and_then(std::sync::Weak::upgrade);
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| RUNTIME.get().cloned());
        match (me, runtime) {
            (Some(txn), Some(runtime)) => {
                lock(&self.queue).spawned = true;
                runtime.spawn_blocking(move || {
                    // Unless a synchronous caller took the turn over
                    // meanwhile (then it writes, and this one is not needed).
                    if std::mem::take(&mut lock(&txn.queue).spawned) {
                        txn.write_rounds();
                    }
                });
            }
            // No runtime (a unit test) or not shared: write here.
            _ => self.write_rounds(),
        }
    }
}

/// Gives the turn back if a round panics (a bug), so the transaction's
/// queue does not wait forever for a writer that is gone: the requests
/// still queued are refused, a caller waiting for the turn gets it.
pub(super) struct TurnOnPanic<'a>(pub(super) &'a Txn);

impl Drop for TurnOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut q = lock(&self.0.queue);
        while let Some(entry) = q.entries.pop_front() {
            match entry {
                Entry::Request(r) => {
                    let stopped =
                        "the transaction's writer failed; nothing more was written; retry";
                    let _ = r.reply.send(Err(Error::Bug(stopped.into())));
                }
                Entry::Turn(_, turn) => {
                    if turn.send(()).is_ok() {
                        return;
                    }
                }
            }
        }
        q.writing = false;
    }
}
