//! Remote mutations (SPEC §16): a mutation of a transaction homed on
//! another host goes through etcd and is applied by the home daemon
//! through its own handler (the one mutation path: guards, admission,
//! request-id idempotency, fencing).
//!
//! ```text
//! /ttm/v1/<module>/inbox/<home>/<txn>/<rid>        {"rpc", "from", "body": hex of the request}
//! /ttm/v1/<module>/inbox/<home>/<txn>/<rid>/done   {"code", "message", "error", "body": hex of the reply}
//! ```
//!
//! The caller's daemon puts the request (create-if-absent), waits for
//! `done` (bounded by [`WAIT`]), then deletes both. The home daemon looks
//! at its inbox every [`POLL`] and answers each request once. A home whose
//! `host/<id>` key is absent is refused at once (exit 12), never queued.
//!
//! Neither key outlives its writer: the request is on the caller daemon's
//! session lease, the answer on the home's. A caller that dies before it
//! deleted the pair leaves a request that etcd drops with its session, and
//! the home deletes an answer whose request is gone at its next look.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, Request, Status};
use ttm_etcd::{cmp, op};
use ttm_proto::v1 as pb;

use super::TtmService;
use super::status::to_status;
use crate::cluster::{Cluster, keys};
use crate::core::{Error, Result};

/// How often the home daemon looks at its inbox, and the caller at the
/// outcome.
const POLL: Duration = Duration::from_millis(50);
/// How long a caller waits for the home's answer.
const WAIT: Duration = Duration::from_secs(20);

/// Request and reply bytes travel as hex inside the JSON values.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd length".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("not hex at {i}"))
        })
        .collect()
}

/// `/ttm/v1/<module>/inbox/<home>/`.
fn inbox(module: &str, home: &str) -> String {
    format!("{}inbox/{home}/", keys::module(module))
}

/// Requests that name a transaction.
pub(super) trait Routed: Message + Default + Clone + 'static {
    fn txn_ref(&self) -> Option<&pb::TxnRef>;
    fn pre_mut(&mut self) -> &mut Option<pb::Preconditions>;
}

macro_rules! routed {
    ($($t:ty),*) => {$(
        impl Routed for $t {
            fn txn_ref(&self) -> Option<&pb::TxnRef> {
                self.txn.as_ref()
            }
            fn pre_mut(&mut self) -> &mut Option<pb::Preconditions> {
                &mut self.pre
            }
        }
    )*};
}
routed!(
    pb::TransitionRequest,
    pb::CommitRequest,
    pb::FailRequest,
    pb::RetryRequest,
    pb::UpdateRequest,
    pb::AppendEventRequest,
    pb::ResolveRequest
);

fn unique_id(host: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    format!(
        "{host}-{}-{now}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl TtmService {
    /// With `--cluster`, sends `req` to the home host of its transaction
    /// when that is another host, and answers with the home's reply;
    /// `None` when the transaction is this host's (or unknown anywhere).
    pub(super) async fn routed<Q: Routed, A: Message + Default>(
        &self,
        rpc: &str,
        req: &Request<Q>,
    ) -> Result<Option<A>, Status> {
        let Some(cluster) = self.shared.cluster().cloned() else {
            return Ok(None);
        };
        let r = req.get_ref().txn_ref().cloned().unwrap_or_default();
        let Some((module, home)) = self.home_elsewhere(&cluster, &r).await? else {
            return Ok(None);
        };
        // Every routed request carries a request id, so a home that
        // applied it but crashed (or lost etcd) before answering applies
        // it once, not again at its next poll of the inbox.
        let mut routed = req.get_ref().clone();
        let pre = routed.pre_mut().get_or_insert_with(Default::default);
        if pre.request_id.is_empty() {
            pre.request_id = format!("routed-{}", unique_id(cluster.host_id()));
        }
        let reply = send(&cluster, rpc, &module, &r.txn_id, &home, &routed).await?;
        A::decode(reply.as_slice())
            .map(Some)
            .map_err(|e| to_status(Error::Bug(format!("home host {home} answered {rpc}: {e}"))))
    }

    /// The module and home host of `r` when it is another host's
    /// transaction (as etcd's mirror says); `None` when it is this host's
    /// or unknown anywhere.
    async fn home_elsewhere(
        &self,
        cluster: &Cluster,
        r: &pb::TxnRef,
    ) -> Result<Option<(String, String)>, Status> {
        let module = if r.module.is_empty() {
            crate::core::DEFAULT_MODULE.to_string()
        } else {
            r.module.clone()
        };
        let local = self.module(&module, false).and_then(|m| m.txn(&r.txn_id));
        if r.txn_id.is_empty() || local.is_ok() {
            return Ok(None);
        }
        match super::remote::state(cluster, &module, &r.txn_id).await {
            Ok(Some(row)) => Ok(Some((module, row.home))),
            Ok(None) => Ok(None),
            Err(e) => Err(to_status(e)),
        }
    }

    /// Refuses evidence for another host's transaction: the files stay on
    /// their home host (only their size and sha256 reach etcd).
    pub(super) async fn evidence_is_local(&self, r: Option<&pb::TxnRef>) -> Result<(), Status> {
        let Some(cluster) = self.shared.cluster().cloned() else {
            return Ok(());
        };
        let r = r.cloned().unwrap_or_default();
        match self.home_elsewhere(&cluster, &r).await? {
            None => Ok(()),
            Some((_, home)) => Err(to_status(Error::HomedElsewhere(format!(
                "transaction {} lives on host {home}, and evidence files stay on their home \
                 host: run `ttmctl ctx add` on {home} (this host sees each file's size and \
                 sha256)",
                r.txn_id
            )))),
        }
    }

    /// Answers this host's inbox for as long as the daemon runs.
    pub async fn serve_inbox(self, cluster: Arc<Cluster>) {
        loop {
            tokio::time::sleep(POLL).await;
            // The answers go on the session lease: none, none answered.
            let Ok(lease) = cluster.session_lease("") else {
                continue;
            };
            for module in self.shared.store.modules() {
                self.serve_module(&cluster, &module.name, lease).await;
            }
        }
    }

    /// Answers the requests waiting in `module`'s inbox, and deletes the
    /// answers nobody will read (their request is gone).
    async fn serve_module(&self, cluster: &Cluster, module: &str, lease: i64) {
        let prefix = inbox(module, cluster.host_id());
        let Ok(range) = cluster.etcd().prefix(prefix.as_bytes()).await else {
            return;
        };
        let keys: HashSet<&[u8]> = range.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        for kv in &range.kvs {
            if let Some(request) = kv.key.strip_suffix(b"/done") {
                if !keys.contains(request) {
                    // Its caller died before deleting the pair; etcd
                    // dropped the request with the caller's session.
                    let unchanged = cmp::mod_revision(&kv.key, kv.mod_revision);
                    let delete = op::delete(&kv.key);
                    let _ = cluster
                        .etcd()
                        .txn(vec![unchanged], vec![delete], vec![])
                        .await;
                }
                continue;
            }
            let mut key = kv.key.clone();
            key.extend_from_slice(b"/done");
            if keys.contains(key.as_slice()) {
                continue;
            }
            let value = outcome_value(self.apply(&kv.value).await).to_string();
            // Only while the request is still there: a caller that gave up
            // deleted it.
            let _ = cluster
                .etcd()
                .txn(
                    vec![cmp::create_revision(&kv.key, kv.create_revision)],
                    vec![op::put(&key, value.as_bytes(), lease)],
                    vec![],
                )
                .await;
        }
    }

    /// Applies one request through this host's own handler.
    async fn apply(&self, value: &[u8]) -> Result<Vec<u8>, Status> {
        let v: Value = serde_json::from_slice(value)
            .map_err(|e| Status::invalid_argument(format!("a remote request: {e}")))?;
        let body = unhex(v["body"].as_str().unwrap_or_default())
            .map_err(|e| Status::invalid_argument(format!("a remote request: {e}")))?;
        macro_rules! call {
            ($method:ident, $t:ty) => {{
                let req = <$t>::decode(body.as_slice())
                    .map_err(|e| Status::invalid_argument(format!("a remote request: {e}")))?;
                let reply = self.$method(Request::new(req)).await?;
                Ok(reply.into_inner().encode_to_vec())
            }};
        }
        match v["rpc"].as_str().unwrap_or_default() {
            "transition" => call!(transition, pb::TransitionRequest),
            "commit" => call!(commit, pb::CommitRequest),
            "fail" => call!(fail, pb::FailRequest),
            "retry" => call!(retry, pb::RetryRequest),
            "update" => call!(update, pb::UpdateRequest),
            "append_event" => call!(append_event, pb::AppendEventRequest),
            "resolve" => call!(resolve, pb::ResolveRequest),
            other => Err(Status::unimplemented(format!(
                "a remote request for {other:?}, which this ttmd does not route"
            ))),
        }
    }
}

fn outcome_value(outcome: Result<Vec<u8>, Status>) -> Value {
    match outcome {
        Ok(body) => json!({"code": 0, "body": hex(&body)}),
        Err(s) => json!({
            "code": s.code() as i32,
            "message": s.message(),
            "error": s.metadata().get(ttm_proto::headers::ERROR).and_then(|v| v.to_str().ok()),
        }),
    }
}

/// Puts `req` in `home`'s inbox and waits for its answer.
async fn send<Q: Message>(
    cluster: &Cluster,
    rpc: &str,
    module: &str,
    txn: &str,
    home: &str,
    req: &Q,
) -> Result<Vec<u8>, Status> {
    let what = format!("writing to transaction {txn}, which lives on host {home},");
    let etcd = cluster.etcd();
    let alive = cluster.note(&what, etcd.get(keys::host(home).as_bytes()).await);
    match alive.map_err(to_status)? {
        Some(_) => {}
        None => {
            return Err(to_status(Error::CoordinationUnavailable(format!(
                "home host {home} is not reachable: its ttmd is not registered in etcd \
                 (stopped, crashed or cut off); transaction {txn} can only be changed by it — \
                 try again once {home}'s ttmd is back"
            ))));
        }
    }
    let key = format!(
        "{}{txn}/{}",
        inbox(module, home),
        unique_id(cluster.host_id())
    );
    let value = json!({"rpc": rpc, "from": cluster.host_id(), "body": hex(&req.encode_to_vec())});
    // On this daemon's session: a request whose caller died goes with it.
    let lease = cluster.session_lease(&what).map_err(to_status)?;
    let put = etcd.txn(
        vec![cmp::version(key.as_bytes(), 0)],
        vec![op::put(key.as_bytes(), value.to_string().as_bytes(), lease)],
        vec![],
    );
    cluster.note(&what, put.await).map_err(to_status)?;
    let done = format!("{key}/done");
    let outcome = wait_done(cluster, &done).await;
    let _ = etcd
        .txn(
            vec![],
            vec![op::delete(key.as_bytes()), op::delete(done.as_bytes())],
            vec![],
        )
        .await;
    let Some(v) = outcome else {
        return Err(to_status(Error::CoordinationUnavailable(format!(
            "home host {home} did not answer {what} within {}s; it may still apply it — \
             retry with the same --request-id to be sure it is applied once",
            WAIT.as_secs()
        ))));
    };
    answer(v)
}

async fn wait_done(cluster: &Cluster, done: &str) -> Option<Value> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < WAIT {
        if let Ok(Some(kv)) = cluster.etcd().get(done.as_bytes()).await {
            return serde_json::from_slice(&kv.value).ok();
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

fn answer(v: Value) -> Result<Vec<u8>, Status> {
    let code = v["code"].as_i64().unwrap_or(2);
    if code == 0 {
        return unhex(v["body"].as_str().unwrap_or_default())
            .map_err(|e| Status::internal(format!("the home host's answer: {e}")));
    }
    let code = Code::from_i32(i32::try_from(code).unwrap_or(2));
    let mut status = Status::new(code, v["message"].as_str().unwrap_or_default().to_string());
    if let Some(e) = v["error"].as_str()
        && let Ok(value) = e.parse()
    {
        status
            .metadata_mut()
            .insert(ttm_proto::headers::ERROR, value);
    }
    Err(status)
}
