//! Cluster-wide leases (SPEC §13, §16): the etcd side of the lease table.
//!
//! With `--cluster`, [`super::Local`] keeps its table and its events as
//! without it (the home logs stay the truth), and asks this [`Gate`]
//! before every grant. The gate runs the etcd election recipe:
//!
//! ```text
//! /ttm/v1/ttm/lease/<name>                       the holder: {module, txn, host, since, ttl_ms}
//!                                                on an etcd lease of its own, TTL = the lease's TTL
//! /ttm/v1/ttm/lease/<name>/q/<module>/<txn>      a waiter, on its daemon's session lease
//! ```
//!
//! Lease names are tree-wide (§13), so their keys live under the default
//! module. The waiter with the lowest create-revision is next; it takes
//! the name with one Txn (holder key absent, its own waiter key unchanged)
//! that puts the holder key and deletes its waiter key. The fencing token
//! is the holder key's create-revision: strictly increasing per name for
//! the life of the cluster. The holder key's etcd lease is renewed while
//! the holding transaction's TTL runs (mutations and heartbeats), so a
//! dead, paused or silent holder loses the key after the TTL and the next
//! waiter on any host takes it.
//!
//! Every method blocks on the daemon's runtime: call it on a blocking
//! thread (as every [`super::LeaseBackend`] method is).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ttm_etcd::{KeyValue, cmp, op};

use crate::cluster::{Cluster, keys};
use crate::core::lease::TxnKey;
use crate::core::{DEFAULT_MODULE, Error, Result};

/// How often waiters look at etcd again and holders' TTLs are renewed
/// there: the hand-over after a holder's death takes its TTL plus up to
/// this.
pub const POLL: Duration = Duration::from_millis(250);

/// The etcd side of cluster-wide leases.
#[derive(Debug)]
pub struct Gate {
    cluster: Arc<Cluster>,
    rt: tokio::runtime::Handle,
    held: Mutex<HashMap<String, Grant>>,
}

/// A name this daemon holds in etcd.
#[derive(Debug, Clone)]
struct Grant {
    token: u64,
    etcd_lease: i64,
    ttl: Duration,
    renewed: Instant,
}

/// What a holder key says.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct HolderCard {
    pub module: String,
    pub txn: String,
    pub host: String,
    pub since: String,
    pub ttl_ms: u64,
}

/// `/ttm/v1/ttm/lease/<name>`.
pub fn holder_key(name: &str) -> String {
    keys::lease(DEFAULT_MODULE, name)
}

/// `/ttm/v1/ttm/lease/<name>/q/`.
fn queue_prefix(name: &str) -> String {
    format!("{}/q/", holder_key(name))
}

fn waiter_key(name: &str, txn: &TxnKey) -> String {
    format!("{}{}/{}", queue_prefix(name), txn.0, txn.1)
}

/// Whole seconds of an etcd lease for a TTL in ms, rounded up.
fn etcd_ttl(ttl_ms: u64) -> i64 {
    i64::try_from(ttl_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)
}

fn u64_of(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

impl Gate {
    /// The gate of `cluster`; call inside the runtime.
    pub fn new(cluster: Arc<Cluster>) -> Gate {
        Gate {
            cluster,
            rt: tokio::runtime::Handle::current(),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses at once (exit 12) while etcd is unreachable.
    pub fn require(&self, what: &str) -> Result<()> {
        self.cluster.require(what)
    }

    /// One etcd call, its failure to reach etcd noted and turned into the
    /// refusal for `what`.
    fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = std::result::Result<T, ttm_etcd::EtcdError>>,
    ) -> Result<T> {
        let outcome = self.rt.block_on(f);
        self.cluster.note(what, outcome)
    }

    /// Who holds `name` or waits for it anywhere in the cluster, said for
    /// a "busy" refusal; `None` when it is free and nobody waits.
    pub fn busy(&self, name: &str) -> Result<Option<String>> {
        let what = format!("asking for lease {name}");
        self.require(&what)?;
        let etcd = self.cluster.etcd();
        let key = holder_key(name);
        if let Some(kv) = self.call(&what, etcd.get(key.as_bytes()))? {
            let text = match serde_json::from_slice::<HolderCard>(&kv.value) {
                Ok(c) => format!(
                    "held by transaction {} (module {}) on host {} since {} with token {}",
                    c.txn, c.module, c.host, c.since, kv.create_revision
                ),
                Err(_) => format!("held with token {}", kv.create_revision),
            };
            return Ok(Some(text));
        }
        let queue = self.call(&what, etcd.prefix(queue_prefix(name).as_bytes()))?;
        Ok((!queue.kvs.is_empty())
            .then(|| format!("{} transaction(s) queued for it", queue.kvs.len())))
    }

    /// Puts `txn` in `name`'s cluster-wide queue (again, if it was there:
    /// the key keeps its place). Refused (exit 12) without etcd.
    pub fn enqueue(&self, name: &str, txn: &TxnKey, ttl_ms: u64) -> Result<()> {
        let what = format!("asking for lease {name}");
        let session = self.cluster.session_lease(&what)?;
        let key = waiter_key(name, txn);
        let card = serde_json::json!({
            "module": txn.0, "txn": txn.1, "host": self.cluster.host_id(), "ttl_ms": ttl_ms,
        })
        .to_string();
        let etcd = self.cluster.etcd();
        let put = etcd.txn(
            vec![cmp::version(key.as_bytes(), 0)],
            vec![op::put(key.as_bytes(), card.as_bytes(), session)],
            vec![],
        );
        self.call(&what, put).map(drop)
    }

    /// Takes `name` for `txn` when it is next in the cluster: returns the
    /// fencing token, or `None` while someone else holds it or is ahead.
    pub fn claim(&self, name: &str, txn: &TxnKey, ttl_ms: u64, since: &str) -> Result<Option<u64>> {
        let what = format!("taking lease {name}");
        self.require(&what)?;
        let etcd = self.cluster.etcd();
        let mine = waiter_key(name, txn);
        let queue = self.call(&what, etcd.prefix(queue_prefix(name).as_bytes()))?;
        let head = queue.kvs.iter().min_by_key(|kv| kv.create_revision);
        let Some(me) = queue.kvs.iter().find(|kv| kv.key == mine.as_bytes()) else {
            // The waiter key went with a lost session: queue again, at the end.
            self.enqueue(name, txn, ttl_ms)?;
            return Ok(None);
        };
        if head.map(|h: &KeyValue| h.key.as_slice()) != Some(mine.as_bytes()) {
            return Ok(None);
        }
        let ttl = etcd_ttl(ttl_ms);
        let lease = self.call(&what, etcd.lease_grant(ttl))?;
        let card = serde_json::to_vec(&HolderCard {
            module: txn.0.clone(),
            txn: txn.1.clone(),
            host: self.cluster.host_id().to_string(),
            since: since.to_string(),
            ttl_ms,
        })
        .unwrap_or_default();
        let key = holder_key(name);
        let take = etcd.txn(
            vec![
                cmp::create_revision(key.as_bytes(), 0),
                cmp::create_revision(mine.as_bytes(), me.create_revision),
            ],
            vec![
                op::put(key.as_bytes(), &card, lease),
                op::delete(mine.as_bytes()),
            ],
            vec![],
        );
        let reply = self.call(&what, take)?;
        if !reply.succeeded {
            let _ = self.call(&what, etcd.lease_revoke(lease));
            return Ok(None);
        }
        let token = u64_of(reply.header.map_or(0, |h| h.revision));
        let grant = Grant {
            token,
            etcd_lease: lease,
            ttl: Duration::from_secs(ttl.unsigned_abs()),
            renewed: Instant::now(),
        };
        self.grants().insert(name.to_string(), grant);
        Ok(Some(token))
    }

    /// Lets go of `name` for `txn` in etcd: its waiter key, and its holder
    /// key if it still holds `token` (0: it only waited). Best effort: what
    /// cannot be deleted now goes with its etcd lease.
    pub fn release(&self, name: &str, txn: &TxnKey, token: u64) {
        let what = format!("releasing lease {name}");
        let etcd = self.cluster.etcd();
        let grant = self.grants().remove(name).filter(|g| g.token == token);
        if self.cluster.require(&what).is_err() {
            return;
        }
        let key = holder_key(name);
        let done = match grant {
            Some(g) => self.call(&what, etcd.lease_revoke(g.etcd_lease)).map(drop),
            // Held since before a restart: delete the key if it is still ours.
            None if token != 0 => {
                let token = i64::try_from(token).unwrap_or(i64::MAX);
                let delete = etcd.txn(
                    vec![cmp::create_revision(key.as_bytes(), token)],
                    vec![op::delete(key.as_bytes())],
                    vec![],
                );
                self.call(&what, delete).map(drop)
            }
            None => {
                let mine = waiter_key(name, txn);
                let delete = etcd.txn(vec![], vec![op::delete(mine.as_bytes())], vec![]);
                self.call(&what, delete).map(drop)
            }
        };
        if let Err(e) = done {
            tracing::info!(lease = %name, error = %e, "lease left to its etcd TTL");
        }
    }

    /// Renews in etcd the name this daemon holds with `token` (its holding
    /// transaction's TTL still runs here). False when etcd says it is gone
    /// (lapsed or taken over); true while etcd cannot be reached (the
    /// local TTL decides then, and fenced writes are refused).
    pub fn keep(&self, name: &str, token: u64) -> bool {
        // While etcd is known to be down, no call: the caller holds the
        // lease table's lock, which every local mutation's renewal takes.
        if self.cluster.require("").is_err() {
            return true;
        }
        let grant = self.grants().get(name).cloned();
        let grant = match grant {
            Some(g) if g.token == token => g,
            _ => match self.adopt(name, token) {
                Some(g) => g,
                // Gone from etcd, or etcd just became unreachable.
                None => return self.cluster.require("").is_err(),
            },
        };
        if grant.renewed.elapsed() < grant.ttl / 3 {
            return true;
        }
        let etcd = self.cluster.etcd();
        match self.call(
            "renewing a lease",
            etcd.lease_keep_alive_once(grant.etcd_lease),
        ) {
            Ok(ttl) if ttl > 0 => {
                if let Some(g) = self.grants().get_mut(name) {
                    g.renewed = Instant::now();
                }
                true
            }
            Ok(_) => {
                self.grants().remove(name);
                false
            }
            Err(_) => true,
        }
    }

    /// After a restart: the holder key this daemon's logs say it holds,
    /// if etcd still has it with that token.
    fn adopt(&self, name: &str, token: u64) -> Option<Grant> {
        let key = holder_key(name);
        let kv = self
            .call("renewing a lease", self.cluster.etcd().get(key.as_bytes()))
            .ok()??;
        if u64_of(kv.create_revision) != token {
            return None;
        }
        let ttl = serde_json::from_slice::<HolderCard>(&kv.value).map_or(1, |c| c.ttl_ms);
        let grant = Grant {
            token,
            etcd_lease: kv.lease,
            ttl: Duration::from_millis(ttl),
            // Renewed at the next look.
            renewed: Instant::now()
                .checked_sub(Duration::from_millis(ttl))
                .unwrap_or_else(Instant::now),
        };
        self.grants().insert(name.to_string(), grant.clone());
        Some(grant)
    }

    /// The fence of a write by a transaction holding `name` with `token`:
    /// etcd must still have the holder key with that create-revision.
    /// Refused with `Fenced` (exit 5) when it does not, and with
    /// `CoordinationUnavailable` (exit 12) when etcd cannot say.
    pub fn check(&self, txn_id: &str, name: &str, token: u64) -> Result<()> {
        let what = format!("a write of transaction {txn_id}, which holds lease {name},");
        self.require(&what)?;
        let key = holder_key(name);
        let kv = self.call(&what, self.cluster.etcd().get(key.as_bytes()))?;
        match kv {
            Some(kv) if u64_of(kv.create_revision) == token => Ok(()),
            Some(kv) => Err(Error::Fenced(format!(
                "transaction {txn_id} lost lease {name} (token {token}): it is held now with \
                 token {}; nothing was changed — acquire it again before writing",
                kv.create_revision
            ))),
            None => Err(Error::Fenced(format!(
                "transaction {txn_id} lost lease {name} (token {token}): its TTL lapsed in the \
                 cluster; nothing was changed — acquire it again before writing"
            ))),
        }
    }
}
