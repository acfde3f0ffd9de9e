//! [`Timing`]: what the time rules read of a transaction, folded from its
//! log with the rest of the state. The settings and the marks (stalled,
//! overdue) are written into `state.json` under `timing` — only when there
//! are some, so other states keep the bash version's bytes. When the
//! current stage visit began and when the transaction last showed life are
//! kept in memory only: the log holds them, and writing them into every
//! view would change every state.json.

use serde::{Deserialize, Serialize};

use super::{OnTimeout, Scope, Settings};
use crate::event::Body;

/// A `txn_overdue` folded: when, which limit, and the policy it carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// `ts` of the `txn_overdue` line.
    pub at: String,
    /// The limit as the event names it (`30m`, or the deadline's time).
    pub limit: String,
    pub on_timeout: OnTimeout,
}

/// The time facts of a transaction (SPEC §14).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// RFC 3339 UTC time it must be finished by (`--deadline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// What passing the deadline does; absent means note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_deadline: Option<OnTimeout>,
    /// Longest silence allowed (`--heartbeat`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// When `txn_stalled` was logged; cleared by `txn_resumed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<String>,
    /// The current stage visit ran past its timeout; cleared by a change
    /// of stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_overdue: Option<Mark>,
    /// The transaction ran past its deadline (once per transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_overdue: Option<Mark>,
    /// `ts` of the line that began the current stage visit.
    #[serde(skip)]
    pub stage_since: Derived,
    /// `ts` of the last line that was a sign of life.
    #[serde(skip)]
    pub life: Derived,
}

/// A time folded from the log and kept in memory only. `state.json` cannot
/// carry it, so two states never differ by it: equality ignores it, and a
/// state read back from its file equals the fold it was written from.
#[derive(Debug, Clone, Default)]
pub struct Derived(pub String);

impl PartialEq for Derived {
    fn eq(&self, _: &Derived) -> bool {
        true
    }
}

impl Timing {
    /// Whether `state.json` gets no `timing` key.
    pub fn is_unset(&self) -> bool {
        self.deadline.is_none()
            && self.on_deadline.is_none()
            && self.heartbeat_ms.is_none()
            && self.stalled_since.is_none()
            && self.stage_overdue.is_none()
            && self.deadline_overdue.is_none()
    }

    /// The timing of a transaction just started at `ts`.
    pub fn start(settings: &Settings, ts: &str) -> Timing {
        Timing {
            deadline: settings.deadline.clone(),
            on_deadline: settings.on_deadline,
            heartbeat_ms: settings.heartbeat_ms,
            stage_since: Derived(ts.to_string()),
            life: Derived(ts.to_string()),
            ..Timing::default()
        }
    }

    /// Folds one line (`None`: a line that is not one of ours, which
    /// another program wrote: a sign of life all the same).
    pub fn apply(&mut self, body: Option<&Body>, ts: &str) {
        let Some(body) = body else {
            self.life = Derived(ts.to_string());
            return;
        };
        match body {
            Body::Overdue {
                scope,
                limit,
                on_timeout,
                ..
            } => {
                let mark = Some(Mark {
                    at: ts.to_string(),
                    limit: limit.clone(),
                    on_timeout: *on_timeout,
                });
                match scope {
                    Scope::Stage => self.stage_overdue = mark,
                    Scope::Deadline => self.deadline_overdue = mark,
                }
            }
            Body::Stalled { .. } => self.stalled_since = Some(ts.to_string()),
            Body::Resumed { .. } => {
                self.stalled_since = None;
                self.life = Derived(ts.to_string());
            }
            // The daemon's own doings (a lease decision, a hook's outcome),
            // not the script's.
            Body::LeaseAcquired { .. } | Body::LeaseExpired { .. } | Body::HookRan { .. } => {}
            Body::Transition { .. } | Body::Migrated { .. } => self.new_visit(ts),
            Body::Retry { .. } => {
                self.deadline_failed();
                self.new_visit(ts);
            }
            Body::Commit { .. } | Body::Fail { .. } => {
                if matches!(body, Body::Fail { .. }) {
                    self.deadline_failed();
                }
                self.stalled_since = None;
                self.new_visit(ts);
            }
            Body::Start { .. }
            | Body::Updated { .. }
            | Body::EvidenceAdded { .. }
            | Body::TesResolved { .. }
            | Body::Activated
            | Body::Adopted { .. }
            | Body::LeaseRequested { .. }
            | Body::LeaseReleased { .. }
            | Body::User { .. } => self.life = Derived(ts.to_string()),
        }
    }

    /// A failure (or a retry after one) answers a missed deadline: the
    /// mark stays, so the deadline is still reported once per transaction,
    /// but it calls for no further failure — a retried transaction is not
    /// failed again at once for the same deadline.
    fn deadline_failed(&mut self) {
        if let Some(m) = &mut self.deadline_overdue {
            m.on_timeout = OnTimeout::Note;
        }
    }

    fn new_visit(&mut self, ts: &str) {
        self.stage_since = Derived(ts.to_string());
        self.life = Derived(ts.to_string());
        self.stage_overdue = None;
    }
}
