//! The daemon's session: an etcd lease carrying `host/<id>`, kept alive
//! while the daemon runs, granted again after it was lost (etcd down past
//! the TTL), revoked on a clean stop so the host leaves at once.

use std::sync::Arc;
use std::time::Duration;

use ttm_etcd::pb::response_op::Response;
use ttm_etcd::{EtcdError, KeyValue, LeaseKeeper, LeaseState, cmp, op};

use super::{Cluster, SESSION_TTL, keys};

/// Pause between tries to register while etcd is unreachable.
const RETRY: Duration = Duration::from_secs(1);
/// How often the mirror lag in `host/<id>` is brought up to date.
const PUBLISH: Duration = Duration::from_secs(2);

impl Cluster {
    /// Registers this host (a first try, bounded by the client's timeout);
    /// returns the keeper to hand to [`Cluster::keep_session`]. An
    /// unreachable etcd leaves [`Cluster::health`] down and the daemon
    /// starts anyway: local work never waits for etcd. Another live daemon
    /// with this host id is an error: the daemon must not start.
    pub async fn join(&self) -> Result<Option<LeaseKeeper>, String> {
        match self.register().await {
            Ok(keeper) => Ok(Some(keeper)),
            Err(Refusal::Taken(why)) => Err(why),
            Err(Refusal::Etcd(e)) => {
                self.down(e.to_string());
                Ok(None)
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
                        // A duplicate found now (etcd was down at start)
                        // keeps this host out until the other one leaves.
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

    /// Grants a session lease and creates `host/<id>` on it: only when the
    /// key is absent, or left by this tree's own previous daemon (killed
    /// before its lease expired; the tree lock we hold proves it is gone).
    async fn register(&self) -> Result<LeaseKeeper, Refusal> {
        let keeper = LeaseKeeper::grant(&self.etcd, SESSION_TTL).await?;
        let key = keys::host(&self.host);
        let card = self.card(self.lag());
        let put = op::put(key.as_bytes(), card.as_bytes(), keeper.id());
        let reply = self
            .etcd
            .txn(
                vec![cmp::version(key.as_bytes(), 0)],
                vec![put.clone()],
                vec![op::get(key.as_bytes())],
            )
            .await?;
        if !reply.succeeded {
            let holder = reply.responses.into_iter().find_map(|r| match r.response {
                Some(Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
            if let Err(refusal) = self.take_over(&key, holder, put).await {
                let _ = keeper.revoke().await;
                return Err(refusal);
            }
        }
        self.set_session(Some(keeper.id()));
        self.up();
        tracing::info!(host = %self.host, lease = keeper.id(), "joined the etcd cluster");
        Ok(keeper)
    }

    /// `host/<id>` is held: replaces it when its holder was this tree's
    /// previous daemon on this machine, else refuses.
    async fn take_over(
        &self,
        key: &str,
        holder: Option<KeyValue>,
        put: ttm_etcd::pb::RequestOp,
    ) -> Result<(), Refusal> {
        // Deleted between the two calls: an absent key is free.
        let revision = holder.as_ref().map_or(0, |kv| kv.mod_revision);
        let theirs: serde_json::Value = holder
            .and_then(|kv| serde_json::from_slice(&kv.value).ok())
            .unwrap_or_default();
        let ours = ["machine", "root", "socket"]
            .iter()
            .all(|f| theirs.get(f).is_some() && theirs.get(f) == self.card.get(f));
        if revision != 0 && !ours {
            return Err(self.taken(&theirs));
        }
        let cmp = vec![cmp::mod_revision(key.as_bytes(), revision)];
        let reply = self.etcd.txn(cmp, vec![put], vec![]).await?;
        if reply.succeeded {
            Ok(())
        } else {
            Err(self.taken(&theirs))
        }
    }

    /// The refusal naming the live daemon that holds this host id.
    fn taken(&self, theirs: &serde_json::Value) -> Refusal {
        let field = |f: &str| {
            theirs
                .get(f)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_owned()
        };
        Refusal::Taken(format!(
            "host id {:?} is in use by another live ttmd (pid {}, tree {}); give this daemon its own --host-id (or stop the other one)",
            self.host,
            theirs
                .get("pid")
                .map_or_else(|| "?".into(), |v| v.to_string()),
            field("root"),
        ))
    }
}

/// Why registering failed.
#[derive(Debug)]
enum Refusal {
    /// etcd could not be reached (or refused the call).
    Etcd(EtcdError),
    /// Another live daemon holds this host id.
    Taken(String),
}

impl From<EtcdError> for Refusal {
    fn from(e: EtcdError) -> Refusal {
        Refusal::Etcd(e)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Etcd(e) => write!(f, "{e}"),
            Refusal::Taken(why) => f.write_str(why),
        }
    }
}
