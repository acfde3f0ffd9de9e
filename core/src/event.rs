//! The lines of `events.ndjson` (SPEC §5): what each event type carries, and
//! how a line is laid out. Every line is one JSON object whose first keys are
//! `ts`, `event` and `seq`, in that order, so the log reads well in `tail -f`.

use serde_json::{Map, Value};

use super::id::quote;
use super::{Error, Result};

/// Longest user event type accepted.
pub const EVENT_TYPE_MAX: usize = 64;

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
    /// A FAIL transaction went back to a live stage.
    Retry { to: String, iteration: u64 },
    /// The transaction became its module's active one.
    Activated,
    /// A state.json written by the bash version was taken over as is; its
    /// fields become the base the rest of the log folds onto.
    Adopted { state: Map<String, Value> },
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
            Body::Activated => "activated",
            Body::Adopted { .. } => "state_adopted",
            Body::User { event, .. } => event,
        }
    }

    /// The JSON object of the line, without its trailing newline.
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
            } => {
                put("txn_id", txn_id.as_str().into());
                put("description", description.as_str().into());
                put("target", target.as_str().into());
                put("agent", agent.as_str().into());
                put("module", module.as_str().into());
                put("stage", stage.as_str().into());
                put("ctx_digest", ctx_digest.as_str().into());
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
            Body::Activated => {}
            Body::Adopted { state } => put("state", Value::Object(state.clone())),
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
            "activated" => Body::Activated,
            "state_adopted" => Body::Adopted {
                state: object_of(o, "state")?,
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
mod tests {
    use super::*;

    fn meta(seq: u64) -> Meta {
        Meta {
            ts: "2025-10-17T14:30:22.123Z".into(),
            seq,
            request_id: None,
            client: None,
        }
    }

    #[test]
    fn lines_start_with_ts_event_seq() {
        let line = Body::Transition {
            from: "NEW".into(),
            to: "SELECT".into(),
            iteration: None,
        }
        .to_line(&meta(2));
        assert_eq!(
            line,
            "{\"ts\":\"2025-10-17T14:30:22.123Z\",\"event\":\"stage_transition\",\"seq\":2,\
             \"from\":\"NEW\",\"to\":\"SELECT\"}\n"
        );
    }

    #[test]
    fn hostile_text_stays_on_one_line() {
        let line = Body::Fail {
            from: "NEW".into(),
            error: "a \"b\"\nc\u{0}\u{2028}".into(),
        }
        .to_line(&meta(3));
        assert_eq!(line.matches('\n').count(), 1);
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["error"], "a \"b\"\nc\u{0}\u{2028}");
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
            Body::Adopted { state: Map::new() },
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

    #[test]
    fn user_types() {
        for good in ["progress", "log.line", "a_1"] {
            assert!(validate_user_type(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Progress",
            "1x",
            "_x",
            "a-b",
            "a/b",
            "txn_commit",
            &"a".repeat(65),
        ] {
            assert!(validate_user_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn objects_only() {
        assert!(parse_object("", "patch").unwrap().is_empty());
        assert_eq!(parse_object(r#"{"a":1}"#, "patch").unwrap()["a"], 1);
        for bad in ["[1]", "1", "\"x\"", "null", "{", "{\"a\":}"] {
            let err = parse_object(bad, "patch").unwrap_err();
            assert!(matches!(err, Error::Malformed(_)), "{bad}");
        }
    }
}
