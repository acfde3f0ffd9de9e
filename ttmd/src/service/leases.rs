//! Lease RPCs (SPEC §13): acquire (a stream that reports the queue
//! position until the grant), release, list, heartbeat. The decisions are
//! the lease backend's; this file only maps requests and answers.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ttm_proto::v1 as pb;

use super::status::to_status;
use super::streams::Stream;
use super::{TtmService, blocking};
use crate::core::lease::{TxnKey, ttl_or_default, validate_name};
use crate::core::{Error, Result};
use crate::leases::{HolderView, LeaseBackend, Policy, Standing};

impl TtmService {
    /// The transaction a lease request names, as a key.
    async fn lease_txn(&self, r: Option<pb::TxnRef>) -> Result<TxnKey, Status> {
        let this = self.clone();
        blocking(move || {
            let (module, txn) = this.txn(r)?;
            if txn.state().is_terminal() {
                let s = txn.state();
                return Err(Error::Refused(format!(
                    "transaction {} is {}, which is final; a finished transaction can hold \
                     no lease — create a new one",
                    s.txn_id, s.stage
                )));
            }
            Ok((module.name.clone(), txn.id.clone()))
        })
        .await
    }

    pub(super) async fn acquire_lease(
        &self,
        req: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<Stream<pb::AcquireLeaseResponse>>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        validate_name(&r.name).map_err(to_status)?;
        let ttl = ttl_or_default(r.ttl_ms).map_err(to_status)?;
        let key = self.lease_txn(r.txn).await?;
        let policy = policy_of(r.wait_policy);
        let leases = self.shared.leases.clone();
        let (name, k) = (r.name.clone(), key.clone());
        let first = blocking(move || leases.acquire(&name, &k, ttl, policy)).await?;
        let wait = (r.wait_timeout_ms > 0).then(|| Duration::from_millis(r.wait_timeout_ms));
        let (tx, rx) = mpsc::channel(4);
        let waiter = Waiting {
            leases: self.shared.leases.clone(),
            name: r.name,
            key,
            tx,
        };
        tokio::spawn(waiter.run(first, wait, self.shared.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    pub(super) async fn release_lease(
        &self,
        req: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::ReleaseLeaseResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        validate_name(&r.name).map_err(to_status)?;
        let key = self.lease_txn(r.txn).await?;
        let leases = self.shared.leases.clone();
        let released = blocking(move || leases.release(&r.name, &key)).await?;
        Ok(Response::new(pb::ReleaseLeaseResponse { released }))
    }

    pub(super) async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        self.caller(&req)?;
        let leases = self.shared.leases.clone();
        let mut list = blocking(move || Ok(leases.list())).await?;
        // With --cluster, every host's holders and waiters (etcd's keys).
        if let Some(cluster) = self.shared.cluster() {
            let across = crate::leases::cluster_view::read(cluster)
                .await
                .map_err(to_status)?;
            list = crate::leases::cluster_view::merge(list, across);
        }
        let leases = list
            .into_iter()
            .map(|l| pb::LeaseInfo {
                name: l.name,
                holder: l.holder.map(holder_msg),
                queue: l
                    .queue
                    .into_iter()
                    .map(|w| pb::LeaseWaiter {
                        module: w.txn.0,
                        txn_id: w.txn.1,
                        since: w.since,
                    })
                    .collect(),
                last_token: l.last_token,
            })
            .collect();
        Ok(Response::new(pb::ListLeasesResponse { leases }))
    }

    pub(super) async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let key = self.lease_txn(r.txn).await?;
        let shared = self.shared.clone();
        // A sign of life for the leases' TTLs and for stalls (SPEC §14).
        let renewed = blocking(move || {
            let module = shared.store.module(&key.0, false)?;
            let txn = module.txn(&key.1)?;
            shared.timers.heard(&key, &txn.state(), &module.fsm());
            Ok(shared.leases.renew(&key))
        })
        .await?;
        Ok(Response::new(pb::HeartbeatResponse { renewed }))
    }
}

/// The wait policy a request asked for. Skip is the client's reading of a
/// refusal, so to the daemon it is no-wait.
pub(super) fn policy_of(p: i32) -> Policy {
    match pb::WaitPolicy::try_from(p) {
        Ok(pb::WaitPolicy::NoWait | pb::WaitPolicy::Skip) => Policy::NoWait,
        Ok(pb::WaitPolicy::Wait) | Err(_) => Policy::Wait,
    }
}

pub(super) fn holder_msg(h: HolderView) -> pb::LeaseHolder {
    pb::LeaseHolder {
        module: h.txn.0,
        txn_id: h.txn.1,
        host: h.host,
        since: h.since,
        token: h.token,
        ttl_ms: h.ttl_ms,
        expires_in_ms: h.expires_in_ms,
    }
}

/// The answer for a standing.
pub(super) fn standing_msg(name: &str, s: Standing) -> pb::AcquireLeaseResponse {
    match s {
        Standing::Held(token) => pb::AcquireLeaseResponse {
            granted: true,
            token,
            name: name.to_string(),
            ..Default::default()
        },
        Standing::Queued(position, holder) => pb::AcquireLeaseResponse {
            position: position as u64,
            holder: holder.map(holder_msg),
            name: name.to_string(),
            ..Default::default()
        },
    }
}

/// One caller waiting for a grant.
struct Waiting {
    leases: std::sync::Arc<dyn LeaseBackend>,
    name: String,
    key: TxnKey,
    tx: mpsc::Sender<Result<pb::AcquireLeaseResponse, Status>>,
}

impl Waiting {
    /// Reports the standing whenever it changes, until the grant, a
    /// refusal, the caller's deadline or the caller going away (the
    /// transaction then stays queued: the wait is the transaction's).
    async fn run(self, first: Standing, wait: Option<Duration>, stop: crate::shutdown::Shutdown) {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut changes = self.leases.changes();
        let mut last = None;
        let mut now = Some(first);
        loop {
            let Some(standing) = now.take() else {
                let e = Error::Refused(format!(
                    "transaction {} no longer waits for {}: it finished, or the wait was \
                     withdrawn",
                    self.key.1, self.name
                ));
                let _ = self.tx.send(Err(to_status(e))).await;
                return;
            };
            let granted = matches!(standing, Standing::Held(_));
            if last.as_ref() != Some(&standing) {
                let msg = standing_msg(&self.name, standing.clone());
                if self.tx.send(Ok(msg)).await.is_err() || granted {
                    return;
                }
                last = Some(standing);
            }
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = timeout => return self.give_up(wait.unwrap_or_default()).await,
                () = stop.wait() => {
                    // The wait is the transaction's and survives the restart;
                    // the caller asks again once ttmd is back.
                    let _ = self.tx.send(Err(to_status(Error::ShuttingDown))).await;
                    return;
                }
                () = self.tx.closed() => return,
            }
            now = self.leases.standing(&self.name, &self.key);
        }
    }

    /// The caller's deadline passed: the wait is withdrawn (unless the
    /// grant came meanwhile, which is then reported instead).
    async fn give_up(self, waited: Duration) {
        let (leases, name, key) = (self.leases.clone(), self.name.clone(), self.key.clone());
        let outcome = tokio::task::spawn_blocking(move || match leases.standing(&name, &key) {
            Some(Standing::Held(t)) => Ok(Some(t)),
            _ => leases.release(&name, &key).map(|_| None),
        })
        .await;
        let msg = match outcome {
            Ok(Ok(Some(token))) => Ok(standing_msg(&self.name, Standing::Held(token))),
            Ok(Ok(None)) => Err(to_status(Error::WaitTimedOut(format!(
                "waited {:.1}s for lease {} without getting it; transaction {} left the queue",
                waited.as_secs_f64(),
                self.name,
                self.key.1
            )))),
            Ok(Err(e)) => Err(to_status(e)),
            Err(e) => Err(to_status(Error::Bug(format!("ttmd worker failed: {e}")))),
        };
        let _ = self.tx.send(msg).await;
    }
}
