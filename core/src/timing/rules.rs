//! The time rules: given a transaction's folded state, its module's FSM and
//! what the daemon knows beyond the log ([`Watch`]), what is due now and
//! when the next thing falls due. Each action is due only while the log
//! does not yet record it (the marks in [`super::Timing`]), so applying
//! `due` until it answers `None` appends each action exactly once, however
//! late the daemon comes back.

use chrono::{DateTime, Utc};

use super::{OnTimeout, Scope, format_duration};
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
    let rules = fsm.stage_time(&state.stage);
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
    if let (None, Some(r)) = (&t.stage_overdue, rules)
        && let (Some(after), Some(began)) = (r.after_ms, parse(&t.stage_since.0))
    {
        let limit = format_duration(after);
        let (scope, on_timeout) = (Scope::Stage, r.on_timeout);
        let p = Pending::Overdue {
            scope,
            limit,
            began,
            on_timeout,
        };
        out.push((plus(began, after), p));
    }
    if t.deadline_overdue.is_none()
        && let (Some(d), Some(began)) = (&t.deadline, parse(&state.created))
        && let Some(at) = parse(d)
    {
        let on_timeout = t.on_deadline.unwrap_or_default();
        let (scope, limit) = (Scope::Deadline, d.clone());
        let p = Pending::Overdue {
            scope,
            limit,
            began,
            on_timeout,
        };
        out.push((at, p));
    }
    let logged = parse(&t.life.0);
    let life = logged.max(watch.heard);
    match &t.stalled_since {
        Some(since) => {
            if let (Some(l), Some(s)) = (life, parse(since))
                && l >= s
            {
                let by_heartbeat = watch.heard.is_some_and(|h| Some(h) > logged);
                let stalled_since = since.clone();
                out.push((
                    l,
                    Pending::Resumed {
                        stalled_since,
                        by_heartbeat,
                    },
                ));
            }
        }
        None => {
            let period = t.heartbeat_ms.or(rules.and_then(|r| r.heartbeat_ms));
            if let Some(period_ms) = period {
                let last_life = life.unwrap_or(watch.since);
                let from = last_life.max(watch.since);
                out.push((
                    plus(from, period_ms),
                    Pending::Stalled {
                        period_ms,
                        last_life,
                    },
                ));
            }
        }
    }
    out
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
