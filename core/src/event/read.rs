//! Reading a log line back: one parse into a typed [`Event`], which every
//! reader (the fold, the watch feed, the CLI) matches exhaustively, so a new
//! event type makes the compiler name each place that must handle it.

use serde_json::{Map, Value};

use super::{Body, validate_user_type};
use crate::timing::{OnTimeout, Scope};

/// A log line read back, parsed once: what the fold, the watch feed and the
/// renderers match on. Lines other programs appended are read with the
/// same leniency the fold has always had (a bash `txn_commit` has no
/// `from`), so a missing descriptive field reads as empty; a line whose
/// fields cannot mean its type is [`Event::Foreign`], never a guess.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A built-in event, or a user event with its `data`.
    Body(Body),
    /// A JSON object that is not one of ours: an unknown type without
    /// `data`, a missing or ill-formed `event`, or a built-in type lacking
    /// what gives it meaning (a `stage_transition` without `to`). Folded as
    /// nothing but its seq and time; streamed as written.
    Foreign { event: String },
    /// Not a JSON object at all.
    Malformed,
}

/// One line of the log as read: its envelope and its typed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// `ts` as written, if the line has one.
    pub ts: Option<String>,
    /// The idempotency key the line carries.
    pub request_id: Option<String>,
    pub event: Event,
}

fn text_of(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

fn text_or(o: &Map<String, Value>, key: &str, default: &str) -> String {
    text_of(o, key).unwrap_or_else(|| default.to_string())
}

fn object_of(o: &Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match o.get(key) {
        Some(Value::Object(m)) => Some(m.clone()),
        _ => None,
    }
}

impl Logged {
    /// Reads a line's object (`None`: the line is not a JSON object).
    pub fn read(object: Option<&Map<String, Value>>) -> Logged {
        let Some(o) = object else {
            return Logged {
                ts: None,
                request_id: None,
                event: Event::Malformed,
            };
        };
        Logged {
            ts: text_of(o, "ts"),
            request_id: text_of(o, "request_id"),
            event: Event::read(o),
        }
    }

    /// Parses one line's text (without its newline).
    pub fn parse(text: &[u8]) -> Logged {
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(o)) => Logged::read(Some(&o)),
            _ => Logged::read(None),
        }
    }
}

impl Event {
    /// The typed form of a line's object.
    pub fn read(o: &Map<String, Value>) -> Event {
        let kind = text_of(o, "event").unwrap_or_default();
        match Body::read(&kind, o) {
            Some(body) => Event::Body(body),
            None => Event::Foreign { event: kind },
        }
    }

    /// The line's `event` field as written ("" when it has none).
    pub fn kind(&self) -> &str {
        match self {
            Event::Body(b) => b.kind(),
            Event::Foreign { event } => event,
            Event::Malformed => "",
        }
    }
}

impl Body {
    /// The body a line of type `kind` carries, if its fields can mean that
    /// type. Defaults are the ones the fold has always used for lines the
    /// bash version wrote (no `stage`, `module` or `ctx_digest` in its
    /// `txn_start`, no `from` in its commit).
    // Long: one arm per event type, each reading its fields; kept whole, as
    // `to_object` is, so a type's reading is in one place.
    fn read(kind: &str, o: &Map<String, Value>) -> Option<Body> {
        let from = || text_or(o, "from", "");
        Some(match kind {
            "txn_start" => Body::Start {
                txn_id: text_or(o, "txn_id", ""),
                description: text_or(o, "description", ""),
                target: text_or(o, "target", crate::DEFAULT_TARGET),
                agent: text_or(o, "agent", crate::DEFAULT_AGENT),
                // Empty: the module the log lives in.
                module: text_or(o, "module", ""),
                stage: text_or(o, "stage", "NEW"),
                ctx_digest: text_or(o, "ctx_digest", ""),
                time: crate::timing::Settings {
                    deadline: text_of(o, "deadline"),
                    on_deadline: o
                        .get("on_deadline")
                        .and_then(Value::as_str)
                        .and_then(|p| OnTimeout::parse(p).ok()),
                    heartbeat_ms: o.get("heartbeat_ms").and_then(Value::as_u64),
                },
            },
            "stage_transition" => Body::Transition {
                from: from(),
                to: text_of(o, "to")?,
                iteration: o.get("iteration").and_then(Value::as_u64),
            },
            "state_updated" => Body::Updated {
                patch: object_of(o, "patch")?,
            },
            "evidence_added" => Body::EvidenceAdded {
                file: text_or(o, "file", ""),
                description: text_or(o, "description", ""),
                bytes: o.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                sha256: text_or(o, "sha256", ""),
                ctx_digest: text_or(o, "ctx_digest", ""),
            },
            "tes_resolved" => Body::TesResolved {
                target: text_or(o, "target", ""),
                plan: text_of(o, "plan")?,
                // Null: none recorded (the bash version wrote none).
                connector: o.get("connector").cloned().unwrap_or(Value::Null),
            },
            "txn_commit" => Body::Commit {
                from: from(),
                duration_ms: o.get("duration_ms").and_then(Value::as_u64).unwrap_or(0),
            },
            "txn_fail" => Body::Fail {
                from: from(),
                error: text_or(o, "error", ""),
            },
            "txn_retry" => Body::Retry {
                to: text_of(o, "to")?,
                iteration: o.get("iteration").and_then(Value::as_u64)?,
            },
            "stage_migrated" => Body::Migrated {
                from: from(),
                to: text_of(o, "to")?,
            },
            "activated" => Body::Activated,
            "state_adopted" => Body::Adopted {
                state: object_of(o, "state")?,
            },
            "lease_requested" => Body::LeaseRequested {
                name: text_of(o, "name")?,
                ticket: o.get("ticket").and_then(Value::as_u64)?,
                ttl_ms: o.get("ttl_ms").and_then(Value::as_u64)?,
            },
            "lease_acquired" => Body::LeaseAcquired {
                name: text_of(o, "name")?,
                token: o.get("token").and_then(Value::as_u64)?,
                ttl_ms: o.get("ttl_ms").and_then(Value::as_u64)?,
            },
            "lease_released" => Body::LeaseReleased {
                name: text_of(o, "name")?,
                token: o.get("token").and_then(Value::as_u64)?,
            },
            "lease_expired" => Body::LeaseExpired {
                name: text_of(o, "name")?,
                token: o.get("token").and_then(Value::as_u64)?,
            },
            super::HOOK_RAN => Body::HookRan {
                hook: text_of(o, "hook")?,
                for_seq: o.get("for_seq").and_then(Value::as_u64)?,
                for_event: text_of(o, "for_event")?,
                outcome: text_of(o, "outcome")?,
                exit_code: o.get("exit_code").and_then(Value::as_i64),
                signal: o.get("signal").and_then(Value::as_i64),
                duration_ms: o.get("duration_ms").and_then(Value::as_u64)?,
                reason: text_or(o, "reason", ""),
            },
            "txn_overdue" => Body::Overdue {
                scope: Scope::parse(&text_of(o, "scope")?)?,
                stage: text_or(o, "stage", ""),
                limit: text_or(o, "limit", ""),
                ran_ms: o.get("ran_ms").and_then(Value::as_u64).unwrap_or(0),
                on_timeout: OnTimeout::parse(&text_of(o, "on_timeout")?).ok()?,
            },
            "txn_stalled" => Body::Stalled {
                period_ms: o.get("period_ms").and_then(Value::as_u64).unwrap_or(0),
                last_life: text_or(o, "last_life", ""),
            },
            "txn_resumed" => Body::Resumed {
                stalled_since: text_or(o, "stalled_since", ""),
                stalled_ms: o.get("stalled_ms").and_then(Value::as_u64).unwrap_or(0),
                by: text_or(o, "by", ""),
            },
            user => {
                validate_user_type(user).ok()?;
                Body::User {
                    event: user.to_string(),
                    data: object_of(o, "data")?,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BUILTIN_TYPES, Meta};

    fn meta(seq: u64) -> Meta {
        Meta {
            ts: "2025-10-17T14:30:22.123Z".into(),
            seq,
            request_id: None,
            client: None,
        }
    }

    #[test]
    fn every_built_in_type_reads_back_as_written() {
        let bodies = [
            Body::Start {
                txn_id: "t-20251017T143022".into(),
                description: "d".into(),
                target: "@x".into(),
                agent: "a".into(),
                module: "m".into(),
                stage: "S".into(),
                ctx_digest: "c".into(),
                time: Default::default(),
            },
            Body::Start {
                txn_id: "t-20251017T143022".into(),
                description: "d".into(),
                target: "@x".into(),
                agent: "a".into(),
                module: "m".into(),
                stage: "S".into(),
                ctx_digest: "c".into(),
                time: crate::timing::Settings {
                    deadline: Some("2026-12-02T06:00:00.000Z".into()),
                    on_deadline: Some(OnTimeout::Fail),
                    heartbeat_ms: Some(300_000),
                },
            },
            Body::Transition {
                from: "NEW".into(),
                to: "FOLD".into(),
                iteration: Some(2),
            },
            Body::Updated { patch: Map::new() },
            Body::EvidenceAdded {
                file: "100_a.txt".into(),
                description: "a".into(),
                bytes: 1,
                sha256: "x".into(),
                ctx_digest: "d".into(),
            },
            Body::TesResolved {
                target: "@x".into(),
                plan: "p".into(),
                connector: serde_json::json!({"type": "local"}),
            },
            Body::Commit {
                from: "NEW".into(),
                duration_ms: 5,
            },
            Body::Fail {
                from: "NEW".into(),
                error: "e".into(),
            },
            Body::Retry {
                to: "NEW".into(),
                iteration: 2,
            },
            Body::Activated,
            Body::Migrated {
                from: "EXECUTE".into(),
                to: "SUBMIT".into(),
            },
            Body::Adopted { state: Map::new() },
            Body::LeaseRequested {
                name: "@prod".into(),
                ticket: 3,
                ttl_ms: 60_000,
            },
            Body::LeaseAcquired {
                name: "@prod".into(),
                token: 4,
                ttl_ms: 60_000,
            },
            Body::LeaseReleased {
                name: "@prod".into(),
                token: 4,
            },
            Body::LeaseExpired {
                name: "db".into(),
                token: 9,
            },
            Body::HookRan {
                hook: "on-commit".into(),
                for_seq: 6,
                for_event: "txn_commit".into(),
                outcome: "exited".into(),
                exit_code: Some(0),
                signal: None,
                duration_ms: 12,
                reason: String::new(),
            },
            Body::HookRan {
                hook: "on-fail".into(),
                for_seq: 3,
                for_event: "txn_fail".into(),
                outcome: "refused".into(),
                exit_code: None,
                signal: None,
                duration_ms: 0,
                reason: "world-writable".into(),
            },
            Body::Overdue {
                scope: Scope::Stage,
                stage: "EXECUTE".into(),
                limit: "30m".into(),
                ran_ms: 1_800_004,
                on_timeout: OnTimeout::Fail,
            },
            Body::Overdue {
                scope: Scope::Deadline,
                stage: "NEW".into(),
                limit: "2026-12-02T06:00:00.000Z".into(),
                ran_ms: 1,
                on_timeout: OnTimeout::Note,
            },
            Body::Stalled {
                period_ms: 5000,
                last_life: "2025-10-17T14:30:22.123Z".into(),
            },
            Body::Resumed {
                stalled_since: "2025-10-17T14:30:22.123Z".into(),
                stalled_ms: 3,
                by: "heartbeat".into(),
            },
            Body::User {
                event: "progress".into(),
                data: Map::new(),
            },
        ];
        let mut seen: Vec<&str> = Vec::new();
        for body in &bodies {
            let line = body.to_line(&meta(7));
            let back = Logged::parse(line.trim_end().as_bytes());
            assert_eq!(back.event, Event::Body(body.clone()), "{line}");
            assert_eq!(back.ts.as_deref(), Some("2025-10-17T14:30:22.123Z"));
            seen.push(body.kind());
        }
        for kind in BUILTIN_TYPES {
            assert!(seen.contains(kind), "{kind} has no body here");
        }
    }

    #[test]
    fn foreign_and_malformed_lines() {
        let read = |t: &str| Logged::parse(t.as_bytes()).event;
        assert_eq!(read("[1]"), Event::Malformed);
        assert_eq!(read("{"), Event::Malformed);
        let foreign = |e: &str| Event::Foreign { event: e.into() };
        assert_eq!(
            read(r#"{"event":"stage_transition"}"#),
            foreign("stage_transition")
        );
        assert_eq!(read(r#"{"event":"deploy","host":"x"}"#), foreign("deploy"));
        assert_eq!(read(r#"{"msg":"hi"}"#), foreign(""));
        // The bash version's commit: no `from`, still a commit.
        assert_eq!(
            read(r#"{"ts":"t","event":"txn_commit","duration_ms":3}"#),
            Event::Body(Body::Commit {
                from: String::new(),
                duration_ms: 3
            })
        );
    }
}
