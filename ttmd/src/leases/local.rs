//! The local lease backend: one daemon, one tree. Its table is rebuilt
//! from the transactions' logs at start-up; every decision is appended to
//! the transaction's log (and synced) before the table changes, so a crash
//! at any point leaves the logs saying exactly who holds and who waits.
//!
//! Lock order: this backend's mutex, then a transaction's lock (through
//! `Txn::mutate`). Nothing calls into the backend while holding a
//! transaction's lock.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::etcd::{Gate, POLL};
use super::{HolderView, LeaseBackend, LeaseView, Ledger, Policy, Standing, TokenSource};
use crate::core::event::Body;
use crate::core::lease::table::Place;
use crate::core::lease::{Holder, Table, TxnKey, Waiter, validate_name};
use crate::core::{Error, Result};
use crate::store::Store;
use crate::store::txn::Guards;

/// Leases of one tree, kept by this daemon.
#[derive(Debug)]
pub struct Local {
    store: Arc<Store>,
    host: String,
    epoch: Instant,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    /// With `--cluster`: etcd decides every grant (`etcd.rs`).
    gate: Option<Arc<Gate>>,
}

#[derive(Debug)]
struct Inner {
    table: Table,
    tokens: Box<dyn TokenSource>,
}

impl Local {
    /// Rebuilds the leases of `store` from its transactions' logs: holders'
    /// TTLs start now, queues keep ticket order, and any name left without
    /// a holder but with waiters is granted.
    pub fn open(store: Arc<Store>, host: String, gate: Option<Arc<Gate>>) -> Result<Local> {
        let mut tokens: Box<dyn TokenSource> =
            Box::new(Ledger::open(&store.root, store.durability())?);
        let mut txns = Vec::new();
        for module in store.modules() {
            for id in module.loaded_ids() {
                let Ok(txn) = module.txn(&id) else { continue };
                let state = txn.state();
                if state.leases.is_empty() || state.is_terminal() {
                    continue;
                }
                for (name, h) in &state.leases.held {
                    tokens.raise(name, h.token);
                }
                for (name, a) in &state.leases.awaited {
                    tokens.raise(name, a.ticket);
                }
                txns.push(((module.name.clone(), id), state.leases.clone()));
            }
        }
        let (table, losers) = Table::rebuild(txns, 0);
        let (changed, _) = watch::channel(0);
        let local = Local {
            store,
            host,
            epoch: Instant::now(),
            inner: Mutex::new(Inner { table, tokens }),
            changed,
            gate,
        };
        local.settle(losers);
        Ok(local)
    }

    /// After a rebuild: records that the lower-token claimants lost, then
    /// grants every name that has waiters and no holder.
    fn settle(&self, losers: Vec<(String, Holder)>) {
        let mut inner = self.lock();
        for (name, h) in losers {
            let body = Body::LeaseExpired {
                name: name.clone(),
                token: h.token,
            };
            if let Err(e) = self.append(&h.txn, body) {
                tracing::warn!(lease = %name, error = %e, "could not record a lost lease");
            }
        }
        let names: Vec<String> = inner.table.entries().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.pump(&mut inner, &name);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every field changes only after its file write succeeded, so a
        // panic elsewhere leaves the table consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Appends `body` to `txn`'s log through the one mutation path (so a
    /// finished transaction refuses it), tells watchers, returns its `ts`.
    fn append(&self, txn: &TxnKey, body: Body) -> Result<String> {
        let module = self.store.module(&txn.0, false)?;
        let t = module.txn(&txn.1)?;
        let fsm = module.fsm();
        let out = t.mutate(&fsm, &Guards::default(), &None, |_, _| Ok(body))?;
        module.announce(&out);
        Ok(out
            .event
            .and_then(|e| e.line.ts.clone())
            .unwrap_or_default())
    }

    /// Grants `name` to the head of its queue while it has no holder; a
    /// waiter whose transaction can no longer take it (finished, removed)
    /// is dropped and the next one tried.
    fn pump(&self, inner: &mut Inner, name: &str) {
        while let Some(w) = inner.table.next_grant(name).cloned() {
            let token = match self.token_for(inner, name, &w) {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(lease = %name, error = %e, "cannot issue a fencing token");
                    return;
                }
            };
            let body = Body::LeaseAcquired {
                name: name.to_string(),
                token,
                ttl_ms: w.ttl_ms,
            };
            match self.append(&w.txn, body) {
                Ok(ts) => {
                    let now = self.now_ms();
                    inner.table.grant(name, token, &ts, now);
                }
                Err(e) => {
                    tracing::info!(lease = %name, txn = %w.txn.1, error = %e, "waiter dropped");
                    inner.table.remove(name, &w.txn);
                    if let Some(gate) = &self.gate {
                        gate.release(name, &w.txn, token);
                    }
                }
            }
        }
    }

    /// The token for granting `name` to `w`: the ledger's next, or with
    /// `--cluster` the holder key's create-revision once etcd says `w` is
    /// next in the cluster (`None` until then).
    fn token_for(&self, inner: &mut Inner, name: &str, w: &Waiter) -> Result<Option<u64>> {
        let Some(gate) = &self.gate else {
            return inner.tokens.next(name).map(Some);
        };
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let token = gate.claim(name, &w.txn, w.ttl_ms, &since)?;
        if let Some(t) = token {
            inner.tokens.raise(name, t);
        }
        Ok(token)
    }

    /// With `--cluster`: tries again to grant every name that has waiters
    /// here and no holder (the holder may be another host's, gone now).
    /// True when one was granted.
    fn pump_waiting(&self, inner: &mut Inner) -> bool {
        let waiting: Vec<String> = inner
            .table
            .entries()
            .filter(|(_, e)| e.holder.is_none() && !e.queue.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        let mut granted = false;
        for name in waiting {
            self.pump(inner, &name);
            granted |= inner.table.entry(&name).is_some_and(|e| e.holder.is_some());
        }
        granted
    }

    fn holder_view(&self, h: &Holder) -> HolderView {
        let ends = crate::core::lease::table::expires_at(h.life_ms, h.ttl_ms);
        HolderView {
            txn: h.txn.clone(),
            host: self.host.clone(),
            since: h.since.clone(),
            token: h.token,
            ttl_ms: h.ttl_ms,
            expires_in_ms: ends.saturating_sub(self.now_ms()),
        }
    }

    fn standing_in(&self, inner: &Inner, name: &str, txn: &TxnKey) -> Option<Standing> {
        match inner.table.place(name, txn) {
            Place::Held(t) => Some(Standing::Held(t)),
            Place::Queued(p) => {
                let holder = inner.table.entry(name).and_then(|e| e.holder.as_ref());
                Some(Standing::Queued(p, holder.map(|h| self.holder_view(h))))
            }
            Place::Absent => None,
        }
    }

    fn busy_error(&self, inner: &Inner, name: &str) -> Error {
        let entry = inner.table.entry(name);
        let waiting = entry.map_or(0, |e| e.queue.len());
        match entry.and_then(|e| e.holder.as_ref()) {
            Some(h) => Error::LeaseBusy(format!(
                "lease {name} is busy: held by transaction {} (module {}) on host {} since {} \
                 with token {}, {waiting} waiting; try again later, or wait in the queue \
                 without --no-wait",
                h.txn.1, h.txn.0, self.host, h.since, h.token
            )),
            None => Error::LeaseBusy(format!(
                "lease {name} is busy: {waiting} transaction(s) queued for it; try again \
                 later, or wait in the queue without --no-wait"
            )),
        }
    }

    /// Refuses `name` when it is held or awaited, here or (with
    /// `--cluster`) on any host.
    fn refuse_if_busy(&self, inner: &Inner, name: &str) -> Result<()> {
        if inner.table.entry(name).is_some() {
            return Err(self.busy_error(inner, name));
        }
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        match gate.busy(name)? {
            Some(who) => Err(Error::LeaseBusy(format!(
                "lease {name} is busy: {who}; try again later, or wait in the queue \
                 without --no-wait"
            ))),
            None => Ok(()),
        }
    }

    /// [`LeaseBackend::acquire`] under the lock.
    fn acquire_locked(
        &self,
        inner: &mut Inner,
        name: &str,
        txn: &TxnKey,
        ttl_ms: u64,
        policy: Policy,
    ) -> Result<Standing> {
        validate_name(name)?;
        if let Some(s) = self.standing_in(inner, name, txn) {
            return Ok(s);
        }
        if policy == Policy::NoWait {
            self.refuse_if_busy(inner, name)?;
        }
        if let Some(gate) = &self.gate {
            gate.enqueue(name, txn, ttl_ms)?;
        }
        let ticket = inner.tokens.next(name)?;
        let body = Body::LeaseRequested {
            name: name.to_string(),
            ticket,
            ttl_ms,
        };
        let since = self.append(txn, body)?;
        let w = Waiter {
            txn: txn.clone(),
            ticket,
            ttl_ms,
            since,
        };
        inner.table.enqueue(name, w);
        self.pump(inner, name);
        self.bump();
        self.standing_in(inner, name, txn)
            .ok_or_else(|| Error::Refused(format!("transaction {} cannot take {name}", txn.1)))
    }
}

impl LeaseBackend for Local {
    fn acquire(&self, name: &str, txn: &TxnKey, ttl_ms: u64, policy: Policy) -> Result<Standing> {
        let mut inner = self.lock();
        self.acquire_locked(&mut inner, name, txn, ttl_ms, policy)
    }

    fn acquire_at_create(
        &self,
        names: &[String],
        ttl_ms: u64,
        policy: Policy,
        create: &mut dyn FnMut() -> Result<TxnKey>,
    ) -> Result<(TxnKey, Vec<Standing>)> {
        let mut inner = self.lock();
        if let (Some(gate), false) = (&self.gate, names.is_empty()) {
            gate.require("creating a transaction with a lease")?;
        }
        for name in names {
            validate_name(name)?;
            if policy == Policy::NoWait {
                self.refuse_if_busy(&inner, name)?;
            }
        }
        let txn = create()?;
        let mut out = Vec::new();
        for name in names {
            out.push(self.acquire_locked(&mut inner, name, &txn, ttl_ms, Policy::Wait)?);
        }
        Ok((txn, out))
    }

    fn standing(&self, name: &str, txn: &TxnKey) -> Option<Standing> {
        let inner = self.lock();
        self.standing_in(&inner, name, txn)
    }

    fn renew(&self, txn: &TxnKey) -> Vec<String> {
        let now = self.now_ms();
        let mut inner = self.lock();
        inner.table.touch(txn, now);
        let names = inner.table.names_of(txn);
        names
            .into_iter()
            .filter(|n| matches!(inner.table.place(n, txn), Place::Held(_)))
            .collect()
    }

    fn release(&self, name: &str, txn: &TxnKey) -> Result<bool> {
        validate_name(name)?;
        let mut inner = self.lock();
        let token = match inner.table.place(name, txn) {
            Place::Held(t) => t,
            Place::Queued(_) => 0,
            Place::Absent => return Ok(false),
        };
        let body = Body::LeaseReleased {
            name: name.to_string(),
            token,
        };
        self.append(txn, body)?;
        inner.table.remove(name, txn);
        if let Some(gate) = &self.gate {
            gate.release(name, txn, token);
        }
        self.pump(&mut inner, name);
        self.bump();
        Ok(true)
    }

    fn finished(&self, txn: &TxnKey) {
        let mut inner = self.lock();
        let names = inner.table.names_of(txn);
        if names.is_empty() {
            return;
        }
        // The commit or failure already ended them in the log (the fold
        // clears a finished transaction's leases); only the table follows.
        for name in &names {
            let place = inner.table.remove(name, txn);
            if let Some(gate) = &self.gate {
                let token = if let Place::Held(t) = place { t } else { 0 };
                gate.release(name, txn, token);
            }
            self.pump(&mut inner, name);
        }
        self.bump();
    }

    fn expire(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let now = self.now_ms();
        let mut due = inner.table.expired(now);
        if let Some(gate) = &self.gate {
            due.extend(lost_in_cluster(&inner, gate, &due));
        }
        for (name, h) in &due {
            let body = Body::LeaseExpired {
                name: name.clone(),
                token: h.token,
            };
            if let Err(e) = self.append(&h.txn, body) {
                // Finished or removed meanwhile: it holds nothing anyway.
                tracing::info!(lease = %name, txn = %h.txn.1, error = %e, "expiry not logged");
            }
            tracing::info!(lease = %name, txn = %h.txn.1, token = h.token, "lease expired");
            inner.table.remove(name, &h.txn);
            if let Some(gate) = &self.gate {
                gate.release(name, &h.txn, h.token);
            }
            self.pump(&mut inner, name);
        }
        let granted = self.gate.is_some() && self.pump_waiting(&mut inner);
        if !due.is_empty() || granted {
            self.bump();
        }
        let next = inner
            .table
            .next_expiry()
            .map(|next| Duration::from_millis(next.saturating_sub(self.now_ms())));
        // With --cluster, waiters look at etcd again and holders renew
        // their keys there every POLL.
        match (&self.gate, inner.table.entries().next()) {
            (Some(_), Some(_)) => Some(next.map_or(POLL, |n| n.min(POLL))),
            _ => next,
        }
    }

    fn fence(&self, txn_id: &str, held: &[(String, u64)]) -> Result<()> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        for (name, token) in held {
            gate.check(txn_id, name, *token)?;
        }
        Ok(())
    }

    fn list(&self) -> Vec<LeaseView> {
        let inner = self.lock();
        inner
            .table
            .entries()
            .map(|(name, e)| LeaseView {
                name: name.clone(),
                holder: e.holder.as_ref().map(|h| self.holder_view(h)),
                queue: e.queue.clone(),
                last_token: inner.tokens.last(name),
            })
            .collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The holders here whose key etcd no longer has (its TTL lapsed there,
/// e.g. while this daemon was paused), besides those already `due`; the
/// others' keys are renewed.
fn lost_in_cluster(inner: &Inner, gate: &Gate, due: &[(String, Holder)]) -> Vec<(String, Holder)> {
    inner
        .table
        .entries()
        .filter_map(|(n, e)| e.holder.as_ref().map(|h| (n, h)))
        .filter(|(n, _)| !due.iter().any(|(d, _)| d == *n))
        .filter(|(n, h)| !gate.keep(n, h.token))
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect()
}
