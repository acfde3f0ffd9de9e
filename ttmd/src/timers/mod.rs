//! The daemon's timer for stage timeouts, deadlines and stalls (SPEC §14).
//! The rules are the core's ([`crate::core::timing`]); this keeps, for
//! each live transaction with something pending, the moment it falls due,
//! in a queue ordered by time, and sleeps until the earliest. It never
//! walks every transaction: a transaction is (re)armed when it changes
//! through the service (every mutation, creation, migrate, a heartbeat),
//! after its own time events, when the FSMs are reloaded, and once at
//! start-up. Lines another program appends are seen when the timer next
//! looks at that transaction (its life moves a pending stall later; a
//! stage change there is timed from the next change through ttmd).
//!
//! What it appends goes through `Txn::mutate`, like any other change, and
//! the rules are asked again under the transaction's lock, so a change
//! that raced the timer (a transition just before a timeout) wins, and
//! nothing is ever logged twice: the log records what was done.
//!
//! Heartbeats are kept in memory: logging each would grow logs by a line
//! per period for nothing the log needs. After a restart the last sign of
//! life is the later of the last logged one and the daemon's start.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::core::fsm::Fsm;
use crate::core::lease::TxnKey;
use crate::core::state::State;
use crate::core::timing::{Watch, due, next_due};
use crate::core::{Error, Result};
use crate::leases::LeaseBackend;
use crate::store::Store;
use crate::store::txn::Guards;

/// When a time rule the disk failed is tried again.
const RETRY: Duration = Duration::from_secs(30);
/// The longest the timer sleeps without looking at the clock again.
const NAP_MAX: Duration = Duration::from_secs(60);

/// Pending time actions of one tree.
#[derive(Debug)]
pub struct Timers {
    store: Arc<Store>,
    leases: Arc<dyn LeaseBackend>,
    /// When this daemon started watching.
    since: DateTime<Utc>,
    inner: Mutex<Inner>,
    /// Woken when something falls due earlier than the timer sleeps.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// (when, transaction), earliest first.
    queue: BTreeSet<(DateTime<Utc>, TxnKey)>,
    /// Each queued transaction's time (to find its queue entry) and the
    /// seq of the state it was computed from.
    at: HashMap<TxnKey, (DateTime<Utc>, u64)>,
    /// Last `ttmctl heartbeat` per transaction.
    heard: HashMap<TxnKey, DateTime<Utc>>,
}

impl Timers {
    /// Arms every loaded live transaction of `store` (finished ones, kept
    /// as summaries, have nothing due). What fell due while no daemon ran
    /// is due at once.
    pub fn open(store: Arc<Store>, leases: Arc<dyn LeaseBackend>) -> Timers {
        let timers = Timers {
            store,
            leases,
            since: Utc::now(),
            inner: Mutex::default(),
            wake: Notify::new(),
        };
        timers.rearm_all();
        timers
    }

    /// Arms every loaded transaction again (at start-up, after the FSMs
    /// were reloaded).
    pub fn rearm_all(&self) {
        for module in self.store.modules() {
            let fsm = module.fsm();
            for id in module.loaded_ids() {
                if let Ok(txn) = module.txn(&id) {
                    self.arm(&(module.name.clone(), id), &txn.state(), &fsm);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch(&self, inner: &Inner, key: &TxnKey) -> Watch {
        Watch {
            since: self.since,
            heard: inner.heard.get(key).copied(),
        }
    }

    /// Puts `key` in the queue at the time its next action falls due (or
    /// takes it out when nothing will); wakes the timer if that is earlier
    /// than anything queued. Two mutations of one transaction may arm it
    /// in either order: a state older than the one its entry was computed
    /// from is ignored (an entry left by an older state only fires early,
    /// finds nothing due and is re-armed from the current state).
    pub fn arm(&self, key: &TxnKey, state: &State, fsm: &Fsm) {
        let mut inner = self.lock();
        if state.is_terminal() {
            inner.heard.remove(key);
        }
        let old = inner.at.get(key).copied();
        if old.is_some_and(|(_, seq)| seq > state.seq) {
            return;
        }
        let next = next_due(state, fsm, self.watch(&inner, key));
        if old.map(|(at, _)| at) == next {
            // Same time: keep the entry, but remember the newer state, so
            // an older one armed late is still told apart.
            if let Some(at) = next {
                inner.at.insert(key.clone(), (at, state.seq));
            }
            return;
        }
        if let Some((old, _)) = old {
            inner.queue.remove(&(old, key.clone()));
            inner.at.remove(key);
        }
        let Some(next) = next else { return };
        let first = inner.queue.first().is_none_or(|(head, _)| next < *head);
        inner.queue.insert((next, key.clone()));
        inner.at.insert(key.clone(), (next, state.seq));
        drop(inner);
        if first {
            self.wake.notify_one();
        }
    }

    /// `ttmctl heartbeat`: a sign of life, kept in memory.
    pub fn heard(&self, key: &TxnKey, state: &State, fsm: &Fsm) {
        self.lock().heard.insert(key.clone(), Utc::now());
        self.arm(key, state, fsm);
    }

    /// Applies everything due now; returns how long until the next.
    pub fn fire(&self) -> Option<Duration> {
        loop {
            let now = Utc::now();
            let key = {
                let mut inner = self.lock();
                let (at, key) = inner.queue.first().cloned()?;
                if at > now {
                    let wait = (at - now).to_std().unwrap_or_default();
                    return Some(wait);
                }
                inner.queue.remove(&(at, key.clone()));
                inner.at.remove(&key);
                key
            };
            match self.apply(&key) {
                Ok(()) => {}
                // The disk failed it: what is due stays due; try again
                // later rather than drop the transaction from the timer.
                Err(e @ (Error::Io { .. } | Error::ReadOnlyTree(_))) => {
                    tracing::warn!(module = %key.0, txn = %key.1, error = %e,
                        "time rule not applied; trying again in {}s", RETRY.as_secs());
                    self.requeue(
                        &key,
                        Utc::now() + chrono::TimeDelta::from_std(RETRY).unwrap_or_default(),
                    );
                }
                // Removed or archived meanwhile: nothing to do until it
                // changes again.
                Err(e) => {
                    tracing::info!(module = %key.0, txn = %key.1, error = %e, "time rule not applied");
                }
            }
        }
    }

    /// Drops what is kept of `key` (archived or removed).
    pub fn forget(&self, key: &TxnKey) {
        let mut inner = self.lock();
        inner.heard.remove(key);
        if let Some((at, _)) = inner.at.remove(key) {
            inner.queue.remove(&(at, key.clone()));
        }
    }

    /// Queues `key` again at `at`, unless it was armed meanwhile. The seq
    /// 0 lets any state that arms it later replace the entry.
    fn requeue(&self, key: &TxnKey, at: DateTime<Utc>) {
        let mut inner = self.lock();
        if inner.at.contains_key(key) {
            return;
        }
        inner.queue.insert((at, key.clone()));
        inner.at.insert(key.clone(), (at, 0));
    }

    /// Appends what the rules call for now, one event at a time until
    /// nothing is due, then arms the transaction for what comes next.
    fn apply(&self, key: &TxnKey) -> Result<()> {
        let module = self.store.module(&key.0, false)?;
        let txn = module.txn(&key.1)?;
        let fsm = module.fsm();
        let client = Some(serde_json::json!({"agent": "ttmd", "source": "timer"}));
        loop {
            let w = self.watch(&self.lock(), key);
            if due(&txn.state(), &fsm, w, Utc::now()).is_none() {
                break;
            }
            let outcome = txn.mutate(&fsm, &Guards::default(), &client, |s, now| {
                due(s, &fsm, w, now).ok_or_else(|| Error::Refused("nothing is due".into()))
            });
            let outcome = match outcome {
                Ok(o) => o,
                // A change raced the timer and made it moot.
                Err(Error::Refused(_)) => break,
                Err(e) => return Err(e),
            };
            module.announce(&outcome);
            if let Some(body) = outcome.body() {
                let text = crate::core::timing::describe(body).unwrap_or_default();
                tracing::info!(module = %key.0, txn = %key.1, event = body.kind(), "{text}");
            }
            if outcome.state.is_terminal() {
                self.leases.finished(key);
            }
        }
        self.arm(key, &txn.state(), &fsm);
        Ok(())
    }

    /// How many transactions have something pending (for tests and status).
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }
}

/// How long a sleep of `wait` lasts at most: the queue is in wall-clock
/// time and the sleep monotonic, so after a suspend or a clock step the
/// timer looks again within a minute.
fn nap(wait: Duration) -> Duration {
    wait.min(NAP_MAX)
}

/// Runs the timer until the daemon stops (the task is aborted): it sleeps
/// until the earliest pending action, or until an earlier one is armed.
pub async fn run(timers: Arc<Timers>) {
    loop {
        let t = timers.clone();
        let next = match tokio::task::spawn_blocking(move || t.fire()).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("time rules failed: {e}");
                Some(Duration::from_secs(1))
            }
        };
        let woken = timers.wake.notified();
        match next {
            Some(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(nap(wait)) => {}
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

#[cfg(test)]
mod tests;
