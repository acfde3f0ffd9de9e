//! The RPCs that append one event to a transaction.

use serde_json::Value;
use tonic::{Request, Response, Status};
use ttm_proto::v1 as pb;

use super::TtmService;
use super::status::to_status;
use crate::core::Error;
use crate::core::event::{self, Body};
use crate::core::fsm::{self, DONE, FAIL};
use crate::core::state::{self, RESERVED_FIELDS};
use crate::store::txn;

impl TtmService {
    pub(super) async fn transition(
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

    pub(super) async fn commit(
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

    pub(super) async fn fail(
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

    pub(super) async fn retry(
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

    pub(super) async fn update(
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

    pub(super) async fn append_event(
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

    pub(super) async fn resolve(
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
}
