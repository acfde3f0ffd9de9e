//! The change feed behind `Watch`: what each logged event means to
//! someone watching a module's list of transactions; and the feed of
//! durable events ([`Durable`]) behind hooks and metrics.

use std::path::PathBuf;

use tokio::sync::broadcast;

use super::Module;
use crate::core::event::{Body, Event};
use crate::store::txn::{EDIT_REFUSED, FOREIGN_REFUSED, Outcome};

/// The events that report a refused hand edit or foreign line: watchers
/// hear them as warnings.
const REFUSALS: &[&str] = &[EDIT_REFUSED, FOREIGN_REFUSED];

/// A change worth telling module watchers about.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `created`, `stage_changed`, `activated`, `committed`, `failed`.
    pub kind: ChangeKind,
    pub txn_id: String,
    /// Stage before (stage changes, commits, failures).
    pub from: String,
    /// Stage after.
    pub to: String,
    pub seq: u64,
    pub ts: String,
    /// For [`ChangeKind::Warning`]: what was refused and why; for the time
    /// kinds (overdue, stalled, resumed): what happened, in words.
    pub warning: String,
    /// For lease changes: the lease's name and token (0 for a queue entry).
    pub lease: Option<(String, u64)>,
}

/// The kinds of [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    StageChanged,
    Activated,
    Committed,
    Failed,
    /// The directory was removed from the tree behind the daemon's back.
    Removed,
    /// The transaction was moved into the module's archive.
    Archived,
    /// A hand edit or foreign line was refused; [`Change::warning`] says
    /// what.
    Warning,
    /// A lease was asked for (the transaction joined its queue).
    LeaseRequested,
    /// A lease was granted.
    LeaseAcquired,
    /// A lease was let go (or a wait given up).
    LeaseReleased,
    /// A lease was lost: its holder was silent past the TTL.
    LeaseExpired,
    /// A stage visit ran past its timeout, or the transaction past its
    /// deadline (SPEC §14).
    Overdue,
    /// The transaction showed no life for its heartbeat period.
    Stalled,
    /// Life returned to a stalled transaction.
    Resumed,
}

impl Change {
    /// (warning, note): the feed carries one text, a refusal for warnings
    /// and what happened for the time kinds; the API has a field for each.
    pub fn texts(&self) -> (String, String) {
        match self.kind {
            ChangeKind::Overdue | ChangeKind::Stalled | ChangeKind::Resumed => {
                (String::new(), self.warning.clone())
            }
            _ => (self.warning.clone(), String::new()),
        }
    }
}

/// An event that is durable in a transaction's log (announced after its
/// sync), for hooks and metrics: told by its type's name, so types added
/// later flow through without a change here.
#[derive(Debug, Clone, PartialEq)]
pub struct Durable {
    pub module: String,
    pub txn_id: String,
    pub txn_dir: PathBuf,
    pub seq: u64,
    /// The event's type (`txn_commit`, a user type, …).
    pub event: String,
    /// The stage after the event.
    pub stage: String,
    /// The stage the event left, for events that change it; else empty.
    pub from: String,
    pub ts: String,
    /// A daemon's annotation (`hook_ran`): runs no hook.
    pub annotation: bool,
}

impl Module {
    /// Hands durable events to `events` (the store's feed) from now on.
    pub(in crate::store) fn feed_events(&self, events: broadcast::Sender<Durable>) {
        let _ = self.events.set(events);
    }

    /// Tells the hooks and metrics that an event is durable.
    pub(in crate::store) fn tell_durable(&self, d: Durable) {
        if let Some(events) = self.events.get() {
            let _ = events.send(d);
        }
    }

    /// Tells the hooks and metrics that transaction `id` began in `stage`:
    /// its `txn_start` (line 1) and, when `activated`, the `activated`
    /// (line 2) creation wrote are durable.
    pub(in crate::store) fn tell_started(&self, id: &str, stage: &str, ts: &str, activated: bool) {
        let lines = [(1, "txn_start")].into_iter();
        for (seq, event) in lines.chain(activated.then_some((2, "activated"))) {
            self.tell_durable(Durable {
                module: self.name.clone(),
                txn_id: id.to_string(),
                txn_dir: self.txns_dir.join(id),
                seq,
                event: event.into(),
                stage: stage.to_string(),
                from: String::new(),
                ts: ts.to_string(),
                annotation: false,
            });
        }
    }

    /// Tells watchers about `change`.
    pub(in crate::store) fn tell(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// Tells watchers what a mutation changed.
    pub fn announce(&self, outcome: &Outcome) {
        if outcome.replayed {
            return;
        }
        let Some(event) = &outcome.event else {
            return; // nothing was logged; the caller says what moved
        };
        if let Event::Body(body) = &event.line.event {
            self.tell_durable(Durable {
                module: self.name.clone(),
                txn_id: outcome.state.txn_id.clone(),
                txn_dir: self.txns_dir.join(&outcome.state.txn_id),
                seq: event.seq,
                event: body.kind().to_string(),
                stage: outcome.state.stage.clone(),
                from: stage_left(body),
                ts: event.line.ts.clone().unwrap_or_default(),
                annotation: body.is_annotation(),
            });
        }
        let Some((kind, from)) = change_of(&event.line.event) else {
            return;
        };
        let warning = match (&kind, &event.line.event) {
            (ChangeKind::Warning, Event::Body(Body::User { event, data })) => {
                let why = data.get("reason").and_then(|r| r.as_str()).unwrap_or("");
                format!("{event}: {why}")
            }
            (_, Event::Body(b)) => crate::core::timing::describe(b).unwrap_or_default(),
            _ => String::new(),
        };
        let lease = match &event.line.event {
            Event::Body(
                Body::LeaseRequested {
                    name, ticket: n, ..
                }
                | Body::LeaseAcquired { name, token: n, .. }
                | Body::LeaseReleased { name, token: n }
                | Body::LeaseExpired { name, token: n },
            ) => Some((name.clone(), *n)),
            _ => None,
        };
        self.tell(Change {
            kind,
            txn_id: outcome.state.txn_id.clone(),
            from,
            to: outcome.state.stage.clone(),
            seq: outcome.state.seq,
            ts: event.line.ts.clone().unwrap_or_default(),
            warning,
            lease,
        });
    }
}

/// The stage an event left, for events that change the stage.
fn stage_left(body: &Body) -> String {
    match body {
        Body::Transition { from, .. }
        | Body::Migrated { from, .. }
        | Body::Commit { from, .. }
        | Body::Fail { from, .. } => from.clone(),
        Body::Retry { .. } => crate::core::fsm::FAIL.to_string(),
        _ => String::new(),
    }
}

/// What watchers hear of an event, and the stage it left; `None` for
/// events that change nothing a module listing shows.
fn change_of(event: &Event) -> Option<(ChangeKind, String)> {
    let Event::Body(body) = event else {
        return None; // foreign lines are the writer's business
    };
    match body {
        Body::Start { .. } => Some((ChangeKind::Created, String::new())),
        Body::Transition { from, .. } | Body::Migrated { from, .. } => {
            Some((ChangeKind::StageChanged, from.clone()))
        }
        // The line names only where it went; the stage it left is FAIL.
        Body::Retry { .. } => Some((ChangeKind::StageChanged, String::new())),
        Body::Activated => Some((ChangeKind::Activated, String::new())),
        Body::Commit { from, .. } => Some((ChangeKind::Committed, from.clone())),
        Body::Fail { from, .. } => Some((ChangeKind::Failed, from.clone())),
        Body::User { event, .. } if REFUSALS.contains(&event.as_str()) => {
            Some((ChangeKind::Warning, String::new()))
        }
        Body::LeaseRequested { .. } => Some((ChangeKind::LeaseRequested, String::new())),
        Body::LeaseAcquired { .. } => Some((ChangeKind::LeaseAcquired, String::new())),
        Body::LeaseReleased { .. } => Some((ChangeKind::LeaseReleased, String::new())),
        Body::LeaseExpired { .. } => Some((ChangeKind::LeaseExpired, String::new())),
        Body::Overdue { .. } => Some((ChangeKind::Overdue, String::new())),
        Body::Stalled { .. } => Some((ChangeKind::Stalled, String::new())),
        Body::Resumed { .. } => Some((ChangeKind::Resumed, String::new())),
        Body::Updated { .. }
        | Body::EvidenceAdded { .. }
        | Body::TesResolved { .. }
        | Body::Adopted { .. }
        | Body::HookRan { .. }
        | Body::User { .. } => None,
    }
}
