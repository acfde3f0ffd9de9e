//! Time (SPEC §14): stage timeouts, transaction deadlines, heartbeats and
//! stalls, as pure rules. The daemon supplies "now", the moment it started
//! watching, and the last heartbeat it heard; everything else — when a
//! stage visit began, when the transaction last showed life, what was
//! already reported — is folded from the log ([`Timing`]), so "at most
//! once per stage visit" holds across restarts: the log says what was done.
//!
//! - `spec.rs`: durations, deadlines, `fsm.json`'s `"timeouts"`;
//! - `fold.rs`: [`Timing`], the part of the state the time rules read;
//! - `rules.rs`: [`due`] (what to append now) and [`next_due`] (when the
//!   next thing falls due).

mod fold;
mod rules;
mod spec;

pub use fold::{Mark, Timing};
pub use rules::{Watch, due, next_due};
pub use spec::{
    OnTimeout, RawStageTime, Settings, StageTime, Timeouts, format_duration, parse_deadline,
    parse_duration_ms, parse_timeouts,
};

/// What a `txn_overdue` event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The current stage visit ran past the stage's `after` (fsm.json).
    Stage,
    /// The whole transaction ran past its `--deadline`.
    Deadline,
}

impl Scope {
    /// The `scope` field of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Stage => "stage",
            Scope::Deadline => "deadline",
        }
    }

    /// Reads the `scope` field.
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "stage" => Some(Scope::Stage),
            "deadline" => Some(Scope::Deadline),
            _ => None,
        }
    }
}

/// A time event in words, for the watch feed, `status` and `top`; `None`
/// for other events.
pub fn describe(body: &crate::event::Body) -> Option<String> {
    use crate::event::Body;
    Some(match body {
        Body::Overdue {
            scope: Scope::Stage,
            stage,
            limit,
            ran_ms,
            on_timeout,
        } => format!(
            "stage {stage} ran past its {limit} timeout ({} so far; on_timeout: {})",
            format_duration(*ran_ms),
            on_timeout.as_str()
        ),
        Body::Overdue {
            scope: Scope::Deadline,
            stage,
            limit,
            on_timeout,
            ..
        } => format!(
            "deadline {limit} passed in stage {stage} (on_deadline: {})",
            on_timeout.as_str()
        ),
        Body::Stalled {
            period_ms,
            last_life,
        } => format!(
            "stalled: no sign of life for {} (last at {last_life})",
            format_duration(*period_ms)
        ),
        Body::Resumed { stalled_ms, by, .. } => format!(
            "resumed by {by} after {} stalled",
            format_duration(*stalled_ms)
        ),
        _ => return None,
    })
}

/// What is overdue now, in words, and since when (the `overdue` and
/// `overdue_since` of a listed state); `None` when nothing is.
pub fn overdue(t: &Timing, stage: &str) -> Option<(String, String)> {
    if let Some(m) = &t.stage_overdue {
        let words = format!("stage {stage} ran past its {} timeout", m.limit);
        return Some((words, m.at.clone()));
    }
    t.deadline_overdue
        .as_ref()
        .map(|m| (format!("deadline {} passed", m.limit), m.at.clone()))
}

#[cfg(test)]
mod tests;
