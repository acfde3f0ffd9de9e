//! The RPCs that append one event to a transaction.

use serde_json::Value;
use tonic::{Request, Response, Status};
use ttm_proto::v1 as pb;

use super::TtmService;
use super::status::to_status;
use crate::core::Error;
use crate::core::admit;
use crate::core::event::{self, Body};
use crate::core::fsm;
use crate::core::state::RESERVED_FIELDS;
use crate::store::txn::Outcome;

/// The stage the logged change left (`previous_stage` of the replies), read
/// from the event itself so a replayed request id names its first move.
fn previous_stage(outcome: &Outcome) -> String {
    match outcome.body() {
        Some(
            Body::Transition { from, .. }
            | Body::Commit { from, .. }
            | Body::Fail { from, .. }
            | Body::Migrated { from, .. },
        ) => from.clone(),
        // Only a FAIL transaction can be retried.
        Some(Body::Retry { .. }) => fsm::FAIL.to_string(),
        _ => String::new(),
    }
}

impl TtmService {
    pub(super) async fn transition(
        &self,
        req: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::TransitionResponse>, Status> {
        let client = self.caller(&req)?;
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("transition", &req).await? {
            return Ok(Response::new(reply));
        }
        let r = req.into_inner();
        let to = r.stage;
        // A malformed name is bad input whatever the guards say.
        fsm::validate_stage_name(&to).map_err(to_status)?;
        let (state, outcome) = self
            .mutate(
                r.txn,
                r.pre,
                format!("transition\0{to}"),
                client,
                true,
                move |fsm, s, now| admit::transition(fsm, s, &to, now),
            )
            .await?;
        Ok(Response::new(pb::TransitionResponse {
            state,
            previous_stage: previous_stage(&outcome),
        }))
    }

    pub(super) async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let client = self.caller(&req)?;
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("commit", &req).await? {
            return Ok(Response::new(reply));
        }
        let r = req.into_inner();
        let (state, outcome) = self
            .mutate(r.txn, r.pre, "commit".into(), client, true, |_, s, now| {
                Ok(admit::commit(s, now))
            })
            .await?;
        let duration_ms = match outcome.body() {
            Some(Body::Commit { duration_ms, .. }) => *duration_ms,
            // A request id first used for another change is answered with
            // that change (SPEC §4, the first answer): no commit took time.
            _ => 0,
        };
        Ok(Response::new(pb::CommitResponse {
            state,
            duration_ms,
            previous_stage: previous_stage(&outcome),
        }))
    }

    pub(super) async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let client = self.caller(&req)?;
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("fail", &req).await? {
            return Ok(Response::new(reply));
        }
        let r = req.into_inner();
        self.check_payload(&r.error, "the error message")
            .map_err(to_status)?;
        let error = if r.error.is_empty() {
            "failed".to_string()
        } else {
            r.error
        };
        let (state, outcome) = self
            .mutate(
                r.txn,
                r.pre,
                format!("fail\0{error}"),
                client,
                true,
                move |_, s, _| {
                    Ok(Body::Fail {
                        from: s.stage.clone(),
                        error,
                    })
                },
            )
            .await?;
        Ok(Response::new(pb::FailResponse {
            state,
            previous_stage: previous_stage(&outcome),
        }))
    }

    pub(super) async fn retry(
        &self,
        req: Request<pb::RetryRequest>,
    ) -> Result<Response<pb::RetryResponse>, Status> {
        let client = self.caller(&req)?;
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("retry", &req).await? {
            return Ok(Response::new(reply));
        }
        let r = req.into_inner();
        let to = Some(r.to).filter(|t| !t.is_empty());
        let (state, outcome) = self
            .mutate(
                r.txn,
                r.pre,
                format!("retry\0{to:?}"),
                client,
                true,
                move |fsm, s, _| admit::retry(fsm, s, to.as_deref()),
            )
            .await?;
        Ok(Response::new(pb::RetryResponse {
            state,
            previous_stage: previous_stage(&outcome),
        }))
    }

    pub(super) async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let client = self.caller(&req)?;
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("update", &req).await? {
            return Ok(Response::new(reply));
        }
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
            if patch.is_empty() {
                return Err(Error::invalid(
                    "nothing to update: the patch is an empty object; give at least one field",
                ));
            }
            if let Some(Value::String(t)) = patch.get("target") {
                crate::core::topology::validate_target(t)?;
            }
            if let Some(Value::String(d)) = patch.get("description") {
                check_description(d, self.shared.config().limits.description)?;
            }
            Ok(patch)
        })()
        .map_err(to_status)?;
        let what = format!("update\0{}", Value::Object(patch.clone()));
        let (state, _) = self
            .mutate(r.txn, r.pre, what, client, true, move |_, _, _| {
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
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("append_event", &req).await? {
            return Ok(Response::new(reply));
        }
        let r = req.into_inner();
        let data = (|| {
            event::validate_user_type(&r.event)?;
            self.check_payload(&r.data_json, "the event data")?;
            event::parse_object(&r.data_json, "the event data")
        })()
        .map_err(to_status)?;
        let kind = r.event;
        // What a request id is checked against; without one, not needed
        // (and not worth a copy of the data on the hot path).
        let keyed = r.pre.as_ref().is_some_and(|p| !p.request_id.is_empty());
        let what = match keyed {
            true => format!("event\0{kind}\0{}", Value::Object(data.clone())),
            false => String::new(),
        };
        let (_, outcome) = self
            .mutate(r.txn, r.pre, what, client, false, move |_, _, _| {
                Ok(Body::User { event: kind, data })
            })
            .await?;
        Ok(Response::new(pb::AppendEventResponse {
            seq: outcome.seq(),
        }))
    }

    pub(super) async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let client = self.caller(&req)?;
        // Another host's transaction: its home applies it (inbox.rs).
        if let Some(reply) = self.routed("resolve", &req).await? {
            return Ok(Response::new(reply));
        }
        let r = req.into_inner();
        let shared = self.shared.clone();
        let (state, outcome) = self
            .mutate(
                r.txn,
                r.pre,
                "resolve".into(),
                client,
                true,
                move |_, s, _| {
                    let resolved = shared.store.topology()?.resolve(&s.target)?;
                    Ok(Body::TesResolved {
                        target: s.target.clone(),
                        plan: resolved.plan,
                        connector: resolved.connector,
                    })
                },
            )
            .await?;
        let (target, plan, connector_json) = match outcome.body() {
            Some(Body::TesResolved {
                target,
                plan,
                connector,
            }) => (target.clone(), plan.clone(), connector.to_string()),
            // A request id first used for another change is answered with
            // that change (SPEC §4, the first answer): nothing resolved.
            _ => Default::default(),
        };
        Ok(Response::new(pb::ResolveResponse {
            state,
            target,
            plan,
            connector_json,
        }))
    }
}

/// The limit on a description, for every path that sets one (create's is
/// in `validate_new`).
fn check_description(d: &str, limit: usize) -> crate::core::Result<()> {
    if d.len() > limit {
        return Err(Error::OverLimit(format!(
            "description is {} bytes; the limit is {limit} (limits.description)",
            d.len()
        )));
    }
    Ok(())
}
