//! The time rules: given a transaction's folded state, its module's FSM and
//! what the daemon knows beyond the log ([`Watch`]), what is due now and
//! when the next thing falls due. Each action is due only while the log
//! does not yet record it (the marks in [`super::Timing`]), so applying
//! `due` until it answers `None` appends each action exactly once, however
//! late the daemon comes back.

use chrono::{DateTime, Utc};

use super::{OnTimeout, Scope, StageTime, format_duration};
use crate::event::Body;
use crate::fsm::Fsm;
use crate::state::{State, timestamp};

/// What the daemon knows that the log does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// When this daemon started watching: silence is counted from here at
    /// the earliest, so a restart does not report every transaction that
    /// was quiet while no daemon listened as stalled at once.
    pub since: DateTime<Utc>,
    /// The last `ttmctl heartbeat` heard (kept in memory, not logged).
    pub heard: Option<DateTime<Utc>>,
}

/// One action the rules may call for, and when.
enum Pending {
    Overdue {
        scope: Scope,
        limit: String,
        began: DateTime<Utc>,
        on_timeout: OnTimeout,
    },
    Fail(String),
    Resumed {
        stalled_since: String,
        by_heartbeat: bool,
    },
    Stalled {
        period_ms: u64,
        last_life: DateTime<Utc>,
    },
}

fn parse(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn plus(t: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    t.checked_add_signed(chrono::Duration::milliseconds(ms))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Every action still open for `state`, each with the time it falls due,
/// in the order they are taken when several are due at once: a failure a
/// recorded overrun calls for first (nothing else matters then), the
/// overruns, then the return of life, then a new silence.
fn pending(state: &State, fsm: &Fsm, watch: Watch) -> Vec<(DateTime<Utc>, Pending)> {
    let mut out = Vec::new();
    if state.is_terminal() {
        return out;
    }
    let t = &state.timing;
    for (mark, scope) in [
        (&t.stage_overdue, Scope::Stage),
        (&t.deadline_overdue, Scope::Deadline),
    ] {
        if let Some(m) = mark.as_ref().filter(|m| m.on_timeout == OnTimeout::Fail) {
            let at = parse(&m.at).unwrap_or(watch.since);
            out.push((at, Pending::Fail(fail_text(scope, &state.stage, &m.limit))));
            return out;
        }
    }
    let rules = fsm.stage_time(&state.stage);
    overruns(state, rules, &mut out);
    life(state, rules, watch, &mut out);
    out
}

/// The stage visit's timeout and the deadline, unless already reported.
fn overruns(state: &State, rules: Option<&StageTime>, out: &mut Vec<(DateTime<Utc>, Pending)>) {
    let t = &state.timing;
    if let (None, Some(r)) = (&t.stage_overdue, rules)
        && let (Some(after), Some(began)) = (r.after_ms, parse(&t.stage_since.0))
    {
        let p = Pending::Overdue {
            scope: Scope::Stage,
            limit: format_duration(after),
            began,
            on_timeout: r.on_timeout,
        };
        out.push((plus(began, after), p));
    }
    if t.deadline_overdue.is_none()
        && let (Some(d), Some(began)) = (&t.deadline, parse(&state.created))
        && let Some(at) = parse(d)
    {
        let p = Pending::Overdue {
            scope: Scope::Deadline,
            limit: d.clone(),
            began,
            on_timeout: t.on_deadline.unwrap_or_default(),
        };
        out.push((at, p));
    }
}

/// A stalled transaction's return of life, or the next silence: the
/// transaction's own heartbeat, else its stage's.
fn life(
    state: &State,
    rules: Option<&StageTime>,
    watch: Watch,
    out: &mut Vec<(DateTime<Utc>, Pending)>,
) {
    let t = &state.timing;
    let period = t.heartbeat_ms.or(rules.and_then(|r| r.heartbeat_ms));
    if t.stalled_since.is_none() && period.is_none() {
        return; // the common case: nothing to watch, nothing parsed
    }
    let logged = parse(&t.life.0);
    let life = logged.max(watch.heard);
    match (&t.stalled_since, period) {
        (Some(since), _) => {
            if let (Some(l), Some(s)) = (life, parse(since))
                && l >= s
            {
                let p = Pending::Resumed {
                    stalled_since: since.clone(),
                    by_heartbeat: watch.heard.is_some_and(|h| Some(h) > logged),
                };
                out.push((l, p));
            }
        }
        (None, Some(period_ms)) => {
            let last_life = life.unwrap_or(watch.since);
            let from = last_life.max(watch.since);
            let p = Pending::Stalled {
                period_ms,
                last_life,
            };
            out.push((plus(from, period_ms), p));
        }
        (None, None) => {}
    }
}

fn fail_text(scope: Scope, stage: &str, limit: &str) -> String {
    match scope {
        Scope::Stage => {
            format!("stage {stage} ran longer than its {limit} timeout (on_timeout: fail)")
        }
        Scope::Deadline => format!(
            "the transaction was not finished by its deadline {limit} (on_deadline: fail); \
             it was in stage {stage}"
        ),
    }
}

/// The first event the time rules call for at `now`, if any. The daemon
/// appends it (through the one mutation path) and asks again, until
/// `None`.
pub fn due(state: &State, fsm: &Fsm, watch: Watch, now: DateTime<Utc>) -> Option<Body> {
    let (_, p) = pending(state, fsm, watch)
        .into_iter()
        .find(|(at, _)| *at <= now)?;
    let ms = |from: DateTime<Utc>| u64::try_from((now - from).num_milliseconds()).unwrap_or(0);
    Some(match p {
        Pending::Overdue {
            scope,
            limit,
            began,
            on_timeout,
        } => Body::Overdue {
            scope,
            stage: state.stage.clone(),
            limit,
            ran_ms: ms(began),
            on_timeout,
        },
        Pending::Fail(error) => Body::Fail {
            from: state.stage.clone(),
            error,
        },
        Pending::Resumed {
            stalled_since,
            by_heartbeat,
        } => Body::Resumed {
            stalled_ms: parse(&stalled_since).map_or(0, ms),
            stalled_since,
            by: if by_heartbeat { "heartbeat" } else { "event" }.into(),
        },
        Pending::Stalled {
            period_ms,
            last_life,
        } => Body::Stalled {
            period_ms,
            last_life: timestamp(last_life),
        },
    })
}

/// When the next action falls due (possibly already past: then at once);
/// `None` when nothing ever will without a change to the transaction.
pub fn next_due(state: &State, fsm: &Fsm, watch: Watch) -> Option<DateTime<Utc>> {
    pending(state, fsm, watch)
        .into_iter()
        .map(|(at, _)| at)
        .min()
}
