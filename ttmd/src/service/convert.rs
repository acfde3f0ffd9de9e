//! Store values → API messages, and API messages → store arguments.

use ttm_proto::v1 as pb;

use crate::core::state::State;
use crate::core::summary::Summary;
use crate::store::txn::Guards;

/// The API form of a state.
pub fn txn_state(state: &State, dir: &std::path::Path, active: bool) -> pb::TxnState {
    pb::TxnState {
        txn_id: state.txn_id.clone(),
        module: state.module.clone(),
        description: state.description.clone(),
        stage: state.stage.clone(),
        target: state.target.clone(),
        iteration: state.iteration,
        agent: state.agent.clone(),
        ctx_digest: state.ctx_digest.clone().unwrap_or_default(),
        last_checkpoint: state.last_checkpoint.clone(),
        last_error: state.last_error.clone().unwrap_or_default(),
        created: state.created.clone(),
        seq: state.seq,
        json: state.to_pretty_json(),
        active,
        dir: dir.to_string_lossy().into_owned(),
        leases_held: state.leases.held.keys().cloned().collect(),
        leases_awaited: state.leases.awaited.keys().cloned().collect(),
        // Set by the service in cluster mode.
        home: String::new(),
        stale: false,
        mirror_lag: 0,
    }
}

/// A brief `list` row: what a table shows (see `ListRequest.brief`).
pub fn txn_row(summary: &Summary, module: &str, active: bool) -> pb::TxnState {
    pb::TxnState {
        txn_id: summary.txn_id().to_owned(),
        module: module.to_owned(),
        description: summary.description().to_owned(),
        stage: summary.stage().to_owned(),
        target: summary.target().to_owned(),
        iteration: summary.iteration,
        last_checkpoint: summary.last_checkpoint().to_owned(),
        created: summary.created().to_owned(),
        seq: summary.seq,
        active,
        ..Default::default()
    }
}

/// The store form of a request's guards.
pub fn guards(pre: Option<pb::Preconditions>) -> Guards {
    let pre = pre.unwrap_or_default();
    Guards {
        expect_stage: pre.expect_stage.filter(|s| !s.is_empty()),
        expect_seq: pre.expect_seq,
        request_id: Some(pre.request_id).filter(|r| !r.is_empty()),
        request_digest: None,
        fences: pre.fences.into_iter().map(|f| (f.name, f.token)).collect(),
    }
}
