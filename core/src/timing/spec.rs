//! What the user writes: durations (`90s`, `30m`, `2h`, `1d`), deadlines
//! (a duration from creation or an RFC 3339 time), a transaction's own
//! settings (recorded in its `txn_start`), and `fsm.json`'s `"timeouts"`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happens when a stage visit (or a transaction) runs out of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Log `txn_overdue` and leave the transaction where it is.
    #[default]
    Note,
    /// Log `txn_overdue`, then move the transaction to FAIL.
    Fail,
}

impl OnTimeout {
    /// The policy as written in files and events.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Note => "note",
            OnTimeout::Fail => "fail",
        }
    }

    /// Reads `fail` or `note`; the error says which words are allowed.
    pub fn parse(text: &str) -> Result<OnTimeout, String> {
        match text {
            "note" => Ok(OnTimeout::Note),
            "fail" => Ok(OnTimeout::Fail),
            other => Err(format!("must be \"fail\" or \"note\", not {other:?}")),
        }
    }
}

/// A transaction's own time settings, given at creation and recorded in
/// its `txn_start`, so they survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// RFC 3339 UTC time the transaction must be finished by.
    pub deadline: Option<String>,
    /// What passing the deadline does (default: note).
    pub on_deadline: Option<OnTimeout>,
    /// Longest silence allowed, in milliseconds.
    pub heartbeat_ms: Option<u64>,
}

impl Settings {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Settings::default()
    }
}

/// One stage's entry in `fsm.json`'s `"timeouts"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageTime {
    /// Longest visit of the stage, in milliseconds.
    pub after_ms: Option<u64>,
    /// What a visit longer than `after_ms` does.
    pub on_timeout: OnTimeout,
    /// Longest silence allowed while in the stage, in milliseconds (a
    /// transaction's own `--heartbeat` takes precedence).
    pub heartbeat_ms: Option<u64>,
}

/// Stage name → its time rules.
pub type Timeouts = BTreeMap<String, StageTime>;

/// The on-disk form of one entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStageTime {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    on_timeout: Option<String>,
    #[serde(default)]
    heartbeat: Option<String>,
}

/// Checks `fsm.json`'s `"timeouts"` against the FSM's stages (`known`: a
/// listed non-terminal stage). Errors name the entry and say what to write.
pub fn parse_timeouts(
    raw: BTreeMap<String, RawStageTime>,
    known: impl Fn(&str) -> bool,
) -> Result<Timeouts, String> {
    let mut out = Timeouts::new();
    for (stage, r) in raw {
        if crate::fsm::is_terminal(&stage) {
            return Err(format!(
                "\"timeouts\" names {stage}, which is final: only live stages can time out"
            ));
        }
        if !known(&stage) {
            return Err(format!(
                "\"timeouts\" names {stage}, which is not a listed non-terminal stage"
            ));
        }
        let dur = |what: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            v.as_deref()
                .map(|t| match parse_duration_ms(t) {
                    Ok(0) => Err(format!("timeouts.{stage}.{what} must be longer than 0")),
                    Ok(ms) => Ok(ms),
                    Err(e) => Err(format!("timeouts.{stage}.{what}: {e}")),
                })
                .transpose()
        };
        let after_ms = dur("after", &r.after)?;
        let heartbeat_ms = dur("heartbeat", &r.heartbeat)?;
        let on_timeout = match r.on_timeout.as_deref() {
            None => OnTimeout::Note,
            Some(_) if after_ms.is_none() => {
                return Err(format!(
                    "timeouts.{stage} has \"on_timeout\" but no \"after\" to time out"
                ));
            }
            Some(t) => {
                OnTimeout::parse(t).map_err(|e| format!("timeouts.{stage}.on_timeout {e}"))?
            }
        };
        if after_ms.is_none() && heartbeat_ms.is_none() {
            return Err(format!(
                "timeouts.{stage} sets neither \"after\" nor \"heartbeat\"; write e.g. \
                 {{\"after\": \"30m\", \"on_timeout\": \"fail\"}}"
            ));
        }

        out.insert(
            stage,
            StageTime {
                after_ms,
                on_timeout,
                heartbeat_ms,
            },
        );
    }
    Ok(out)
}

/// `500ms`, `90s`, `30m`, `2h`, `1d` → milliseconds. A unit is required,
/// so `30` cannot be read as seconds by one tool and minutes by another.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a duration like 90s, 30m, 2h or 1d");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Milliseconds as the shortest exact text: `30m`, `90s` → `1m30s`,
/// `1500ms` → `1s500ms`.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// A `--deadline`: a duration from `now` (`2h`) or an RFC 3339 time
/// (`2026-12-02T06:00:00+01:00`), as RFC 3339 UTC. A time already past
/// is taken (the transaction is overdue at once): a nightly job started
/// late must still run, and be reported.
pub fn parse_deadline(text: &str, now: DateTime<Utc>) -> Result<String, String> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(crate::state::timestamp(at.with_timezone(&Utc)));
    }
    let ms = parse_duration_ms(t).map_err(|_| {
        format!(
            "deadline {text:?} is neither a duration (90s, 30m, 2h, 1d) nor an RFC 3339 time \
             (2026-12-02T06:00:00+01:00; `date -d 06:00 --iso-8601=seconds` prints one)"
        )
    })?;
    let ms = i64::try_from(ms).map_err(|_| format!("deadline {text:?} is too far away"))?;
    let at = now
        .checked_add_signed(chrono::Duration::milliseconds(ms))
        .ok_or_else(|| format!("deadline {text:?} is too far away"))?;
    Ok(crate::state::timestamp(at))
}
