//! Cluster mode (SPEC §16): this daemon's seat in an etcd cluster.
//!
//! [`Cluster`] exists only with `--cluster`; without it no code here runs.
//! It holds the etcd client, this host's id, the daemon's etcd lease (the
//! *session*, which the `host/<id>` key and cluster-wide leases hang on)
//! and what the daemon last saw of etcd ([`Health`]), so anything that
//! needs coordination refuses at once while etcd is unreachable
//! ([`Cluster::require`]) instead of waiting or going on locally.
//!
//! - `keys.rs`: the key layout.
//! - `mirror.rs`: the outbox, each log mirrored in order; `cursor.rs` its
//!   persisted pushed-seq cursors.
//! - `recheck.rs`: the cursors checked against etcd's record once per
//!   session (an etcd rebuilt empty gets the mirror pushed again).
//! - `session.rs`: registering `host/<id>`, keeping the session alive,
//!   registering again after it was lost.

mod backoff;
mod batch;
mod cursor;
pub mod keys;
pub mod mirror;
mod recheck;
mod session;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use ttm_etcd::{Etcd, EtcdError};

use crate::config::Config;
use crate::core::{Error, Result};

/// How long after a failed call to etcd calls that need it are refused
/// without trying: "at once" while etcd is known down, yet a try soon
/// after it is back (the session's renewals notice that only every third
/// of its TTL).
const RECHECK: Duration = Duration::from_secs(1);

/// TTL of the daemon's etcd lease: how long after a crash (or a cut-off)
/// its `host/<id>` key and its cluster-wide leases outlive it.
pub const SESSION_TTL: Duration = Duration::from_secs(10);

/// What the daemon last saw of etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not tried yet.
    Connecting,
    /// The last call succeeded.
    Up,
    /// The last call could not reach etcd: why, and since when.
    Down {
        /// The failure, one line.
        why: String,
        /// When etcd was first found unreachable in this outage.
        since: SystemTime,
    },
}

/// This daemon's seat in the cluster.
#[derive(Debug)]
pub struct Cluster {
    etcd: Etcd,
    host: String,
    health: watch::Sender<Health>,
    /// The session's etcd lease id while it is alive.
    session: Mutex<Option<i64>>,
    /// When a call to etcd last failed.
    failed_at: Mutex<Option<std::time::Instant>>,
    /// The value of the `host/<id>` key (without the mirror lag).
    card: serde_json::Value,
    /// The outbox, once started.
    mirror: OnceLock<Arc<mirror::Mirror>>,
}

impl Cluster {
    /// The seat described by `config`, or `None` without `--cluster`.
    /// Makes no connection yet (see [`Cluster::join`]); fails only on
    /// endpoints that cannot be used. Call inside the runtime.
    pub fn from_config(config: &Config, socket: &std::path::Path) -> Result<Option<Arc<Cluster>>> {
        if config.cluster.is_empty() {
            return Ok(None);
        }
        let etcd = Etcd::connect(&config.cluster).map_err(|e| Error::invalid(e.to_string()))?;
        let host = config.host_id();
        let card = serde_json::json!({
            "host": host,
            "pid": std::process::id(),
            "version": ttm_proto::VERSION,
            "socket": socket.display().to_string(),
            "root": config.root.display().to_string(),
            // Tells this tree's previous daemon (same machine, root and
            // socket) from another daemon given the same host id.
            "machine": machine_id(),
            "started": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        Ok(Some(Arc::new(Cluster {
            etcd,
            host,
            health: watch::channel(Health::Connecting).0,
            session: Mutex::new(None),
            failed_at: Mutex::new(None),
            card,
            mirror: OnceLock::new(),
        })))
    }

    /// Starts mirroring `store` (once), until `stop`.
    pub fn start_mirror(
        self: &Arc<Self>,
        store: Arc<crate::store::Store>,
        stop: crate::shutdown::Shutdown,
    ) {
        let _ = self
            .mirror
            .get_or_init(|| mirror::Mirror::start(self.clone(), store, stop));
    }

    /// What the mirror has not pushed yet (nothing before it started).
    pub fn lag(&self) -> mirror::Lag {
        self.mirror.get().map(|m| m.lag()).unwrap_or_default()
    }

    /// Lines of `module/id` not yet mirrored.
    pub fn lag_of(&self, module: &str, id: &str) -> u64 {
        self.mirror.get().map_or(0, |m| m.lag_of(module, id))
    }

    /// The etcd client.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.host
    }

    /// What the daemon last saw of etcd.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Changes of [`Cluster::health`].
    pub fn subscribe(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// Refuses at once (`CoordinationUnavailable`, exit 12) when etcd was
    /// unreachable at a try less than [`RECHECK`] ago; `what` names the
    /// operation. An older failure lets the caller try (and [`Cluster::note`]
    /// its outcome).
    pub fn require(&self, what: &str) -> Result<()> {
        let recent = lock(&self.failed_at).is_some_and(|t| t.elapsed() < RECHECK);
        match self.health() {
            Health::Down { .. } if !recent => Ok(()),
            Health::Up => Ok(()),
            Health::Connecting => Err(Error::CoordinationUnavailable(format!(
                "{what} needs the etcd cluster, and ttmd has not reached it yet ({}); \
                 try again in a moment",
                self.etcd.endpoints().join(",")
            ))),
            Health::Down { why, .. } => Err(Error::CoordinationUnavailable(format!(
                "{what} needs the etcd cluster, which is unreachable: {why}; \
                 try again once etcd is back (see docs/cluster.md)"
            ))),
        }
    }

    /// The daemon's etcd lease, to attach keys that must die with this
    /// daemon (cluster-wide leases); refused while there is none.
    pub fn session_lease(&self, what: &str) -> Result<i64> {
        self.require(what)?;
        let id = *self.session.lock().unwrap_or_else(|p| p.into_inner());
        id.ok_or_else(|| {
            Error::CoordinationUnavailable(format!(
                "{what} needs this daemon's etcd session, which is being renewed; \
                 try again in a moment"
            ))
        })
    }

    /// Notes the outcome of a call to etcd in [`Cluster::health`]; returns
    /// it with a failure to reach etcd turned into the refusal for `what`.
    pub fn note<T>(&self, what: &str, outcome: Result<T, EtcdError>) -> Result<T> {
        match outcome {
            Ok(value) => {
                self.up();
                Ok(value)
            }
            Err(e) if e.is_unavailable() => {
                self.down(e.to_string());
                Err(Error::CoordinationUnavailable(format!(
                    "{what} needs the etcd cluster, which is unreachable: {e}; \
                     try again once etcd is back (see docs/cluster.md)"
                )))
            }
            Err(e) => Err(Error::Bug(format!("{what}: {e}"))),
        }
    }

    pub(crate) fn up(&self) {
        self.health.send_if_modified(|h| {
            let changed = *h != Health::Up;
            if changed && matches!(h, Health::Down { .. }) {
                tracing::info!("etcd is reachable again");
            }
            *h = Health::Up;
            changed
        });
    }

    pub(crate) fn down(&self, why: String) {
        *lock(&self.failed_at) = Some(std::time::Instant::now());
        self.health.send_if_modified(|h| match h {
            Health::Down { why: old, .. } => {
                let changed = *old != why;
                *old = why;
                changed
            }
            _ => {
                tracing::warn!(%why, "etcd is unreachable; local work goes on, the mirror lags");
                *h = Health::Down {
                    why,
                    since: SystemTime::now(),
                };
                true
            }
        });
    }

    /// The session's etcd lease id, if alive (no check of etcd's health).
    fn session_id(&self) -> Option<i64> {
        *lock(&self.session)
    }

    fn set_session(&self, id: Option<i64>) {
        *lock(&self.session) = id;
    }
}

/// This machine's id (`/etc/machine-id`), else its host name.
fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
