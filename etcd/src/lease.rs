//! [`LeaseKeeper`]: an etcd lease kept alive in the background.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Etcd;

/// What a [`LeaseKeeper`] knows of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewed at the last try.
    Alive,
    /// The last renewal could not reach etcd (the lease may still live
    /// until its TTL runs out); `.0` says why.
    Unreachable(String),
    /// etcd says the lease no longer exists: the keys attached to it are
    /// gone. A keeper never renews a lost lease.
    Lost,
}

/// Keeps an etcd lease alive (a renewal every third of its TTL) until
/// dropped or [`LeaseKeeper::revoke`]d; reports its state.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    etcd: Etcd,
    state: watch::Receiver<LeaseState>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and starts
    /// renewing it.
    pub async fn grant(etcd: &Etcd, ttl: Duration) -> Result<LeaseKeeper, crate::EtcdError> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let id = etcd.lease_grant(secs).await?;
        let (tx, state) = watch::channel(LeaseState::Alive);
        let period = Duration::from_secs(secs.unsigned_abs()) / 3;
        let task = tokio::spawn(renew(etcd.clone(), id, period, tx));
        Ok(LeaseKeeper {
            id,
            etcd: etcd.clone(),
            state,
            task,
        })
    }

    /// The etcd lease id (attach keys to it).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The state at the last renewal.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops renewing and ends the lease now (its keys go at once).
    pub async fn revoke(self) -> Result<(), crate::EtcdError> {
        self.task.abort();
        self.etcd.lease_revoke(self.id).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews lease `id` every `period` until it is lost or the keeper drops.
async fn renew(etcd: Etcd, id: i64, period: Duration, state: watch::Sender<LeaseState>) {
    let period = period.max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(period).await;
        let now = match etcd.lease_keep_alive_once(id).await {
            Ok(ttl) if ttl > 0 => LeaseState::Alive,
            Ok(_) => LeaseState::Lost,
            Err(e) => LeaseState::Unreachable(e.to_string()),
        };
        let lost = now == LeaseState::Lost;
        state.send_if_modified(|old| {
            let changed = *old != now;
            *old = now;
            changed
        });
        if lost {
            return;
        }
    }
}
