//! The gRPC face of the store: each RPC checks its caller, maps the request
//! onto a store call run on a blocking thread, and maps the answer back.
//! No file is touched here directly except the incoming evidence stream.

mod access;
mod convert;
mod shared;
pub mod status;
mod streams;

pub use shared::Shared;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};
use ttm_proto::v1 as pb;
use ttm_proto::v1::ttm_server::Ttm;

use crate::core::event::{self, Body};
use crate::core::fsm::{self, DONE, FAIL};
use crate::core::id::quote;
use crate::core::state::{self, RESERVED_FIELDS};
use crate::core::{Error, Result, ctx};
use crate::store::Durability;
use crate::store::module::{Module, NewTxn};
use crate::store::txn::{self, Client, Guards, Outcome, Txn};
use convert::{guards, txn_row, txn_state};
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

    /// Checks a unary request's size against `limits.request_bytes`, then
    /// the caller (see [`TtmService::peer`]).
    fn caller<T: prost::Message>(&self, req: &Request<T>) -> Result<Client, Status> {
        let limit = self.shared.config().limits.request_bytes;
        let size = req.get_ref().encoded_len();
        if size > limit {
            return Err(Status::resource_exhausted(format!(
                "the request is {size} bytes; the limit is {limit} (limits.request_bytes)"
            )));
        }
        self.peer(req)
    }

    /// Checks the caller's API generation, tree and credentials, and
    /// describes it for the log.
    fn peer<T>(&self, req: &Request<T>) -> Result<Client, Status> {
        check_api_version(req)?;
        self.check_tree(req)?;
        let cred = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let Some(c) = cred else {
            // In-process callers over other transports (tests) carry none.
            return Ok(None);
        };
        let pid = c.pid();
        if access::allowed(
            self.uid,
            &self.shared.config().access,
            c.uid(),
            c.gid(),
            pid,
        ) {
            return Ok(Some(json!({ "pid": pid, "uid": c.uid() })));
        }
        tracing::warn!(uid = c.uid(), pid = ?pid, "refused a peer that is not allowed");
        Err(Status::permission_denied(format!(
            "uid {} may not use this ttmd (it serves uid {} and the uids/groups in its config); \
             run ttmctl as that user, add the uid to [access] in ttmd.toml, or start your own ttmd",
            c.uid(),
            self.uid
        )))
    }

    /// Refuses a request meant for another tree (the client names it when
    /// the user set `TETRA_DIR`), so a shared default socket never lets a
    /// script write into the wrong tree.
    fn check_tree<T>(&self, req: &Request<T>) -> Result<(), Status> {
        use std::os::unix::ffi::OsStrExt;
        let Some(bytes) = req
            .metadata()
            .get_bin(ttm_proto::headers::ROOT)
            .and_then(|v| v.to_bytes().ok())
        else {
            return Ok(());
        };
        let wanted = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        // Scripts name the tree the way ttmd was started with it: answer
        // those without touching the file system on every request.
        if wanted == self.shared.canonical_root || wanted == self.shared.store.root {
            return Ok(());
        }
        let wanted = std::fs::canonicalize(&wanted).unwrap_or(wanted);
        if wanted == self.shared.canonical_root {
            return Ok(());
        }
        let mut status = Status::failed_precondition(format!(
            "the ttmd on this socket serves {}, not {}; give that tree its own daemon with \
             TTM_SOCKET={}/run/ttmd.sock (ttmctl starts one there), or unset TETRA_DIR",
            self.shared.canonical_root.display(),
            wanted.display(),
            wanted.display()
        ));
        status.metadata_mut().insert(
            ttm_proto::headers::ERROR,
            tonic::metadata::MetadataValue::from_static(ttm_proto::headers::WRONG_TREE),
        );
        Err(status)
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

    /// Runs one mutation of a transaction on a blocking thread. The reply's
    /// state message is built only if `reply_state` (an append answers with
    /// its seq alone, and is the hot path).
    async fn mutate<F>(
        &self,
        r: Option<pb::TxnRef>,
        pre: Option<pb::Preconditions>,
        client: Client,
        reply_state: bool,
        make: F,
    ) -> Result<(Option<pb::TxnState>, Outcome), Status>
    where
        F: FnOnce(&fsm::Fsm, &state::State, chrono::DateTime<chrono::Utc>) -> Result<Body>
            + Send
            + 'static,
    {
        let this = self.clone();
        blocking(move || {
            let g = checked_guards(pre)?;
            let (module, txn) = this.txn(r)?;
            let outcome = txn.mutate(&g, &client, |s, now| make(&module.fsm(), s, now))?;
            module.announce(&outcome);
            let state = reply_state.then(|| this.state_msg(&module, &txn, &outcome.state));
            Ok((state, outcome))
        })
        .await
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

/// Refuses a client that speaks another API generation, in words that say
/// what to do.
fn check_api_version<T>(req: &Request<T>) -> Result<(), Status> {
    let meta = req.metadata();
    let Some(api) = meta
        .get(ttm_proto::headers::API_VERSION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    if api.trim() == ttm_proto::API_VERSION.to_string() {
        return Ok(());
    }
    let client = meta
        .get(ttm_proto::headers::CLIENT_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    Err(Status::failed_precondition(format!(
        "this client ({client}) speaks API ttm.v{api} but ttmd {} speaks ttm.v{}; restart ttmd \
         with the matching version (`ttmctl daemon stop`; the next call starts the installed one)",
        ttm_proto::VERSION,
        ttm_proto::API_VERSION
    )))
}

/// Runs blocking store work off the async threads and maps its error.
async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(to_status),
        Err(e) => Err(Status::internal(format!("ttmd worker failed: {e}"))),
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

#[tonic::async_trait]
impl Ttm for TtmService {
    async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        self.caller(&req)?;
        Ok(Response::new(pb::HelloResponse {
            daemon_version: ttm_proto::VERSION.to_string(),
            api_version: ttm_proto::API_VERSION,
            pid: std::process::id(),
            root: self.shared.store.root.to_string_lossy().into_owned(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let state = blocking(move || {
            let new = NewTxn {
                description: r.description,
                target: or_default(&r.target, crate::core::DEFAULT_TARGET).to_string(),
                agent: or_default(&r.agent, crate::core::DEFAULT_AGENT).to_string(),
                activate: !r.no_activate,
                request_id: Some(r.request_id).filter(|s| !s.is_empty()),
            };
            if let Some(rid) = &new.request_id {
                validate_request_id(rid)?;
            }
            crate::store::module::validate_new(&new, this.shared.config().limits.description)?;
            let module = this.module(&r.module, true)?;
            let txn = module.create(&new, &client)?;
            Ok(this.state_msg(&module, &txn, &txn.state()))
        })
        .await?;
        Ok(Response::new(pb::CreateResponse { state: Some(state) }))
    }

    async fn get_active(
        &self,
        req: Request<pb::GetActiveRequest>,
    ) -> Result<Response<pb::GetActiveResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let txn_id = blocking(move || {
            let module = this.module(&r.module, false)?;
            module.active_id()?.ok_or_else(|| {
                Error::Refused(format!(
                    "no active transaction in module {}; create one with `ttmctl create`",
                    module.name
                ))
            })
        })
        .await?;
        Ok(Response::new(pb::GetActiveResponse { txn_id }))
    }

    async fn activate(
        &self,
        req: Request<pb::ActivateRequest>,
    ) -> Result<Response<pb::ActivateResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let state = blocking(move || {
            let g = checked_guards(r.pre)?;
            let tref = r.txn.unwrap_or_default();
            if tref.txn_id.is_empty() {
                return Err(Error::invalid("activate needs a transaction id"));
            }
            let module = this.module(&tref.module, false)?;
            let outcome = module.activate(&tref.txn_id, &g, &client)?;
            let txn = module.txn(&tref.txn_id)?;
            Ok(this.state_msg(&module, &txn, &outcome.state))
        })
        .await?;
        Ok(Response::new(pb::ActivateResponse { state: Some(state) }))
    }

    async fn get_state(
        &self,
        req: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let state = blocking(move || {
            let (module, txn) = this.txn(r.txn)?;
            Ok(this.state_msg(&module, &txn, &txn.state()))
        })
        .await?;
        Ok(Response::new(pb::GetStateResponse { state: Some(state) }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let reply = blocking(move || {
            if !r.stage.is_empty() {
                fsm::validate_stage_name(&r.stage)?;
            }
            let module = this.module(&r.module, false)?;
            let active = module.active_id()?;
            let stage = Some(r.stage.as_str()).filter(|s| !s.is_empty());
            let txns = module
                .list(stage)
                .iter()
                .map(|listed| {
                    let active = active.as_deref() == Some(listed.id.as_str());
                    if r.brief {
                        return Ok(txn_row(&listed.summary, &module.name, active));
                    }
                    let state = module.listed_state(listed)?;
                    Ok(txn_state(&state, &module.txns_dir.join(&listed.id), active))
                })
                .collect::<Result<_>>()?;
            let quarantined = module
                .quarantined()
                .into_iter()
                .map(|(txn_id, reason)| pb::Quarantined { txn_id, reason })
                .collect();
            Ok(pb::ListResponse { txns, quarantined })
        })
        .await?;
        Ok(Response::new(reply))
    }

    async fn transition(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::TransitionResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let to = r.stage;
        // A malformed name is bad input whatever the guards say.
        fsm::validate_stage_name(&to).map_err(to_status)?;
        let (state, _) = self
            .mutate(r.txn, r.pre, client, true, move |fsm, s, now| {
                let step = fsm.transition(&s.stage, &to)?;
                Ok(match to.as_str() {
                    // Moving to a terminal stage is a commit or a failure,
                    // recorded as such so the log has one meaning for each.
                    DONE => Body::Commit {
                        from: s.stage.clone(),
                        duration_ms: state::duration_ms(&s.created, now),
                    },
                    FAIL => Body::Fail {
                        from: s.stage.clone(),
                        error: "moved to FAIL by a transition".into(),
                    },
                    _ => Body::Transition {
                        from: s.stage.clone(),
                        to: to.clone(),
                        iteration: step.iterate.then_some(s.iteration + 1),
                    },
                })
            })
            .await?;
        Ok(Response::new(pb::TransitionResponse { state }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let (state, outcome) = self
            .mutate(r.txn, r.pre, client, true, |_, s, now| {
                txn::refuse_if_terminal(s)?;
                Ok(Body::Commit {
                    from: s.stage.clone(),
                    duration_ms: state::duration_ms(&s.created, now),
                })
            })
            .await?;
        let duration_ms = outcome
            .event
            .get("duration_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Response::new(pb::CommitResponse { state, duration_ms }))
    }

    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        self.check_payload(&r.error, "the error message")
            .map_err(to_status)?;
        let error = if r.error.is_empty() {
            "failed".to_string()
        } else {
            r.error
        };
        let (state, _) = self
            .mutate(r.txn, r.pre, client, true, move |_, s, _| {
                txn::refuse_if_terminal(s)?;
                Ok(Body::Fail {
                    from: s.stage.clone(),
                    error,
                })
            })
            .await?;
        Ok(Response::new(pb::FailResponse { state }))
    }

    async fn retry(
        &self,
        req: Request<pb::RetryRequest>,
    ) -> Result<Response<pb::RetryResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let to = Some(r.to).filter(|t| !t.is_empty());
        let (state, _) = self
            .mutate(r.txn, r.pre, client, true, move |fsm, s, _| {
                let to = fsm.retry_target(&s.stage, to.as_deref())?;
                Ok(Body::Retry {
                    to,
                    iteration: s.iteration + 1,
                })
            })
            .await?;
        Ok(Response::new(pb::RetryResponse { state }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let patch = (|| {
            self.check_payload(&r.patch_json, "the update")?;
            let patch = event::parse_object(&r.patch_json, "the update")?;
            if let Some(k) = patch.keys().find(|k| RESERVED_FIELDS.contains(&k.as_str())) {
                return Err(Error::invalid(format!(
                    "{k} is maintained by ttmd and cannot be set with update; reserved: {}",
                    RESERVED_FIELDS.join(", ")
                )));
            }
            for (k, v) in &patch {
                if matches!(k.as_str(), "description" | "target" | "agent") && !v.is_string() {
                    return Err(Error::invalid(format!("{k} must be a string")));
                }
            }
            if let Some(Value::String(t)) = patch.get("target") {
                crate::core::topology::validate_target(t)?;
            }
            Ok(patch)
        })()
        .map_err(to_status)?;
        let (state, _) = self
            .mutate(r.txn, r.pre, client, true, move |_, s, _| {
                txn::refuse_if_terminal(s)?;
                Ok(Body::Updated { patch })
            })
            .await?;
        Ok(Response::new(pb::UpdateResponse { state }))
    }

    async fn append_event(
        &self,
        req: Request<pb::AppendEventRequest>,
    ) -> Result<Response<pb::AppendEventResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let data = (|| {
            event::validate_user_type(&r.event)?;
            self.check_payload(&r.data_json, "the event data")?;
            event::parse_object(&r.data_json, "the event data")
        })()
        .map_err(to_status)?;
        let kind = r.event;
        let (_, outcome) = self
            .mutate(r.txn, r.pre, client, false, move |_, s, _| {
                txn::refuse_if_terminal(s)?;
                Ok(Body::User { event: kind, data })
            })
            .await?;
        let seq = outcome
            .event
            .get("seq")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Response::new(pb::AppendEventResponse { seq }))
    }

    async fn add_context(
        &self,
        req: Request<Streaming<pb::AddContextRequest>>,
    ) -> Result<Response<pb::AddContextResponse>, Status> {
        use pb::add_context_request::Part;
        let client = self.peer(&req)?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::AddContextRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "AddContext must start with a header message",
                ));
            }
        };
        // Refuse bad names, bad guards and unknown or final transactions
        // before taking any bytes.
        let this = self.clone();
        let (h, g, module, txn, temp, file) = blocking(move || {
            ctx::validate_source_name(&header.file_name)?;
            ctx::evidence_name(ctx::FIRST_EVIDENCE, &header.description, &header.file_name)?;
            this.check_payload(&header.description, "the description")?;
            let g = checked_guards(header.pre.clone())?;
            let (module, txn) = this.txn(header.txn.clone())?;
            txn::refuse_if_terminal(&txn.state())?;
            let (temp, file) = txn.create_temp_evidence()?;
            Ok((header, g, module, txn, temp, file))
        })
        .await?;
        let config = self.shared.config();
        let received = receive_file(
            &temp,
            file,
            &mut stream,
            config.limits.ctx_file,
            config.durability,
        )
        .await;
        let (bytes, sha256) = match received {
            Ok(v) => v,
            Err(status) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(status);
            }
        };
        let this = self.clone();
        let temp2 = temp.clone();
        let result = blocking(move || {
            let outcome = txn.add_evidence(
                this.shared.config().limits.ctx_files,
                &temp2,
                bytes,
                &sha256,
                &h.description,
                &h.file_name,
                &g,
                &client,
            )?;
            module.announce(&outcome);
            Ok(outcome)
        })
        .await;
        let outcome = match result {
            Ok(o) => o,
            Err(status) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(status);
            }
        };
        let e = &outcome.event;
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let num = |k: &str| e.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok(Response::new(pb::AddContextResponse {
            file: text("file"),
            bytes: num("bytes"),
            sha256: text("sha256"),
            ctx_digest: text("ctx_digest"),
            seq: num("seq"),
        }))
    }

    async fn list_context(
        &self,
        req: Request<pb::ListContextRequest>,
    ) -> Result<Response<pb::ListContextResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let resp = blocking(move || {
            let (_, txn) = this.txn(r.txn)?;
            let entries = txn.ctx_entries()?;
            let dir = txn.dir.join(txn::CTX_DIR);
            let sizes: std::collections::HashMap<String, u64> =
                entries.iter().map(|e| (e.name.clone(), e.bytes)).collect();
            let order = ctx::evidence_order(entries.into_iter().map(|e| e.name).collect());
            let files = order
                .into_iter()
                .map(|(name, index)| pb::ContextFile {
                    number: ctx::number_of(&name).unwrap_or(0),
                    bytes: sizes.get(&name).copied().unwrap_or(0),
                    path: dir.join(&name).to_string_lossy().into_owned(),
                    evidence_index: index,
                    name,
                })
                .collect();
            Ok(pb::ListContextResponse {
                files,
                ctx_digest: txn.state().ctx_digest.clone().unwrap_or_default(),
            })
        })
        .await?;
        Ok(Response::new(resp))
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let shared = self.shared.clone();
        let (state, outcome) = self
            .mutate(r.txn, r.pre, client, true, move |_, s, _| {
                txn::refuse_if_terminal(s)?;
                let resolved = shared.store.topology()?.resolve(&s.target)?;
                Ok(Body::TesResolved {
                    target: s.target.clone(),
                    plan: resolved.plan,
                    connector: resolved.connector,
                })
            })
            .await?;
        let e = &outcome.event;
        Ok(Response::new(pb::ResolveResponse {
            state,
            target: e.get("target").and_then(Value::as_str).unwrap_or("").into(),
            plan: e.get("plan").and_then(Value::as_str).unwrap_or("").into(),
            connector_json: e.get("connector").map(Value::to_string).unwrap_or_default(),
        }))
    }

    async fn get_connector(
        &self,
        req: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::GetConnectorResponse>, Status> {
        self.caller(&req)?;
        let target = req.into_inner().target;
        let shared = self.shared.clone();
        let connector = blocking(move || shared.store.topology()?.connector(&target)).await?;
        Ok(Response::new(pb::GetConnectorResponse {
            connector_json: serde_json::to_string_pretty(&connector).unwrap_or_default(),
        }))
    }

    type EventsStream = streams::Stream<pb::EventsResponse>;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        if !r.event.is_empty() {
            let e = &r.event;
            let ok = e.len() <= event::EVENT_TYPE_MAX
                && e.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                });
            if !ok {
                return Err(Status::invalid_argument(format!(
                    "invalid event type filter {}",
                    quote(e)
                )));
            }
        }
        let this = self.clone();
        let tref = r.txn.clone();
        let (_, txn) = blocking(move || this.txn(tref)).await?;
        let config = self.shared.config();
        let slot = self.shared.streams.admit(pid_of(&client), &config.limits)?;
        Ok(Response::new(streams::events(
            txn,
            r,
            config.heartbeat,
            self.shared.shutdown.clone(),
            slot,
        )))
    }

    type WatchStream = streams::Stream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let client = self.caller(&req)?;
        let name = req.into_inner().module;
        let changes = self.shared.store.watch(&name).map_err(to_status)?;
        let config = self.shared.config();
        let slot = self.shared.streams.admit(pid_of(&client), &config.limits)?;
        let name = if name.is_empty() {
            crate::core::DEFAULT_MODULE.to_string()
        } else {
            name
        };
        Ok(Response::new(streams::watch(
            name,
            changes,
            config.heartbeat,
            self.shared.shutdown.clone(),
            slot,
        )))
    }

    async fn archive(
        &self,
        req: Request<pb::ArchiveRequest>,
    ) -> Result<Response<pb::ArchiveResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let txn_ids = blocking(move || {
            let stage = Some(r.stage.as_str()).filter(|s| !s.is_empty());
            if let Some(s) = stage
                && !fsm::is_terminal(s)
            {
                return Err(Error::invalid(format!(
                    "only finished transactions are archived: --stage is DONE or FAIL, not {}",
                    quote(s)
                )));
            }
            this.module(&r.module, false)?
                .archive(r.older_than_secs, stage, r.apply)
        })
        .await?;
        Ok(Response::new(pb::ArchiveResponse {
            txn_ids,
            applied: r.apply,
        }))
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let txn_ids = blocking(move || {
            this.module(&r.module, false)?
                .gc(r.older_than_secs, r.keep as usize, r.apply)
        })
        .await?;
        Ok(Response::new(pb::GcResponse {
            txn_ids,
            applied: r.apply,
        }))
    }

    async fn daemon_status(
        &self,
        req: Request<pb::DaemonStatusRequest>,
    ) -> Result<Response<pb::DaemonStatusResponse>, Status> {
        self.caller(&req)?;
        let s = &self.shared;
        let modules = s.store.modules();
        Ok(Response::new(pb::DaemonStatusResponse {
            pid: std::process::id(),
            version: ttm_proto::VERSION.to_string(),
            api_version: ttm_proto::API_VERSION,
            uptime_secs: s.started.elapsed().as_secs(),
            root: s.store.root.to_string_lossy().into_owned(),
            socket: s.socket.to_string_lossy().into_owned(),
            transactions: modules.iter().map(|m| m.count() as u64).sum(),
            modules: modules.len() as u32,
            open_streams: s.streams.open(),
            durability: format!("{:?}", s.config().durability).to_lowercase(),
        }))
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        self.caller(&req)?;
        let shared = self.shared.clone();
        let report = tokio::task::spawn_blocking(move || shared.reload())
            .await
            .map_err(|e| Status::internal(format!("reload failed: {e}")))?;
        for line in &report {
            tracing::info!("reload: {line}");
        }
        Ok(Response::new(pb::ReloadResponse { report }))
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        self.caller(&req)?;
        tracing::info!("shutdown requested by a client");
        self.shared.stop_requested.notify_one();
        Ok(Response::new(pb::ShutdownResponse {}))
    }
}

/// Writes an incoming evidence stream to `temp`, hashing as it goes, with
/// memory bounded by one chunk. Returns the size and sha256.
async fn receive_file(
    temp: &std::path::Path,
    file: std::fs::File,
    stream: &mut Streaming<pb::AddContextRequest>,
    limit: u64,
    durability: Durability,
) -> Result<(u64, String), Status> {
    use pb::add_context_request::Part;
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(msg) = stream.message().await? {
        let Some(Part::Chunk(chunk)) = msg.part else {
            return Err(Status::invalid_argument(
                "AddContext sends one header, then only chunks",
            ));
        };
        bytes += chunk.len() as u64;
        if bytes > limit {
            return Err(to_status(Error::OverLimit(format!(
                "ctx file is larger than the limit of {limit} bytes (limits.ctx_file)"
            ))));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| to_status(Error::io("writing", temp, e)))?;
    }
    file.flush()
        .await
        .map_err(|e| to_status(Error::io("writing", temp, e)))?;
    if durability.syncs() {
        file.sync_all()
            .await
            .map_err(|e| to_status(Error::io("syncing", temp, e)))?;
    }
    Ok((bytes, ctx::hex(&hasher.finalize())))
}
