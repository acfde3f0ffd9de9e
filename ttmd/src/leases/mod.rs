//! Lease management (SPEC §13) behind a small trait, so a cluster backend
//! (etcd: a lease is a key attached to the daemon's etcd lease, its token
//! the key's create-revision) can stand in for the local one. The rules —
//! who is next, whether a token is current, when a holder lapses — are the
//! core's ([`crate::core::lease`]); a backend only records decisions
//! (events first, then its table) and hands out tokens.

pub mod cluster_view;
pub mod etcd;
mod ledger;
mod local;

use std::time::Duration;

use tokio::sync::watch;

use crate::core::Result;
use crate::core::lease::{TxnKey, Waiter};

pub use ledger::{LEDGER_FILE, Ledger, TokenSource};
pub use local::Local;

/// What to do when a lease is held by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Join the FIFO queue.
    Wait,
    /// Refuse at once ([`crate::core::Error::LeaseBusy`]).
    NoWait,
}

/// Who holds a lease, as callers are shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderView {
    pub txn: TxnKey,
    pub host: String,
    pub since: String,
    pub token: u64,
    pub ttl_ms: u64,
    pub expires_in_ms: u64,
}

/// Where a transaction stands for one lease after asking for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Held, with this fencing token.
    Held(u64),
    /// Waiting: 1 is next; the holder, if any.
    Queued(usize, Option<HolderView>),
}

/// One lease as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub name: String,
    pub holder: Option<HolderView>,
    pub queue: Vec<Waiter>,
    pub last_token: u64,
}

/// A lease backend. Every method is synchronous and may do file I/O: call
/// it on a blocking thread.
pub trait LeaseBackend: std::fmt::Debug + Send + Sync {
    /// Asks for `name` for `txn`: granted at once when free, else queued
    /// (or refused, per `policy`). Asking again answers where it stands.
    fn acquire(&self, name: &str, txn: &TxnKey, ttl_ms: u64, policy: Policy) -> Result<Standing>;

    /// Creates a transaction and acquires `names` for it in one step, so
    /// with [`Policy::NoWait`] a busy lease means nothing is created.
    // Long: a declaration without a body, which the length check reads on to the trait's end.
    fn acquire_at_create(
        &self,
        names: &[String],
        ttl_ms: u64,
        policy: Policy,
        create: &mut dyn FnMut() -> Result<TxnKey>,
    ) -> Result<(TxnKey, Vec<Standing>)>;

    /// Where `txn` stands for `name`; `None` when it neither holds nor
    /// waits (released, expired, or its transaction finished).
    fn standing(&self, name: &str, txn: &TxnKey) -> Option<Standing>;

    /// `txn` showed life: its leases' TTLs start again. Returns the names
    /// it holds.
    fn renew(&self, txn: &TxnKey) -> Vec<String>;

    /// Lets go of `name` (held or awaited). False when `txn` had neither.
    fn release(&self, name: &str, txn: &TxnKey) -> Result<bool>;

    /// `txn` reached DONE or FAIL: its leases end, its waits are dropped,
    /// and the next waiters are granted.
    fn finished(&self, txn: &TxnKey);

    /// Expires holders silent past their TTL and grants their successors;
    /// returns how long until the next holder may lapse.
    fn expire(&self) -> Option<Duration>;

    /// Every lease with a holder or a queue.
    fn list(&self) -> Vec<LeaseView>;

    /// A counter bumped on every grant, release, expiry and queue change:
    /// waiters and the expiry timer wake on it.
    fn changes(&self) -> watch::Receiver<u64>;

    /// The fence of every write of transaction `txn_id` while it holds
    /// `held` (name, token): with `--cluster`, each must still be its in
    /// etcd. Called under the transaction's lock, before the write, so it
    /// never takes the backend's own lock.
    fn fence(&self, txn_id: &str, held: &[(String, u64)]) -> Result<()> {
        let _ = (txn_id, held);
        Ok(())
    }
}

/// Ends the leases of transactions that finish or vanish without passing
/// through a lease-aware path (a directory removed by hand, a transaction
/// archived): it follows every module's change feed, subscribing to new
/// modules as leases change, and tells `gone` too (the timer and the
/// metrics forget what they kept of it). Aborted with the daemon.
pub async fn follow_ends(
    backend: std::sync::Arc<dyn LeaseBackend>,
    store: std::sync::Arc<crate::store::Store>,
    gone: std::sync::Arc<dyn Fn(&TxnKey) + Send + Sync>,
) {
    use crate::store::module::ChangeKind;
    let mut seen = std::collections::BTreeSet::new();
    let mut changes = backend.changes();
    loop {
        for module in store.modules() {
            if !seen.insert(module.name.clone()) {
                continue;
            }
            let Ok(mut feed) = store.watch(&module.name) else {
                continue;
            };
            let (b, name, gone) = (backend.clone(), module.name.clone(), gone.clone());
            tokio::spawn(async move {
                loop {
                    let change = match feed.recv().await {
                        Ok(c) => c,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if matches!(change.kind, ChangeKind::Removed | ChangeKind::Archived) {
                        let (b, key) = (b.clone(), (name.clone(), change.txn_id));
                        gone(&key);
                        let _ = tokio::task::spawn_blocking(move || b.finished(&key)).await;
                    }
                }
            });
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the expiry timer until the daemon stops (the task is aborted): it
/// sleeps until the earliest pending expiry, or until something changes.
pub async fn run_expiry(backend: std::sync::Arc<dyn LeaseBackend>) {
    let mut changes = backend.changes();
    loop {
        let b = backend.clone();
        let next = match tokio::task::spawn_blocking(move || b.expire()).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("lease expiry failed: {e}");
                Some(Duration::from_secs(1))
            }
        };
        let changed = changes.changed();
        match next {
            Some(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = changed => if r.is_err() { return },
                }
            }
            None => {
                if changed.await.is_err() {
                    return;
                }
            }
        }
    }
}
