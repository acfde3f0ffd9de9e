//! The daemon's session: an etcd lease carrying `host/<id>`, kept alive
//! while the daemon runs, granted again after it was lost (etcd down past
//! the TTL), revoked on a clean stop so the host leaves at once.

use std::sync::Arc;
use std::time::Duration;

use ttm_etcd::{EtcdError, LeaseKeeper, LeaseState};

use super::{Cluster, SESSION_TTL, keys};

/// Pause between tries to register while etcd is unreachable.
const RETRY: Duration = Duration::from_secs(1);
/// How often the mirror lag in `host/<id>` is brought up to date.
const PUBLISH: Duration = Duration::from_secs(2);

impl Cluster {
    /// Registers this host (a first try, bounded by the client's timeout);
    /// returns the keeper to hand to [`Cluster::keep_session`]. A failure
    /// leaves [`Cluster::health`] down and the daemon starts anyway: local
    /// work never waits for etcd.
    pub async fn join(&self) -> Option<LeaseKeeper> {
        match self.register().await {
            Ok(keeper) => Some(keeper),
            Err(e) => {
                self.down(e.to_string());
                None
            }
        }
    }

    /// Keeps the session alive for as long as the daemon runs: follows the
    /// keeper's state into [`Cluster::health`], and registers again when
    /// the lease was lost. `first` is what [`Cluster::join`] returned.
    pub async fn keep_session(
        self: Arc<Self>,
        first: Option<LeaseKeeper>,
        stop: crate::shutdown::Shutdown,
    ) {
        let mut keeper = first;
        loop {
            let current = match keeper.take() {
                Some(k) => k,
                None => match self.register().await {
                    Ok(k) => k,
                    Err(e) => {
                        self.down(e.to_string());
                        tokio::select! {
                            () = tokio::time::sleep(RETRY) => continue,
                            () = stop.wait() => return,
                        }
                    }
                },
            };
            tokio::select! {
                () = self.publish_lag(current.id()) => {}
                () = self.follow(&current) => {
                    tracing::warn!(lease = current.id(), "the etcd session expired; registering again");
                    self.set_session(None);
                }
                () = stop.wait() => {
                    self.set_session(None);
                    // Leave at once rather than after the TTL.
                    if let Err(e) = current.revoke().await {
                        tracing::info!("could not end the etcd session on stop: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// Mirrors the keeper's state into the health until the lease is lost.
    async fn follow(&self, keeper: &LeaseKeeper) {
        let mut states = keeper.subscribe();
        loop {
            let state = states.borrow_and_update().clone();
            match state {
                LeaseState::Alive => self.up(),
                LeaseState::Unreachable(why) => self.down(why),
                LeaseState::Lost => return,
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    }

    /// Keeps the mirror lag in `host/<id>` current (every [`PUBLISH`],
    /// when it changed), for `ttmctl hosts` on every host. Never returns.
    async fn publish_lag(&self, lease: i64) {
        let mut shown = super::mirror::Lag::default();
        loop {
            tokio::time::sleep(PUBLISH).await;
            let lag = self.lag();
            if lag == shown {
                continue;
            }
            let key = keys::host(&self.host);
            let card = self.card(lag);
            if self
                .etcd
                .put(key.as_bytes(), card.as_bytes(), lease)
                .await
                .is_ok()
            {
                shown = lag;
            }
        }
    }

    /// The value of `host/<id>`: who this daemon is and its mirror lag.
    fn card(&self, lag: super::mirror::Lag) -> String {
        let mut card = self.card.clone();
        if let Some(object) = card.as_object_mut() {
            object.insert("mirror_lag_events".into(), lag.events.into());
            object.insert("mirror_lag_txns".into(), lag.txns.into());
        }
        card.to_string()
    }

    /// Grants a session lease and puts `host/<id>` on it.
    async fn register(&self) -> Result<LeaseKeeper, EtcdError> {
        let keeper = LeaseKeeper::grant(&self.etcd, SESSION_TTL).await?;
        let key = keys::host(&self.host);
        let card = self.card(self.lag());
        self.etcd
            .put(key.as_bytes(), card.as_bytes(), keeper.id())
            .await?;
        self.set_session(Some(keeper.id()));
        self.up();
        tracing::info!(host = %self.host, lease = keeper.id(), "joined the etcd cluster");
        Ok(keeper)
    }
}
