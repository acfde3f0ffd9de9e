//! The writer of one transaction. Mutations queue up; whoever holds the
//! writer's turn applies them in rounds: one round takes the requests
//! queued (at most [`MAX_BATCH`]), and under the transaction's lock runs
//! each in order (request-id replay, guards, `admit`) against the state
//! the earlier ones left, collecting their lines in one buffer; then one
//! write, one fdatasync (unless durability `none`) and one view update
//! cover them all, and only then is each answered.
//!
//! The turn is a flag, not a thread: the first request queued on an idle
//! transaction starts a writer on the blocking pool, which runs rounds
//! until the queue is empty and then ends, so an idle transaction costs
//! no task. A synchronous caller (timer, hooks, leases, evidence) waits
//! for the turn in the queue like any request and runs its round on its
//! own thread, then passes the turn on — one writer at a time, whatever
//! the entry point.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::turn::{Entry, Queued, TurnOnPanic};
use super::{Client, EVENTS_FILE, Effect, Guards, Inner, LineOnly, MARK_EVERY, Outcome, Txn};
use super::{check_guards, lock};
use crate::core::admit::{Admit, admit};
use crate::core::event::{self, Body, Event, Logged, Meta};
use crate::core::fsm::Fsm;
use crate::core::state::{self, State};
use crate::core::{Error, Result};
use crate::store::fsio::Durability;
use crate::store::log;
use crate::store::txn::Recorded;

/// Requests applied in one round at most, so one round's answers are not
/// held back behind an unbounded queue.
pub const MAX_BATCH: usize = 256;

/// One request as a round runs it: stage its lines (or refuse).
type Stage<'a> = Box<dyn FnOnce(&Txn, &mut Inner, &mut Batch) -> Result<Outcome> + 'a>;

/// A [`Stage`] that can wait in the queue for another thread's round.
pub(super) type SendStage = Box<dyn FnOnce(&Txn, &mut Inner, &mut Batch) -> Result<Outcome> + Send>;

/// Lines staged in a round and not written yet, and how to take them back
/// if the write fails.
#[derive(Default)]
pub(super) struct Batch {
    text: String,
    marks: Vec<(u64, u64)>,
    /// The state before the first unwritten line.
    base: Option<Arc<State>>,
    /// Request ids recorded by the unwritten lines.
    ids: Vec<String>,
    /// Requests (their place in the round) whose lines are in `text`.
    unwritten: Vec<usize>,
    /// Requests whose lines a failed write lost, with the failure.
    lost: Vec<(usize, Error)>,
    /// The request being staged.
    current: usize,
    /// Whether the round wrote a line.
    wrote: bool,
}

impl Txn {
    /// Queues a mutation for the transaction's writer (starting one if
    /// none runs) and returns where its answer will come, once the round
    /// that applies it is durable. Like [`Txn::mutate`] otherwise.
    pub fn submit(
        &self,
        fsm: Arc<Fsm>,
        guards: Guards,
        client: Client,
        make: impl FnOnce(&State, DateTime<Utc>) -> Result<Body> + Send + 'static,
    ) -> oneshot::Receiver<Result<Outcome>> {
        let (reply, answer) = oneshot::channel();
        let stage = Box::new(move |txn: &Txn, inner: &mut Inner, batch: &mut Batch| {
            let make = |inner: &mut Inner, _: &mut LineOnly, now| make(&inner.state, now);
            txn.stage(inner, batch, &fsm, &guards, &client, &mut LineOnly, make)
        });
        let start = {
            let mut q = lock(&self.queue);
            q.entries.push_back(Entry::Request(Queued { stage, reply }));
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            self.start_writer();
        }
        answer
    }

    /// The synchronous entry: waits for the turn, applies this mutation
    /// first in a round with whatever is queued behind it, passes the turn.
    pub(super) fn mutate_with<E: Effect>(
        &self,
        fsm: &Fsm,
        guards: &Guards,
        client: &Client,
        effect: &mut E,
        make: impl FnOnce(&mut Inner, &mut E, DateTime<Utc>) -> Result<Body>,
    ) -> Result<Outcome> {
        self.take_turn();
        let unwinding = TurnOnPanic(self);
        let own: Stage<'_> = Box::new(|txn: &Txn, inner: &mut Inner, batch: &mut Batch| {
            txn.stage(inner, batch, fsm, guards, client, effect, make)
        });
        let queued = self.queued();
        let (mut stages, replies): (Vec<Stage<'_>>, Vec<_>) = queued
            .into_iter()
            .map(|q| (q.stage as Stage<'_>, q.reply))
            .unzip();
        stages.insert(0, own);
        let mut results = self.round(stages).into_iter();
        let mine = results
            .next()
            .unwrap_or_else(|| Err(Error::Bug("a round lost its first request".into())));
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        drop(unwinding);
        self.pass_turn();
        mine
    }

    /// Shares the transaction, so its writer can run on the blocking pool
    /// past the call that started it.
    pub fn share(self) -> Arc<Txn> {
        let txn = Arc::new(self);
        let _ = txn.me.set(Arc::downgrade(&txn));
        txn
    }

    /// Runs rounds while requests are queued; then passes the turn to a
    /// waiting synchronous caller, or gives it up.
    pub(super) fn write_rounds(&self) {
        let _unwinding = TurnOnPanic(self);
        while let Some(queued) = self.next_batch() {
            let (stages, replies): (Vec<Stage<'_>>, Vec<_>) = queued
                .into_iter()
                .map(|q| (q.stage as Stage<'_>, q.reply))
                .unzip();
            for (reply, result) in replies.into_iter().zip(self.round(stages)) {
                let _ = reply.send(result);
            }
        }
    }

    /// The requests at the head of the queue (up to a waiting caller).
    fn queued(&self) -> Vec<Queued> {
        let mut q = lock(&self.queue);
        let mut taken = Vec::new();
        while taken.len() < MAX_BATCH
            && let Some(Entry::Request(_)) = q.entries.front()
            && let Some(Entry::Request(r)) = q.entries.pop_front()
        {
            taken.push(r);
        }
        taken
    }

    /// The next round's requests, or `None` once the turn is handed over
    /// (to a waiting synchronous caller) or given up (nothing queued).
    fn next_batch(&self) -> Option<Vec<Queued>> {
        loop {
            let taken = self.queued();
            if !taken.is_empty() {
                return Some(taken);
            }
            let mut q = lock(&self.queue);
            if q.hand_to_waiting() {
                return None;
            }
            if q.entries.is_empty() {
                q.writing = false;
                return None;
            }
            // A request queued meanwhile: another round.
        }
    }

    /// One round: stages every request under the lock, writes their lines
    /// at once, makes them durable and publishes the view once, and
    /// returns each request's answer in order.
    fn round(&self, stages: Vec<Stage<'_>>) -> Vec<Result<Outcome>> {
        let mut results = Vec::with_capacity(stages.len());
        let mut batch = Batch::default();
        let behind = {
            let mut inner = lock(&self.inner);
            for (i, stage) in stages.into_iter().enumerate() {
                batch.current = i;
                results.push(stage(self, &mut inner, &mut batch));
            }
            // A failure is recorded in `lost`.
            let _ = self.flush(&mut inner, &mut batch);
            self.committed().len < inner.len
        };
        for (i, e) in batch.lost.drain(..) {
            results[i] = Err(e);
        }
        // Replays and pointer moves wait for the sync too, in case what
        // they answer with is not durable yet (a failed sync earlier).
        if results.iter().any(Result::is_ok)
            && (batch.wrote || behind)
            && let Err(e) = self.sync_and_publish()
        {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(copy(&e));
            }
        }
        results
    }

    /// Stages one request: every change of the transaction, evidence
    /// included, passes the guards, the request-id check and [`admit`]
    /// here, against the state the requests before it left.
    #[allow(clippy::too_many_arguments)]
    fn stage<E: Effect>(
        &self,
        inner: &mut Inner,
        batch: &mut Batch,
        fsm: &Fsm,
        guards: &Guards,
        client: &Client,
        effect: &mut E,
        make: impl FnOnce(&mut Inner, &mut E, DateTime<Utc>) -> Result<Body>,
    ) -> Result<Outcome> {
        self.refuse_if_removed()?;
        if batch.text.is_empty() {
            // Only with nothing staged: lines of another program are
            // numbered from the end of what is written.
            self.catch_up(inner, true, fsm)?;
        }
        if let Some(id) = &guards.request_id
            && batch.ids.contains(id)
        {
            // A retry of a request of this round: its answer is read back
            // from the log, so the line must be there.
            self.flush(inner, batch)?;
        }
        if let Some(done) = self.replay(inner, guards)? {
            return Ok(done);
        }
        check_guards(&inner.state, guards)?;
        let now = Utc::now();
        let body = make(inner, effect, now)?;
        if admit(fsm, &inner.state, &body)? == Admit::PointerOnly {
            return Ok(Outcome {
                state: inner.state.clone(),
                event: None,
                replayed: false,
            });
        }
        effect.before_append(inner)?;
        let outcome = self.stage_lines(inner, batch, body, now, guards, client);
        if E::WRITES_LINE_FIRST {
            self.flush(inner, batch)?;
            effect.after_append(inner)?;
        }
        Ok(outcome)
    }

    /// Adds the lines of one event to the round's buffer — usually one; a
    /// commit or failure is preceded by its `stage_transition`
    /// ([`crate::core::admit::lines`]) — and advances the in-memory state.
    /// Only the last line, the event the mutation is answered with,
    /// carries the request id.
    fn stage_lines(
        &self,
        inner: &mut Inner,
        batch: &mut Batch,
        body: Body,
        now: DateTime<Utc>,
        guards: &Guards,
        client: &Client,
    ) -> Outcome {
        if batch.base.is_none() {
            batch.base = Some(inner.state.clone());
        }
        let bodies = crate::core::admit::lines(body);
        let last = bodies.len();
        let mut event = None;
        for (i, body) in bodies.into_iter().enumerate() {
            let meta = Meta {
                ts: state::timestamp(now),
                seq: inner.state.seq + 1,
                request_id: guards.request_id.clone().filter(|_| i + 1 == last),
                client: client.clone(),
            };
            let mut object = body.to_object(&meta);
            if meta.request_id.is_some()
                && let Some(d) = &guards.request_digest
            {
                object.insert(event::REQUEST_DIGEST.into(), d.as_str().into());
            }
            if meta.seq % MARK_EVERY == 1 {
                batch
                    .marks
                    .push((meta.seq, inner.len + batch.text.len() as u64));
            }
            batch.text.push_str(&event::line(&object));
            let rec = Arc::new(Recorded {
                seq: meta.seq,
                line: Logged {
                    ts: Some(meta.ts),
                    request_id: meta.request_id,
                    event: Event::Body(body),
                },
            });
            Arc::make_mut(&mut inner.state).apply_logged(rec.seq, &rec.line);
            event = Some(rec);
        }
        if let (Some(id), Some(e)) = (&guards.request_id, &event) {
            let digest = guards.request_digest.clone();
            inner.requests.insert(id.clone(), (e.clone(), digest));
            batch.ids.push(id.clone());
        }
        batch.unwritten.push(batch.current);
        Outcome {
            state: inner.state.clone(),
            event,
            replayed: false,
        }
    }

    /// Appends one event at once, outside any round's buffer (catch-up's
    /// reports, while nothing is staged); the round's sync covers it.
    pub(super) fn append_now(
        &self,
        inner: &mut Inner,
        body: Body,
        now: DateTime<Utc>,
        guards: &Guards,
        client: &Client,
    ) -> Result<Outcome> {
        let mut batch = Batch::default();
        let outcome = self.stage_lines(inner, &mut batch, body, now, guards, client);
        self.flush(inner, &mut batch)?;
        Ok(outcome)
    }

    /// Writes the staged lines in one write. On failure the file is cut
    /// back (see [`log::append`]), the in-memory state and request ids go
    /// back to before them, and every request they belonged to fails.
    fn flush(&self, inner: &mut Inner, batch: &mut Batch) -> Result<()> {
        if batch.text.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(EVENTS_FILE);
        let len = inner.len;
        let written = inner
            .log_file(&path)
            .and_then(|log| log::append(log, len, &batch.text, Durability::None, &path));
        let bytes = batch.text.len() as u64;
        batch.text.clear();
        let base = batch.base.take();
        let ids = std::mem::take(&mut batch.ids);
        let marks = std::mem::take(&mut batch.marks);
        let unwritten = std::mem::take(&mut batch.unwritten);
        match written {
            Ok(()) => {
                inner.len += bytes;
                for (seq, offset) in marks {
                    self.mark(seq, offset);
                }
                batch.wrote = true;
                Ok(())
            }
            Err(e) => {
                if let Some(base) = base {
                    inner.state = base;
                }
                for id in ids {
                    inner.requests.remove(&id);
                }
                batch
                    .lost
                    .extend(unwritten.into_iter().map(|i| (i, copy(&e))));
                Err(e)
            }
        }
    }
}

/// The same failure for another request of the round (errors are not
/// `Clone`: an I/O source is not).
fn copy(e: &Error) -> Error {
    match e {
        Error::Io {
            action,
            path,
            source,
        } => Error::io(
            action,
            path.clone(),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        Error::Corrupt { path, message } => Error::Corrupt {
            path: path.clone(),
            message: message.clone(),
        },
        other => Error::Bug(other.to_string()),
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
