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

#[cfg(test)]
mod tests;
