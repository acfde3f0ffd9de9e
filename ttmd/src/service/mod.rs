//! The gRPC face of the store: each RPC checks its caller, maps the request
//! onto a store call run on a blocking thread, and maps the answer back.
//! No file is touched here directly except the incoming evidence stream.

mod access;
mod admin;
mod caller;
mod cluster;
mod context;
mod convert;
mod inbox;
mod leases;
mod mutations;
mod page;
mod remote;
mod remote_watch;
mod shared;
pub mod status;
mod streams;
mod txns;

pub use shared::Shared;

use std::sync::Arc;

use serde_json::Value;
use tonic::{Request, Response, Status, Streaming};
use ttm_proto::v1 as pb;
use ttm_proto::v1::ttm_server::Ttm;

use crate::core::event::{self, Body};
use crate::core::fsm;
use crate::core::id::quote;
use crate::core::state;
use crate::core::{Error, Result};
use crate::store::module::Module;
use crate::store::txn::{Client, Guards, Outcome, Txn};
use convert::{guards, txn_state};
use status::to_status;

/// Longest request id accepted.
const REQUEST_ID_MAX: usize = 128;

/// The service behind the socket.
#[derive(Debug, Clone)]
pub struct TtmService {
    shared: Arc<Shared>,
    /// The daemon's own uid.
    uid: u32,
}

impl TtmService {
    /// A service over the daemon's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        TtmService {
            shared,
            uid: rustix::process::getuid().as_raw(),
        }
    }

    /// Refuses a write on a read-only tree; after the caller's own checks
    /// (API, tree, credentials), so those keep their answers.
    fn writable<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.peer(req)?;
        self.shared.store.writable().map_err(status::to_status)
    }

    fn module(&self, name: &str, create: bool) -> Result<Arc<Module>> {
        self.shared.store.module(name, create)
    }

    fn txn(&self, r: Option<pb::TxnRef>) -> Result<(Arc<Module>, Arc<Txn>)> {
        let r = r.unwrap_or_default();
        let module = self.module(&r.module, false)?;
        let txn = module.txn(&r.txn_id)?;
        Ok((module, txn))
    }

    fn state_msg(&self, module: &Module, txn: &Txn, state: &state::State) -> pb::TxnState {
        let active = module
            .active_id()
            .ok()
            .flatten()
            .is_some_and(|a| a == txn.id);
        txn_state(state, &txn.dir, active)
    }

    /// A mutation is a sign of life: the transaction's leases are renewed,
    /// or, once it is DONE or FAIL, ended and passed on.
    /// Its time rules are armed again: a stall waits from now, a new stage
    /// is timed, a stalled transaction is reported resumed.
    fn showed_life(&self, module: &Module, state: &state::State) {
        let key = (module.name.clone(), state.txn_id.clone());
        if state.is_terminal() {
            self.shared.leases.finished(&key);
        } else {
            self.shared.leases.renew(&key);
        }
        self.shared.timers.arm(&key, state, &module.fsm());
    }

    fn check_payload(&self, text: &str, what: &str) -> Result<()> {
        let limit = self.shared.config().limits.payload;
        if text.len() > limit {
            return Err(Error::OverLimit(format!(
                "{what} is {} bytes; the limit is {limit} (limits.payload in ttmd.toml)",
                text.len()
            )));
        }
        Ok(())
    }

    /// Runs one mutation of a transaction through its writer: queued
    /// from here, applied in the writer's next round, answered once that
    /// round is durable (no blocking thread of its own). The reply's state
    /// message is built only if `reply_state` (an append answers with its
    /// seq alone, and is the hot path).
    /// `what` names the request's RPC and parameters: a request id reused
    /// for another `what` is refused.
    #[allow(clippy::too_many_arguments)]
    async fn mutate<F>(
        &self,
        r: Option<pb::TxnRef>,
        pre: Option<pb::Preconditions>,
        what: String,
        client: Client,
        reply_state: bool,
        make: F,
    ) -> Result<(Option<pb::TxnState>, Outcome), Status>
    where
        F: FnOnce(&fsm::Fsm, &state::State, chrono::DateTime<chrono::Utc>) -> Result<Body>
            + Send
            + 'static,
    {
        let mut g = checked_guards(pre).map_err(to_status)?;
        if g.request_id.is_some() {
            g.request_digest = Some(event::request_digest(&what));
        }
        let (module, txn) = match self.loaded(&r) {
            Some(found) => found,
            None => {
                let this = self.clone();
                blocking(move || this.txn(r)).await?
            }
        };
        let fsm = module.fsm();
        let limit = self.shared.config().limits.state;
        let leases = self.shared.leases.clone();
        let rules = fsm.clone();
        let answer = txn.submit(fsm, g, client, move |s, now| {
            let body = make(&rules, s, now)?;
            // Last, so a refused request costs no etcd round trip.
            if !s.leases.held.is_empty() {
                let held: Vec<(String, u64)> = s
                    .leases
                    .held
                    .iter()
                    .map(|(n, h)| (n.clone(), h.token))
                    .collect();
                leases.fence(&s.txn_id, &held)?;
            }
            s.check_size(&body, limit)?;
            Ok(body)
        });
        let outcome = match answer.await {
            Ok(result) => result.map_err(to_status)?,
            Err(_) => {
                let stopped = "the transaction's writer stopped before answering; retry";
                return Err(to_status(Error::Bug(stopped.into())));
            }
        };
        let state = self.answered(module, txn, &outcome, reply_state).await?;
        Ok((state, outcome))
    }

    /// What follows a durable mutation: watchers hear of it, the
    /// transaction showed life, and the reply's state message if asked.
    async fn answered(
        &self,
        module: Arc<Module>,
        txn: Arc<Txn>,
        outcome: &Outcome,
        reply_state: bool,
    ) -> Result<Option<pb::TxnState>, Status> {
        module.announce(outcome);
        if !outcome.state.is_terminal() && !reply_state && outcome.state.leases.is_empty() {
            // Nothing to renew: only the timer (its lock is never held
            // across I/O) hears of it, here on the async thread.
            let key = (module.name.clone(), outcome.state.txn_id.clone());
            self.shared.timers.arm(&key, &outcome.state, &module.fsm());
            return Ok(None);
        }
        // Renewing and ending leases take the lease table's lock, which
        // expiry holds across etcd calls and writes; ending them may reach
        // etcd; the reply reads the active link: all off the async threads.
        let this = self.clone();
        let state = outcome.state.clone();
        blocking(move || {
            this.showed_life(&module, &state);
            Ok(reply_state.then(|| this.state_msg(&module, &txn, &state)))
        })
        .await
    }

    /// The module and transaction `r` names, if both are loaded and it
    /// names the transaction by id (the active link is read from disk).
    fn loaded(&self, r: &Option<pb::TxnRef>) -> Option<(Arc<Module>, Arc<Txn>)> {
        let r = r.as_ref()?;
        if r.txn_id.is_empty() {
            return None;
        }
        let module = self.shared.store.loaded_module(&r.module)?;
        let txn = module.loaded_txn(&r.txn_id)?;
        Some((module, txn))
    }
}

/// The calling process's pid, from its `client` record.
fn pid_of(client: &Client) -> Option<i32> {
    client
        .as_ref()
        .and_then(|c| c.get("pid"))
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
}

/// Runs blocking store work off the async threads and maps its error.
async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(to_status),
        Err(e) => Err(to_status(Error::Bug(format!("ttmd worker failed: {e}")))),
    }
}

fn checked_guards(pre: Option<pb::Preconditions>) -> Result<Guards> {
    let g = guards(pre);
    if let Some(stage) = &g.expect_stage {
        fsm::validate_stage_name(stage)?;
    }
    if let Some(r) = &g.request_id {
        validate_request_id(r)?;
    }
    for (name, _) in &g.fences {
        crate::core::lease::validate_name(name)?;
    }
    Ok(g)
}

fn validate_request_id(r: &str) -> Result<()> {
    if r.len() > REQUEST_ID_MAX || r.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "invalid request id {}: at most {REQUEST_ID_MAX} bytes, no control characters",
            quote(r)
        )));
    }
    Ok(())
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

// Each RPC is handled by the inherent method of the same name, in the file
// for its area (txns, mutations, context, streams, admin); tonic wants one
// trait impl, so it only delegates. Inherent methods win name resolution.
#[tonic::async_trait]
impl Ttm for TtmService {
    async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        TtmService::hello(self, req).await
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        self.writable(&req)?;
        TtmService::create(self, req).await
    }

    async fn get_active(
        &self,
        req: Request<pb::GetActiveRequest>,
    ) -> Result<Response<pb::GetActiveResponse>, Status> {
        TtmService::get_active(self, req).await
    }

    async fn activate(
        &self,
        req: Request<pb::ActivateRequest>,
    ) -> Result<Response<pb::ActivateResponse>, Status> {
        self.writable(&req)?;
        TtmService::activate(self, req).await
    }

    async fn get_state(
        &self,
        req: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        TtmService::get_state(self, req).await
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        TtmService::list(self, req).await
    }

    async fn transition(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::TransitionResponse>, Status> {
        self.writable(&req)?;
        TtmService::transition(self, req).await
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.writable(&req)?;
        TtmService::commit(self, req).await
    }

    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        self.writable(&req)?;
        TtmService::fail(self, req).await
    }

    async fn retry(
        &self,
        req: Request<pb::RetryRequest>,
    ) -> Result<Response<pb::RetryResponse>, Status> {
        self.writable(&req)?;
        TtmService::retry(self, req).await
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        self.writable(&req)?;
        TtmService::update(self, req).await
    }

    async fn append_event(
        &self,
        req: Request<pb::AppendEventRequest>,
    ) -> Result<Response<pb::AppendEventResponse>, Status> {
        self.writable(&req)?;
        TtmService::append_event(self, req).await
    }

    async fn add_context(
        &self,
        req: Request<Streaming<pb::AddContextRequest>>,
    ) -> Result<Response<pb::AddContextResponse>, Status> {
        self.writable(&req)?;
        TtmService::add_context(self, req).await
    }

    async fn list_context(
        &self,
        req: Request<pb::ListContextRequest>,
    ) -> Result<Response<pb::ListContextResponse>, Status> {
        TtmService::list_context(self, req).await
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        self.writable(&req)?;
        TtmService::resolve(self, req).await
    }

    async fn get_connector(
        &self,
        req: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::GetConnectorResponse>, Status> {
        TtmService::get_connector(self, req).await
    }

    type EventsStream = streams::Stream<pb::EventsResponse>;
    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        TtmService::events(self, req).await
    }

    type WatchStream = streams::Stream<pb::WatchResponse>;
    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        TtmService::watch(self, req).await
    }

    async fn archive(
        &self,
        req: Request<pb::ArchiveRequest>,
    ) -> Result<Response<pb::ArchiveResponse>, Status> {
        self.writable(&req)?;
        TtmService::archive(self, req).await
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        self.writable(&req)?;
        TtmService::gc(self, req).await
    }

    async fn migrate(
        &self,
        req: Request<pb::MigrateRequest>,
    ) -> Result<Response<pb::MigrateResponse>, Status> {
        self.writable(&req)?;
        TtmService::migrate(self, req).await
    }

    async fn daemon_status(
        &self,
        req: Request<pb::DaemonStatusRequest>,
    ) -> Result<Response<pb::DaemonStatusResponse>, Status> {
        TtmService::daemon_status(self, req).await
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        TtmService::reload(self, req).await
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        TtmService::shutdown(self, req).await
    }

    async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        TtmService::metrics(self, req).await
    }

    type AcquireLeaseStream = streams::Stream<pb::AcquireLeaseResponse>;
    async fn acquire_lease(
        &self,
        req: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<Self::AcquireLeaseStream>, Status> {
        self.writable(&req)?;
        TtmService::acquire_lease(self, req).await
    }

    async fn release_lease(
        &self,
        req: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::ReleaseLeaseResponse>, Status> {
        self.writable(&req)?;
        TtmService::release_lease(self, req).await
    }

    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        TtmService::list_leases(self, req).await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        TtmService::heartbeat(self, req).await
    }

    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        TtmService::list_hosts(self, req).await
    }
}
