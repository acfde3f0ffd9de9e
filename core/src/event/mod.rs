//! The lines of `events.ndjson` (SPEC §5): what each event type carries, and
//! how a line is laid out. Every line is one JSON object whose first keys are
//! `ts`, `event` and `seq`, in that order, so the log reads well in `tail -f`.

use serde_json::{Map, Value};

mod read;

pub use read::{Event, Logged};

use super::id::quote;
use super::timing::{OnTimeout, Scope, Settings};
use super::{Error, Result};

/// Longest user event type accepted.
pub const EVENT_TYPE_MAX: usize = 64;

/// The type of a hook's outcome line.
pub const HOOK_RAN: &str = "hook_ran";

/// Event types the daemon writes itself; users may not forge them.
pub const BUILTIN_TYPES: &[&str] = &[
    "txn_start",
    "stage_transition",
    "state_updated",
    "evidence_added",
    "tes_resolved",
    "txn_commit",
    "txn_fail",
    "txn_retry",
    "activated",
    "state_adopted",
    "stage_migrated",
    "lease_requested",
    "lease_acquired",
    "lease_released",
    "lease_expired",
    HOOK_RAN,
    "txn_overdue",
    "txn_stalled",
    "txn_resumed",
];

/// What an event says, apart from the envelope every line has.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A transaction was created.
    Start {
        txn_id: String,
        description: String,
        target: String,
        agent: String,
        module: String,
        stage: String,
        ctx_digest: String,
        /// `--deadline`, `--on-deadline`, `--heartbeat` (SPEC §14).
        time: Settings,
    },
    /// The stage changed along an FSM edge.
    Transition {
        from: String,
        to: String,
        /// The new iteration, present only when the edge started one.
        iteration: Option<u64>,
    },
    /// User fields were merged into the state.
    Updated { patch: Map<String, Value> },
    /// A ctx file was stored.
    EvidenceAdded {
        file: String,
        description: String,
        bytes: u64,
        sha256: String,
        ctx_digest: String,
    },
    /// The target was resolved through the topology.
    TesResolved {
        target: String,
        plan: String,
        connector: Value,
    },
    /// The transaction moved to DONE.
    Commit { from: String, duration_ms: u64 },
    /// The transaction moved to FAIL.
    Fail { from: String, error: String },
    /// A transaction left in a stage its module's FSM does not know (or
    /// cannot leave), by an older version, was moved to one it can continue
    /// from (`ttmctl migrate`).
    Migrated { from: String, to: String },
    /// A FAIL transaction went back to a live stage.
    Retry { to: String, iteration: u64 },
    /// The transaction became its module's active one.
    Activated,
    /// A state.json written by the bash version was taken over as is; its
    /// fields become the base the rest of the log folds onto.
    Adopted { state: Map<String, Value> },
    /// The transaction asked for a lease and joined its queue; the ticket
    /// orders the queue, also across a restart.
    LeaseRequested {
        name: String,
        ticket: u64,
        ttl_ms: u64,
    },
    /// The transaction was granted a lease with this fencing token.
    LeaseAcquired {
        name: String,
        token: u64,
        ttl_ms: u64,
    },
    /// The transaction let go of a lease it held (`token`) or stopped
    /// waiting for one (`token` 0).
    LeaseReleased { name: String, token: u64 },
    /// The transaction lost a lease: silent past its TTL.
    LeaseExpired { name: String, token: u64 },
    /// The daemon ran a hook for the event at `for_seq` (SPEC §15): an
    /// annotation, admitted on a finished transaction too, which changes
    /// nothing of the state but `seq` (see [`Body::is_annotation`]).
    HookRan {
        /// The hook's name (`on-commit`, …).
        hook: String,
        for_seq: u64,
        for_event: String,
        /// `exited`, `signaled`, `timeout`, `refused` or `error`.
        outcome: String,
        exit_code: Option<i64>,
        signal: Option<i64>,
        duration_ms: u64,
        /// Why it was refused or could not start; empty otherwise.
        reason: String,
    },
    /// A stage visit ran past its fsm.json timeout, or the transaction
    /// past its deadline (SPEC §14); logged once per visit / transaction.
    Overdue {
        scope: Scope,
        /// The stage it was in.
        stage: String,
        /// The limit: `30m` for a stage, the deadline's time for a deadline.
        limit: String,
        /// How long the stage (or the transaction) had run when logged.
        ran_ms: u64,
        on_timeout: OnTimeout,
    },
    /// The transaction showed no life for its heartbeat period.
    Stalled { period_ms: u64, last_life: String },
    /// Life returned to a stalled transaction (`by`: `event` or
    /// `heartbeat`).
    Resumed {
        stalled_since: String,
        stalled_ms: u64,
        by: String,
    },
    /// A user event: progress, log lines, anything a script wants recorded.
    User {
        event: String,
        data: Map<String, Value>,
    },
}

/// The envelope of a line: when, where in the log, on whose behalf.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// RFC 3339 UTC, millisecond precision.
    pub ts: String,
    /// The line number the event will have.
    pub seq: u64,
    /// The mutation's idempotency key, if it had one.
    pub request_id: Option<String>,
    /// Who asked: pid, uid, agent.
    pub client: Option<Value>,
}

impl Body {
    /// The final stage this event records: DONE for a commit, FAIL for a
    /// failure, `None` for every other type. The one place that answers
    /// it, so a new type is decided here (the match has no catch-all).
    pub fn final_stage(&self) -> Option<&'static str> {
        match self {
            Body::Commit { .. } => Some(crate::fsm::DONE),
            Body::Fail { .. } => Some(crate::fsm::FAIL),
            Body::Start { .. }
            | Body::Transition { .. }
            | Body::Updated { .. }
            | Body::EvidenceAdded { .. }
            | Body::TesResolved { .. }
            | Body::Retry { .. }
            | Body::Migrated { .. }
            | Body::Activated
            | Body::Adopted { .. }
            | Body::LeaseRequested { .. }
            | Body::LeaseAcquired { .. }
            | Body::LeaseReleased { .. }
            | Body::LeaseExpired { .. }
            | Body::HookRan { .. }
            | Body::Overdue { .. }
            | Body::Stalled { .. }
            | Body::Resumed { .. }
            | Body::User { .. } => None,
        }
    }

    /// Whether the event only annotates the transaction: written by the
    /// daemon about it (a hook's outcome), admitted when it is DONE or FAIL,
    /// no sign of the script's life, and never the cause of a hook itself.
    pub fn is_annotation(&self) -> bool {
        matches!(self, Body::HookRan { .. })
    }

    /// The `event` field of this body.
    pub fn kind(&self) -> &str {
        match self {
            Body::Start { .. } => "txn_start",
            Body::Transition { .. } => "stage_transition",
            Body::Updated { .. } => "state_updated",
            Body::EvidenceAdded { .. } => "evidence_added",
            Body::TesResolved { .. } => "tes_resolved",
            Body::Commit { .. } => "txn_commit",
            Body::Fail { .. } => "txn_fail",
            Body::Retry { .. } => "txn_retry",
            Body::Migrated { .. } => "stage_migrated",
            Body::Activated => "activated",
            Body::Adopted { .. } => "state_adopted",
            Body::LeaseRequested { .. } => "lease_requested",
            Body::LeaseAcquired { .. } => "lease_acquired",
            Body::LeaseReleased { .. } => "lease_released",
            Body::LeaseExpired { .. } => "lease_expired",
            Body::HookRan { .. } => HOOK_RAN,
            Body::Overdue { .. } => "txn_overdue",
            Body::Stalled { .. } => "txn_stalled",
            Body::Resumed { .. } => "txn_resumed",
            Body::User { event, .. } => event,
        }
    }

    /// The JSON object of the line, without its trailing newline. One arm
    /// per event type, each laying out its fields in file order: longer
    /// than most functions, kept whole so a line's layout reads in one
    /// place (the golden files pin it).
    // Long: one arm per event type; a line's layout reads best in one place.
    pub fn to_object(&self, meta: &Meta) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("ts".into(), meta.ts.clone().into());
        m.insert("event".into(), self.kind().into());
        m.insert("seq".into(), meta.seq.into());
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        match self {
            Body::Start {
                txn_id,
                description,
                target,
                agent,
                module,
                stage,
                ctx_digest,
                time,
            } => {
                put("txn_id", txn_id.as_str().into());
                put("description", description.as_str().into());
                put("target", target.as_str().into());
                put("agent", agent.as_str().into());
                put("module", module.as_str().into());
                put("stage", stage.as_str().into());
                put("ctx_digest", ctx_digest.as_str().into());
                // Only when given, so other starts keep their layout.
                if let Some(d) = &time.deadline {
                    put("deadline", d.as_str().into());
                }
                if let Some(p) = time.on_deadline {
                    put("on_deadline", p.as_str().into());
                }
                if let Some(h) = time.heartbeat_ms {
                    put("heartbeat_ms", h.into());
                }
            }
            Body::Transition {
                from,
                to,
                iteration,
            } => {
                put("from", from.as_str().into());
                put("to", to.as_str().into());
                if let Some(i) = iteration {
                    put("iteration", (*i).into());
                }
            }
            Body::Updated { patch } => put("patch", Value::Object(patch.clone())),
            Body::EvidenceAdded {
                file,
                description,
                bytes,
                sha256,
                ctx_digest,
            } => {
                put("file", file.as_str().into());
                put("description", description.as_str().into());
                put("bytes", (*bytes).into());
                put("sha256", sha256.as_str().into());
                put("ctx_digest", ctx_digest.as_str().into());
            }
            Body::TesResolved {
                target,
                plan,
                connector,
            } => {
                put("target", target.as_str().into());
                put("plan", plan.as_str().into());
                put("connector", connector.clone());
            }
            Body::Commit { from, duration_ms } => {
                put("from", from.as_str().into());
                put("duration_ms", (*duration_ms).into());
            }
            Body::Fail { from, error } => {
                put("from", from.as_str().into());
                put("error", error.as_str().into());
            }
            Body::Retry { to, iteration } => {
                put("to", to.as_str().into());
                put("iteration", (*iteration).into());
            }
            Body::Migrated { from, to } => {
                put("from", from.as_str().into());
                put("to", to.as_str().into());
            }
            Body::Activated => {}
            Body::Adopted { state } => put("state", Value::Object(state.clone())),
            Body::LeaseRequested {
                name,
                ticket,
                ttl_ms,
            } => {
                put("name", name.as_str().into());
                put("ticket", (*ticket).into());
                put("ttl_ms", (*ttl_ms).into());
            }
            Body::LeaseAcquired {
                name,
                token,
                ttl_ms,
            } => {
                put("name", name.as_str().into());
                put("token", (*token).into());
                put("ttl_ms", (*ttl_ms).into());
            }
            Body::LeaseReleased { name, token } | Body::LeaseExpired { name, token } => {
                put("name", name.as_str().into());
                put("token", (*token).into());
            }
            Body::HookRan {
                hook,
                for_seq,
                for_event,
                outcome,
                exit_code,
                signal,
                duration_ms,
                reason,
            } => {
                put("hook", hook.as_str().into());
                put("for_seq", (*for_seq).into());
                put("for_event", for_event.as_str().into());
                put("outcome", outcome.as_str().into());
                put("exit_code", exit_code.map_or(Value::Null, Value::from));
                put("signal", signal.map_or(Value::Null, Value::from));
                put("duration_ms", (*duration_ms).into());
                if !reason.is_empty() {
                    put("reason", reason.as_str().into());
                }
            }
            Body::Overdue {
                scope,
                stage,
                limit,
                ran_ms,
                on_timeout,
            } => {
                put("scope", scope.as_str().into());
                put("stage", stage.as_str().into());
                put("limit", limit.as_str().into());
                put("ran_ms", (*ran_ms).into());
                put("on_timeout", on_timeout.as_str().into());
            }
            Body::Stalled {
                period_ms,
                last_life,
            } => {
                put("period_ms", (*period_ms).into());
                put("last_life", last_life.as_str().into());
            }
            Body::Resumed {
                stalled_since,
                stalled_ms,
                by,
            } => {
                put("stalled_since", stalled_since.as_str().into());
                put("stalled_ms", (*stalled_ms).into());
                put("by", by.as_str().into());
            }
            Body::User { data, .. } => put("data", Value::Object(data.clone())),
        }
        if let Some(r) = &meta.request_id {
            m.insert("request_id".into(), r.as_str().into());
        }
        if let Some(c) = &meta.client {
            m.insert("client".into(), c.clone());
        }
        m
    }

    /// The line as written to the log, newline included.
    pub fn to_line(&self, meta: &Meta) -> String {
        line(&self.to_object(meta))
    }
}

/// Key of a line's request digest: what the request that carried its
/// `request_id` asked for, so a reused id asking for something else is told
/// apart from a true repeat.
pub const REQUEST_DIGEST: &str = "request_digest";

/// The digest of a request's canonical parameters (`what`: the RPC and its
/// parameters, as the service spells them): 16 hex digits of sha256.
pub fn request_digest(what: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(what.as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `object` as one log line: compact JSON and its newline.
pub fn line(object: &Map<String, Value>) -> String {
    // Serialising a map cannot fail (its keys are strings).
    let mut line = serde_json::to_string(object).unwrap_or_default();
    line.push('\n');
    line
}

/// Checks a user event type: `[a-z][a-z0-9_.]{0,63}` and not built in.
pub fn validate_user_type(kind: &str) -> Result<()> {
    let well_formed = !kind.is_empty()
        && kind.len() <= EVENT_TYPE_MAX
        && kind.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || (i > 0 && (b.is_ascii_digit() || b == b'_' || b == b'.'))
        });
    if !well_formed {
        return Err(Error::invalid(format!(
            "invalid event type {}: types are 1-{EVENT_TYPE_MAX} characters of a-z, 0-9, '_' \
             and '.', starting with a letter",
            quote(kind)
        )));
    }
    if BUILTIN_TYPES.contains(&kind) {
        return Err(Error::invalid(format!(
            "event type {kind} is written by ttmd itself; use the matching command \
             (transition, commit, fail, update, ctx add, ...) or another type name"
        )));
    }
    Ok(())
}

/// Parses `text` as a JSON object (the form of patches and event data).
/// Empty text is the empty object.
pub fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::invalid(format!(
            "{what} must be a JSON object like {{\"key\": \"value\"}}, not {}",
            json_kind(&other)
        ))),
        Err(e) => Err(Error::invalid(format!("{what} is not valid JSON: {e}"))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
