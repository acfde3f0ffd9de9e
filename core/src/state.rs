//! `state.json` as a fold of `events.ndjson` (SPEC §3): the log is the truth
//! and the state is derived from it by [`State::apply`], line by line. The
//! same function serves live mutations, start-up recovery and lines other
//! programs appended, so there is one definition of what an event means.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::{Body, Event, Logged};
use super::fsm::{DONE, FAIL, Fsm, is_terminal, validate_stage_name};
use super::lease::{Awaited, Held, Leases};
use super::timing::Timing;

/// Fields the daemon derives; an `update` may not set them.
pub const RESERVED_FIELDS: &[&str] = &[
    "txn_id",
    "stage",
    "iteration",
    "ctx_digest",
    "last_checkpoint",
    "last_error",
    "module",
    "created",
    "seq",
    "leases",
    "timing",
];

/// The content of `state.json`. Field order is the file's key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub txn_id: String,
    pub description: String,
    pub stage: String,
    pub target: String,
    pub iteration: u64,
    pub agent: String,
    pub ctx_digest: Option<String>,
    pub last_checkpoint: String,
    pub last_error: Option<String>,
    pub module: String,
    pub created: String,
    /// The seq of the last event folded in.
    pub seq: u64,
    /// Leases held and awaited (SPEC §13); absent from the file when none.
    #[serde(default, skip_serializing_if = "Leases::is_empty")]
    pub leases: Leases,
    /// Deadline, heartbeat, stalled and overdue marks (SPEC §14); absent
    /// from the file when none.
    #[serde(default, skip_serializing_if = "Timing::is_unset")]
    pub timing: Timing,
    /// User fields merged by `update`, and `tes_plan`/`tes_connector`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The seq of the last event that was not an annotation (in memory
    /// only; see [`State::expects_seq`]).
    #[serde(skip)]
    pub settled: Settled,
}

/// The seq of the last line that was not an annotation, folded from the
/// log and kept in memory only (`None`: not known, as for a state read
/// from its file). Equality ignores it, as it does `Timing`'s derived
/// times.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settled(pub Option<u64>);

impl PartialEq for Settled {
    fn eq(&self, _: &Settled) -> bool {
        true
    }
}

/// Why a log cannot be folded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("the log is empty")]
    Empty,
    #[error("line 1 is a {0:?} event, but a log must start with txn_start")]
    NoStart(String),
}

impl State {
    /// The state right after a `txn_start` line (`seq` 1).
    pub fn start(line: &Map<String, Value>, module_hint: &str) -> Result<State, FoldError> {
        State::start_logged(&Logged::read(Some(line)), module_hint)
    }

    /// The state right after the first line, which must be a `txn_start`.
    pub fn start_logged(line: &Logged, module_hint: &str) -> Result<State, FoldError> {
        let Event::Body(Body::Start {
            txn_id,
            description,
            target,
            agent,
            module,
            stage,
            ctx_digest,
            time,
        }) = &line.event
        else {
            return Err(FoldError::NoStart(line.event.kind().to_string()));
        };
        let ts = line.ts.clone().unwrap_or_default();
        let timing = Timing::start(time, &ts);
        Ok(State {
            txn_id: txn_id.clone(),
            description: description.clone(),
            stage: stage.clone(),
            target: target.clone(),
            iteration: 1,
            agent: agent.clone(),
            ctx_digest: Some(ctx_digest.clone()).filter(|d| !d.is_empty()),
            last_checkpoint: ts.clone(),
            last_error: None,
            module: if module.is_empty() {
                module_hint.to_string()
            } else {
                module.clone()
            },
            created: ts,
            seq: 1,
            leases: Leases::default(),
            timing,
            extra: Map::new(),
            settled: Settled(Some(1)),
        })
    }

    /// Whether an `expect_seq` of `want` holds (SPEC §5 compare-and-set):
    /// `want` is the current seq, or only annotations (a hook's outcome)
    /// were logged after it — the daemon's notes do not make a script's
    /// read of the seq stale.
    pub fn expects_seq(&self, want: u64) -> bool {
        want == self.seq
            || self
                .settled
                .0
                .is_some_and(|s| s <= want && want <= self.seq)
    }

    /// Folds one line's object (the event at `seq`) into the state; see
    /// [`State::apply_logged`].
    pub fn apply(&mut self, seq: u64, line: &Map<String, Value>) {
        self.apply_logged(seq, &Logged::read(Some(line)));
    }

    /// Folds one line (the event at `seq`) into the state. Foreign and
    /// malformed lines change nothing but `seq` and the checkpoint, so lines
    /// appended by other programs can never break the fold.
    pub fn apply_logged(&mut self, seq: u64, line: &Logged) {
        self.apply_checked(seq, line, None);
    }

    /// Why the fold refuses what `line` does to the stage, judged against
    /// the state before it: a final transaction stays final (only a
    /// `txn_retry` leaves FAIL), a stage must be a well-formed name, and,
    /// given the module's FSM (for lines other programs wrote), one it
    /// knows. `None`: the line is folded as written. The daemon's own lines
    /// never meet a refusal: `admit` checked them before they were written.
    pub fn refusal(&self, line: &Logged, fsm: Option<&Fsm>) -> Option<String> {
        let Event::Body(body) = &line.event else {
            return None;
        };
        let to = match body {
            Body::Transition { to, .. } | Body::Retry { to, .. } => to.as_str(),
            Body::Commit { .. } => DONE,
            Body::Fail { .. } => FAIL,
            _ => return None,
        };
        let kind = body.kind();
        let retry = matches!(body, Body::Retry { .. });
        // A move to DONE/FAIL is logged as its stage_transition, then the
        // txn_commit/txn_fail that completes it (duration, error): the
        // second line finds the stage already final and changes no stage.
        let completes = matches!(body, Body::Commit { .. } | Body::Fail { .. }) && self.stage == to;
        if self.is_terminal() && !(retry && self.stage == FAIL) && !completes {
            return Some(format!(
                "a {kind} to {to} would reopen or change a {} transaction, which is final",
                self.stage
            ));
        }
        if retry && self.stage != FAIL {
            return Some(format!(
                "a {kind} applies only to a FAIL transaction, not {}",
                self.stage
            ));
        }
        if validate_stage_name(to).is_err() || (retry && is_terminal(to)) {
            return Some(format!("{to:?} is not a stage a {kind} can move to"));
        }
        if let Some(fsm) = fsm.filter(|f| !f.knows(to)) {
            return Some(format!(
                "{to} is not a stage of this module (stages: {}, DONE, FAIL)",
                fsm.stages().join(", ")
            ));
        }
        None
    }

    /// Folds one line, unless [`State::refusal`] refuses what it does to
    /// the stage: then only its `seq` and time are taken. Returns the
    /// refusal.
    pub fn apply_checked(&mut self, seq: u64, line: &Logged, fsm: Option<&Fsm>) -> Option<String> {
        let refused = self.refusal(line, fsm);
        self.seq = seq;
        // An annotation (a hook's outcome) is the daemon's note, not the
        // script's progress: the time of the last checkpoint stays, so a
        // DONE transaction's checkpoint stays the time of its commit.
        let annotation = matches!(&line.event, Event::Body(b) if b.is_annotation());
        if let (Some(ts), false) = (&line.ts, annotation) {
            self.last_checkpoint = ts.clone();
        }
        if !annotation {
            self.settled = Settled(Some(seq));
        }
        if refused.is_some() {
            return refused;
        }
        self.apply_body(line);
        None
    }

    fn apply_body(&mut self, line: &Logged) {
        let ts = line.ts.as_deref().unwrap_or(&self.last_checkpoint);
        let body = match &line.event {
            Event::Body(b) => Some(b),
            Event::Foreign { .. } | Event::Malformed => None,
        };
        self.timing.apply(body, ts);
        let Some(body) = body else {
            // Foreign or malformed: kept in the log, no meaning to fold.
            return;
        };
        match body {
            Body::Transition { to, iteration, .. } => {
                self.stage = to.clone();
                if let Some(i) = iteration {
                    self.iteration = *i;
                }
            }
            // A finished transaction holds and awaits nothing.
            Body::Commit { .. } => {
                self.stage = DONE.into();
                self.leases = Leases::default();
            }
            Body::Migrated { to, .. } => self.stage = to.clone(),
            Body::Fail { error, .. } => {
                self.stage = FAIL.into();
                self.leases = Leases::default();
                self.last_error = Some(error.clone());
            }
            Body::Retry { to, iteration } => {
                self.stage = to.clone();
                self.iteration = *iteration;
                self.last_error = None;
            }
            Body::Updated { patch } => self.merge(patch, false),
            Body::EvidenceAdded { ctx_digest, .. } => {
                if !ctx_digest.is_empty() {
                    self.ctx_digest = Some(ctx_digest.clone());
                }
            }
            Body::TesResolved {
                plan, connector, ..
            } => {
                self.extra.insert("tes_plan".into(), plan.as_str().into());
                if !connector.is_null() {
                    self.extra.insert("tes_connector".into(), connector.clone());
                }
            }
            Body::Adopted { state } => self.merge(state, true),
            Body::LeaseRequested { .. }
            | Body::LeaseAcquired { .. }
            | Body::LeaseReleased { .. }
            | Body::LeaseExpired { .. } => self.apply_lease(body, line.ts.as_deref()),
            // A second txn_start, an activation, a user event: recorded,
            // and nothing of the state derives from them.
            Body::Start { .. } | Body::Activated | Body::HookRan { .. } | Body::User { .. } => {}
            // Time marks: folded into `timing` above.
            Body::Overdue { .. } | Body::Stalled { .. } | Body::Resumed { .. } => {}
        }
    }

    /// Folds a `lease_*` event into the leases held and awaited.
    fn apply_lease(&mut self, body: &Body, ts: Option<&str>) {
        let since = ts.unwrap_or_default().to_string();
        let l = &mut self.leases;
        match body {
            Body::LeaseRequested {
                name,
                ticket,
                ttl_ms,
            } => {
                let a = Awaited {
                    ticket: *ticket,
                    ttl_ms: *ttl_ms,
                    since,
                };
                l.awaited.insert(name.clone(), a);
            }
            Body::LeaseAcquired {
                name,
                token,
                ttl_ms,
            } => {
                l.awaited.remove(name);
                let h = Held {
                    token: *token,
                    ttl_ms: *ttl_ms,
                    since,
                };
                l.held.insert(name.clone(), h);
            }
            Body::LeaseReleased { name, token } | Body::LeaseExpired { name, token } => {
                if *token == 0 {
                    l.awaited.remove(name);
                } else if l.held.get(name).is_some_and(|h| h.token == *token) {
                    l.held.remove(name);
                }
            }
            _ => {}
        }
    }

    /// Sets top-level keys. `adopt` also takes the derived fields (used for a
    /// state.json the bash version wrote, and for the new id of a copied
    /// transaction); `seq` and `module` always stay.
    fn merge(&mut self, patch: &Map<String, Value>, adopt: bool) {
        for (k, v) in patch {
            match k.as_str() {
                "description" => set_text(&mut self.description, v),
                "target" => set_text(&mut self.target, v),
                "agent" => set_text(&mut self.agent, v),
                // A copied directory takes its directory's name (SPEC §8).
                "txn_id" if adopt => set_text(&mut self.txn_id, v),
                "seq" | "module" | "txn_id" => {}
                // A final transaction stays final, and a stage is a name.
                "stage" if adopt && !self.is_terminal() => {
                    if v.as_str().is_some_and(|s| validate_stage_name(s).is_ok()) {
                        set_text(&mut self.stage, v);
                    }
                }
                "iteration" if adopt => {
                    if let Some(i) = v.as_u64() {
                        self.iteration = i;
                    }
                }
                "ctx_digest" if adopt => self.ctx_digest = v.as_str().map(str::to_string),
                "last_error" if adopt => self.last_error = v.as_str().map(str::to_string),
                "created" if adopt => set_text(&mut self.created, v),
                "last_checkpoint" => {}
                k if RESERVED_FIELDS.contains(&k) => {}
                _ => {
                    self.extra.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// The state as `state.json` holds it: pretty, stable key order,
    /// newline at the end.
    pub fn to_pretty_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }

    /// Refuses `body` if the state it leaves would be larger than `limit`
    /// bytes (`limits.state`), since replies carry the state; a change that
    /// makes an oversized state (from before the limit) smaller is let
    /// through, so it can be shrunk. A user event is answered without the
    /// state and changes only its seq.
    pub fn check_size(&self, body: &Body, limit: usize) -> Result<(), crate::Error> {
        let grows = match body {
            Body::User { .. } => return Ok(()),
            Body::Updated { .. } | Body::Fail { .. } => true,
            _ => false,
        };
        // Only user fields and error texts grow a state, so only those
        // changes pay for a trial fold.
        let size = if grows {
            let mut next = self.clone();
            let line = Logged {
                ts: Some(self.last_checkpoint.clone()),
                request_id: None,
                event: Event::Body(body.clone()),
            };
            next.apply_logged(self.seq + 1, &line);
            next.to_pretty_json().len()
        } else {
            self.to_pretty_json().len()
        };
        if size <= limit {
            return Ok(());
        }
        let now = self.to_pretty_json().len();
        if grows && size < now {
            return Ok(());
        }
        Err(crate::Error::StateTooLarge(if now > limit {
            format!(
                "the state.json of {} is {now} bytes, over the limit of {limit} bytes \
                 (limits.state in ttmd.toml), so no change that keeps it so large is \
                 taken; nothing was written. Shrink it first: set its large keys to null \
                 with `ttmctl update` (or raise the limit, keeping it well under 4 MiB)",
                self.txn_id
            )
        } else {
            format!(
                "this change would make the state.json of {} {size} bytes, over the limit \
                 of {limit} bytes (limits.state in ttmd.toml); nothing was written. Keep \
                 large data in ctx files (`ttmctl ctx add`) and put only references in \
                 the state",
                self.txn_id
            )
        }))
    }

    /// Whether the transaction is DONE or FAIL.
    pub fn is_terminal(&self) -> bool {
        super::fsm::is_terminal(&self.stage)
    }
}

fn set_text(field: &mut String, v: &Value) {
    if let Some(s) = v.as_str() {
        *field = s.to_string();
    }
}

/// Folds a whole log: `lines` yields `(seq, object)` in order, starting at
/// the `txn_start` line.
pub fn fold<'a>(
    lines: impl Iterator<Item = (u64, &'a Map<String, Value>)>,
    module_hint: &str,
) -> Result<State, FoldError> {
    fold_logged(
        lines.map(|(seq, o)| (seq, Logged::read(Some(o)))),
        module_hint,
    )
}

/// Folds a whole log of read lines, starting at the `txn_start` line.
pub fn fold_logged<L: std::borrow::Borrow<Logged>>(
    mut lines: impl Iterator<Item = (u64, L)>,
    module_hint: &str,
) -> Result<State, FoldError> {
    let (_, first) = lines.next().ok_or(FoldError::Empty)?;
    let mut state = State::start_logged(first.borrow(), module_hint)?;
    for (seq, line) in lines {
        state.apply_logged(seq, line.borrow());
    }
    Ok(state)
}

/// Milliseconds from `start` (an RFC 3339 time, any precision) to `now`;
/// 0 when `start` cannot be read or lies in the future.
pub fn duration_ms(start: &str, now: DateTime<Utc>) -> u64 {
    DateTime::parse_from_rfc3339(start)
        .ok()
        .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds().max(0) as u64)
        .unwrap_or(0)
}

/// `now` as the log writes it: RFC 3339 UTC with milliseconds.
pub fn timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
