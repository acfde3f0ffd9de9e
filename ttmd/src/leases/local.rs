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
    pub fn open(store: Arc<Store>, host: String) -> Result<Local> {
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
            let token = match inner.tokens.next(name) {
                Ok(t) => t,
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
                }
            }
        }
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
        let busy = inner.table.entry(name).is_some();
        if busy && policy == Policy::NoWait {
            return Err(self.busy_error(inner, name));
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
        for name in names {
            validate_name(name)?;
            if policy == Policy::NoWait && inner.table.entry(name).is_some() {
                return Err(self.busy_error(&inner, name));
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
            inner.table.remove(name, txn);
            self.pump(&mut inner, name);
        }
        self.bump();
    }

    fn expire(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let now = self.now_ms();
        let due = inner.table.expired(now);
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
            self.pump(&mut inner, name);
        }
        if !due.is_empty() {
            self.bump();
        }
        let next = inner.table.next_expiry()?;
        Some(Duration::from_millis(next.saturating_sub(self.now_ms())))
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
