//! The outbox: each transaction's log mirrored to etcd in order (SPEC §16).
//!
//! Driven by the store's post-commit notifications (each transaction's
//! `committed` watch, which moves only after the local fdatasync) and the
//! modules' change feeds, never on a writer's path: a mutation is answered
//! after the local sync whatever etcd does.
//!
//! One task per transaction with something to push. A push is one etcd
//! transaction carrying the next lines (`ev/<txn>/<seq>`, verbatim), the
//! evidence they add (`ctx/<txn>/<name>`: size and sha256) and the state
//! (`state/<txn>`: state.json plus `home` and `mirror_seq`), applied only
//! if the state key is still at the revision the last push left it at and
//! the first line's key does not exist. So pushes of one transaction are
//! serialised by etcd itself: the mirror is never reordered, gapped or
//! duplicated, even across restarts, lost replies or two daemons claiming
//! one host id. A refused push re-reads etcd's record and goes on from
//! there; refused again, it waits longer each time (`backoff.rs`). While
//! etcd is unreachable the task waits and retries; the lag stays visible
//! ([`Mirror::lag`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use ttm_etcd::op;

use super::backoff::Refusals;
use super::batch::{Batch, Record, batch, gap, read_after};
use super::cursor::Cursors;
use super::{Cluster, keys};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::module::{ChangeKind, Module};
use crate::store::txn::{Committed, Txn};

/// Pushes in flight at once, all transactions together.
const PARALLEL_PUSHES: usize = 16;
/// How often transactions are looked over for work the feeds did not
/// announce (a retry of a finished one, lines appended by hand, an outage's
/// backlog) and the cursors saved.
const SWEEP: Duration = Duration::from_millis(500);
/// How long a woken transaction task waits for more commits before it
/// pushes (see BENCHMARKS.md, cluster mode).
const GATHER: Duration = Duration::from_millis(10);
/// Pause before trying again while etcd is unreachable.
pub(super) const RETRY: Duration = Duration::from_millis(500);

/// What the mirror has not pushed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Transactions whose log is ahead of etcd.
    pub txns: u64,
    /// Lines not yet in etcd, all transactions together.
    pub events: u64,
}

/// The outbox of one daemon.
#[derive(Debug)]
pub struct Mirror {
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    cursors: Cursors,
    /// (module, txn) with a task running.
    running: Mutex<BTreeSet<(String, String)>>,
    /// (module, txn) → (pushed, local) for those behind.
    behind: Mutex<BTreeMap<(String, String), (u64, u64)>>,
    /// Archived or removed transactions whose keys are still to delete.
    doomed: Mutex<BTreeSet<(String, String)>>,
    /// Modules whose change feed is followed.
    feeds: Mutex<BTreeSet<String>>,
    /// Transactions that cannot be mirrored (another home in etcd, the log
    /// unreadable): not woken again, so not warned about again, until the
    /// next etcd session of this daemon.
    given_up: Mutex<BTreeSet<(String, String)>>,
    /// A feed missed changes (an archive among them, maybe): look at etcd
    /// for transactions gone here at the next sweep.
    recheck_due: AtomicBool,
    permits: Semaphore,
    stop: Shutdown,
}

/// What a push did.
#[derive(Debug)]
enum Pushed {
    /// Lines went to etcd, or etcd had them already.
    Moved,
    /// Nothing went: why. The record is read again before the next try.
    Refused(String),
}

/// Why a push did not happen.
#[derive(Debug)]
enum Stop {
    /// etcd unreachable: retry later.
    Unreachable,
    /// The transaction cannot be mirrored (another home in etcd, the log
    /// unreadable): said once in the log, the task ends.
    Give(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mirror {
    /// Starts mirroring `store` into `cluster`'s etcd until `stop`.
    pub fn start(cluster: Arc<Cluster>, store: Arc<Store>, stop: Shutdown) -> Arc<Mirror> {
        let mirror = Arc::new(Mirror {
            cursors: Cursors::open(&store.root),
            cluster,
            store,
            running: Mutex::default(),
            behind: Mutex::default(),
            doomed: Mutex::default(),
            feeds: Mutex::default(),
            given_up: Mutex::default(),
            recheck_due: AtomicBool::new(false),
            permits: Semaphore::new(PARALLEL_PUSHES),
            stop,
        });
        tokio::spawn(mirror.clone().sweep());
        mirror
    }

    /// What is not pushed yet.
    pub fn lag(&self) -> Lag {
        let behind = lock(&self.behind);
        Lag {
            txns: behind.len() as u64,
            events: behind.values().map(|(p, l)| l.saturating_sub(*p)).sum(),
        }
    }

    /// Lines of `module/id` not yet pushed.
    pub fn lag_of(&self, module: &str, id: &str) -> u64 {
        lock(&self.behind)
            .get(&(module.to_owned(), id.to_owned()))
            .map_or(0, |(p, l)| l.saturating_sub(*p))
    }

    /// Looks over every module's transactions every [`SWEEP`]: starts a
    /// task for each one ahead of its cursor, follows new modules' feeds,
    /// retries deletions, saves the cursors.
    async fn sweep(self: Arc<Self>) {
        let (mut checked, mut given_up_in) = (None, None);
        loop {
            let modules = self.store.modules();
            if self.recheck_due.swap(false, Ordering::AcqRel) {
                checked = None;
            }
            if self.cluster.session_id() != given_up_in {
                given_up_in = self.cluster.session_id();
                lock(&self.given_up).clear();
            }
            let ghosts =
                super::recheck::per_session(&self.cluster, &self.cursors, &modules, &mut checked)
                    .await;
            lock(&self.doomed).extend(ghosts);
            for module in &modules {
                self.follow_feed(module);
                for listed in module.list(None) {
                    let local = listed.summary.seq;
                    if local > self.cursors.get(&module.name, &listed.id) {
                        self.wake(&module.name, &listed.id);
                    }
                }
            }
            self.delete_doomed().await;
            self.cursors.save();
            tokio::select! {
                () = tokio::time::sleep(SWEEP) => {}
                () = self.stop.wait() => {
                    self.cursors.save();
                    return;
                }
            }
        }
    }

    /// Follows `module`'s change feed (once): a new transaction is mirrored
    /// at once, an archived or removed one loses its keys.
    fn follow_feed(self: &Arc<Self>, module: &Arc<Module>) {
        if !lock(&self.feeds).insert(module.name.clone()) {
            return;
        }
        let Ok(mut feed) = self.store.watch(&module.name) else {
            lock(&self.feeds).remove(&module.name);
            return;
        };
        let (mirror, name) = (self.clone(), module.name.clone());
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    change = feed.recv() => change,
                    () = mirror.stop.wait() => return,
                };
                match change {
                    Ok(c) if matches!(c.kind, ChangeKind::Archived | ChangeKind::Removed) => {
                        lock(&mirror.doomed).insert((name.clone(), c.txn_id.clone()));
                        mirror.delete_doomed().await;
                    }
                    Ok(c) => mirror.wake(&name, &c.txn_id),
                    // Missed changes: the sweep finds the work, and etcd's
                    // record the archives and removals among them.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        mirror.recheck_due.store(true, Ordering::Release);
                    }
                    // Followed again by the next sweep, if the module is.
                    Err(_) => {
                        lock(&mirror.feeds).remove(&name);
                        return;
                    }
                }
            }
        });
    }

    /// Starts the task of `module/txn` unless it runs.
    fn wake(self: &Arc<Self>, module: &str, txn: &str) {
        let key = (module.to_owned(), txn.to_owned());
        if lock(&self.doomed).contains(&key)
            || lock(&self.given_up).contains(&key)
            || !lock(&self.running).insert(key.clone())
        {
            return;
        }
        let mirror = self.clone();
        tokio::spawn(async move {
            mirror.follow_txn(&key.0, &key.1).await;
            lock(&mirror.running).remove(&key);
        });
    }

    /// Pushes `module/txn` whenever its log grows, until it is finished and
    /// fully pushed, removed, or the daemon stops.
    async fn follow_txn(&self, module: &str, id: &str) {
        let Some(txn) = self.load(module, id).await else {
            return;
        };
        let mut commits = txn.subscribe();
        let mut record: Option<Record> = None;
        let mut refused = Refusals::default();
        loop {
            let committed = *commits.borrow_and_update();
            if txn.is_removed() {
                return;
            }
            let pushed = record
                .as_ref()
                .map_or(self.cursors.get(module, id), |r| r.pushed);
            self.note_lag(module, id, pushed, committed.seq);
            if committed.seq > pushed {
                let pause = match self.push(module, &txn, &mut record, committed).await {
                    Ok(Pushed::Moved) => {
                        refused.moved(module, id);
                        continue;
                    }
                    Ok(Pushed::Refused(why)) => refused.again(module, id, pushed, &why),
                    Err(Stop::Unreachable) => RETRY,
                    Err(Stop::Give(why)) => {
                        tracing::warn!(
                            module,
                            txn = id,
                            "not mirrored to etcd until this daemon's next etcd session: {why}"
                        );
                        lock(&self.given_up).insert((module.to_owned(), id.to_owned()));
                        return;
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = self.stop.wait() => return,
                }
            }
            if txn.state().is_terminal() {
                return; // let go, so a finished transaction can be summarised
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                () = self.stop.wait() => return,
            }
            // Gather what else is committed meanwhile into the same push:
            // fewer etcd writes (and less CPU beside the writers) for a
            // few milliseconds of mirror lag.
            tokio::time::sleep(GATHER).await;
        }
    }

    /// The transaction, loaded on a blocking thread (it may be a summary).
    async fn load(&self, module: &str, id: &str) -> Option<Arc<Txn>> {
        let (store, module, id) = (self.store.clone(), module.to_owned(), id.to_owned());
        tokio::task::spawn_blocking(move || store.module(&module, false)?.txn(&id))
            .await
            .ok()?
            .ok()
    }

    fn note_lag(&self, module: &str, id: &str, pushed: u64, local: u64) {
        let key = (module.to_owned(), id.to_owned());
        let mut behind = lock(&self.behind);
        if local > pushed {
            behind.insert(key, (pushed, local));
        } else {
            behind.remove(&key);
        }
    }

    /// One push: the lines after what etcd has, up to `committed`, at most
    /// one batch.
    async fn push(
        &self,
        module: &str,
        txn: &Arc<Txn>,
        record: &mut Option<Record>,
        committed: Committed,
    ) -> Result<Pushed, Stop> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Stop::Unreachable)?;
        let known = match record {
            Some(r) => r.clone(),
            None => self.read_record(module, &txn.id, committed.seq).await?,
        };
        if known.pushed >= committed.seq {
            self.cursors.set(module, &txn.id, known.pushed);
            *record = Some(known);
            return Ok(Pushed::Moved);
        }
        let lines = read_after(txn, known.pushed, committed)
            .await
            .map_err(Stop::Give)?;
        // The mirror must stay a prefix of the log: never put a batch that
        // does not start right after what etcd has, or skips a seq.
        let refusal = if lines.is_empty() {
            Some(format!(
                "the log has no line after seq {} though {} are committed",
                known.pushed, committed.seq
            ))
        } else {
            gap(known.pushed, &lines)
        };
        if let Some(why) = refusal {
            *record = None;
            return Ok(Pushed::Refused(why));
        }
        let b = batch(module, self.cluster.host_id(), txn, &known, &lines);
        self.apply(module, &txn.id, record, &known, b).await
    }

    /// Sends the push `b` of `module/id` (made from `known`) to etcd.
    async fn apply(
        &self,
        module: &str,
        id: &str,
        record: &mut Option<Record>,
        known: &Record,
        b: Batch,
    ) -> Result<Pushed, Stop> {
        let outcome = self.cluster.etcd().txn(b.compare, b.ops, Vec::new()).await;
        match outcome {
            Ok(reply) if reply.succeeded => {
                self.cluster.up();
                let revision = reply.header.map_or(0, |h| h.revision);
                self.cursors.set(module, id, b.last);
                *record = Some(Record {
                    pushed: b.last,
                    revision,
                    state: Some(b.state),
                });
                Ok(Pushed::Moved)
            }
            Ok(_) => {
                // etcd moved since we looked (a reply lost, a restart):
                // look again and go on from what it has.
                *record = None;
                Ok(Pushed::Refused(format!(
                    "etcd refused lines {}..={} (its record moved, or a key {} is there already)",
                    known.pushed + 1,
                    b.last,
                    keys::event(module, id, known.pushed + 1)
                )))
            }
            Err(e) if e.is_unavailable() => {
                self.cluster.down(e.to_string());
                Err(Stop::Unreachable)
            }
            Err(e) => Err(Stop::Give(e.to_string())),
        }
    }

    /// What etcd holds of `txn`: its state key's revision and `mirror_seq`.
    async fn read_record(&self, module: &str, id: &str, local: u64) -> Result<Record, Stop> {
        let key = keys::state(module, id);
        let kv = match self.cluster.etcd().get(key.as_bytes()).await {
            Ok(kv) => kv,
            Err(e) if e.is_unavailable() => {
                self.cluster.down(e.to_string());
                return Err(Stop::Unreachable);
            }
            Err(e) => return Err(Stop::Give(e.to_string())),
        };
        self.cluster.up();
        let Some(kv) = kv else {
            return Ok(Record {
                pushed: 0,
                revision: 0,
                state: None,
            });
        };
        let object: Map<String, Value> = serde_json::from_slice(&kv.value).unwrap_or_default();
        let home = object.get("home").and_then(Value::as_str).unwrap_or("");
        if home != self.cluster.host_id() {
            return Err(Stop::Give(format!(
                "etcd has {key} homed on host {home:?}, not this host ({}); \
                 two hosts hold a transaction of this id",
                self.cluster.host_id()
            )));
        }
        let pushed = object
            .get("mirror_seq")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if pushed > local {
            return Err(Stop::Give(format!(
                "etcd has {pushed} lines of it, the local log only {local} \
                 (a tree restored from an older copy?)"
            )));
        }
        Ok(Record {
            pushed,
            revision: kv.mod_revision,
            state: Some(object),
        })
    }

    /// Deletes the keys of archived or removed transactions; those etcd
    /// could not take now stay for the next sweep.
    async fn delete_doomed(&self) {
        let doomed: Vec<(String, String)> = lock(&self.doomed).iter().cloned().collect();
        for (module, id) in doomed {
            if lock(&self.running).contains(&(module.clone(), id.clone())) {
                continue; // its task ends first (the txn is removed)
            }
            let ops = vec![
                op::delete(keys::state(&module, &id).as_bytes()),
                op::delete_prefix(keys::events(&module, &id).as_bytes()),
                op::delete_prefix(keys::ctxs(&module, &id).as_bytes()),
            ];
            match self.cluster.etcd().txn(Vec::new(), ops, Vec::new()).await {
                Ok(_) => {
                    lock(&self.doomed).remove(&(module.clone(), id.clone()));
                    lock(&self.behind).remove(&(module.clone(), id.clone()));
                    self.cursors.forget(&module, &id);
                }
                // Only a failure to reach etcd says etcd is down (and
                // makes coordination refuse for a while); a refusal is this
                // call's own, tried again at the next sweep.
                Err(e) if e.is_unavailable() => {
                    self.cluster.down(e.to_string());
                    return;
                }
                Err(e) => {
                    tracing::warn!(%module, txn = %id, error = %e, "could not delete a removed transaction's keys; trying again later");
                    return;
                }
            }
        }
    }
}
