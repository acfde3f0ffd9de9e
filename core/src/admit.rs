//! What a transaction may accept (SPEC §4): the one decision, made for a
//! state and the event that would record a change, under the
//! transaction's lock (the store calls [`admit`] once, in its single
//! mutation path). `DONE` and `FAIL` are final; `retry` is the one way out
//! of `FAIL`; making a finished transaction active again moves only the
//! `active` pointer (ARCHITECTURE.md, "Decisions").

use chrono::{DateTime, Utc};

use super::event::Body;
use super::fsm::{DONE, FAIL, Fsm};
use super::state::{self, State};
use super::{Error, Result};

/// What to do with an admitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Append it.
    Log,
    /// The change is allowed but the log gets nothing: activating a
    /// finished transaction, whose log is final.
    PointerOnly,
}

/// Whether a transaction in `state` may record `body`, and if not why not,
/// in words that name the stage and what is allowed instead.
pub fn admit(fsm: &Fsm, state: &State, body: &Body) -> Result<Admit> {
    match body {
        Body::Transition { to, .. } => fsm.transition(&state.stage, to).map(|_| Admit::Log),
        Body::Retry { to, .. } => fsm.retry_target(&state.stage, Some(to)).map(|_| Admit::Log),
        Body::Migrated { to, .. } => {
            refuse_if_final(state)?;
            super::migrate::check(fsm, state, to).map(|()| Admit::Log)
        }
        Body::Activated if state.is_terminal() => Ok(Admit::PointerOnly),
        // A hook runs after its event is durable, often a commit or a
        // failure: its outcome annotates a finished transaction too, and
        // changes no stage (ARCHITECTURE.md, "Decisions").
        Body::HookRan { .. } => Ok(Admit::Log),
        Body::Activated
        | Body::Commit { .. }
        | Body::Fail { .. }
        | Body::Updated { .. }
        | Body::EvidenceAdded { .. }
        | Body::TesResolved { .. }
        | Body::LeaseRequested { .. }
        | Body::LeaseAcquired { .. }
        | Body::LeaseReleased { .. }
        | Body::LeaseExpired { .. }
        | Body::Overdue { .. }
        | Body::Stalled { .. }
        | Body::Resumed { .. }
        | Body::User { .. } => refuse_if_final(state).map(|()| Admit::Log),
        // Written when the log is made (create) or taken over (recovery),
        // never as a change of a running transaction.
        Body::Start { .. } | Body::Adopted { .. } => Err(Error::Refused(format!(
            "a {} event is written only when a transaction's log begins",
            body.kind()
        ))),
    }
}

/// Refuses any change to a DONE or FAIL transaction.
fn refuse_if_final(state: &State) -> Result<()> {
    if state.is_terminal() {
        return Err(Error::Refused(format!(
            "transaction {} is {}, which is final; no further change is allowed{}",
            state.txn_id,
            state.stage,
            if state.stage == FAIL {
                " (except `retry`)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// The event a `transition` to `to` records: moving to a terminal stage is
/// a commit or a failure, recorded as such so the log has one meaning for
/// each. Refused as [`Fsm::transition`] refuses.
pub fn transition(fsm: &Fsm, s: &State, to: &str, now: DateTime<Utc>) -> Result<Body> {
    let step = fsm.transition(&s.stage, to)?;
    Ok(match to {
        DONE => commit(s, now),
        FAIL => Body::Fail {
            from: s.stage.clone(),
            error: "moved to FAIL by a transition".into(),
        },
        _ => Body::Transition {
            from: s.stage.clone(),
            to: to.to_string(),
            iteration: step.iterate.then_some(s.iteration + 1),
        },
    })
}

/// The lines a change is logged as, in order, the last one being `body`
/// (the one a request id and the reply name). A move to DONE or FAIL is
/// preceded by its `stage_transition`, as the bash version logged it, so
/// `txn_events ID stage_transition | grep '"to":"DONE"'` finds it, while
/// `txn_commit` (with `duration_ms`) and `txn_fail` (with `error`) keep
/// SPEC §5's meaning. The store appends them in one write and one sync.
pub fn lines(body: Body) -> Vec<Body> {
    let terminal = match (body.final_stage(), &body) {
        (Some(to), Body::Commit { from, .. } | Body::Fail { from, .. }) => Some((from.clone(), to)),
        _ => None,
    };
    match terminal {
        Some((from, to)) => vec![
            Body::Transition {
                from,
                to: to.to_string(),
                iteration: None,
            },
            body,
        ],
        None => vec![body],
    }
}

/// The event a `commit` records, with the time since `txn_start`.
pub fn commit(s: &State, now: DateTime<Utc>) -> Body {
    Body::Commit {
        from: s.stage.clone(),
        duration_ms: state::duration_ms(&s.created, now),
    }
}

/// The event a `retry` records: back to `to` (or the initial stage), one
/// iteration more.
pub fn retry(fsm: &Fsm, s: &State, to: Option<&str>) -> Result<Body> {
    Ok(Body::Retry {
        to: fsm.retry_target(&s.stage, to)?,
        iteration: s.iteration + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Meta};
    use serde_json::Map;

    fn state(stage: &str) -> State {
        let start = Body::Start {
            txn_id: "t-20251017T143022".into(),
            description: "d".into(),
            target: "@local".into(),
            agent: "human".into(),
            module: "ttm".into(),
            stage: stage.into(),
            ctx_digest: String::new(),
            time: Default::default(),
        };
        let meta = Meta {
            ts: "2025-10-17T14:30:22.000Z".into(),
            seq: 1,
            request_id: None,
            client: None,
        };
        State::start(&start.to_object(&meta), "ttm").unwrap()
    }

    fn bodies() -> Vec<Body> {
        vec![
            Body::Transition {
                from: "NEW".into(),
                to: "EXECUTE".into(),
                iteration: None,
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
                target: "@local".into(),
                plan: "p".into(),
                connector: serde_json::Value::Null,
            },
            Body::Commit {
                from: "NEW".into(),
                duration_ms: 1,
            },
            Body::Fail {
                from: "NEW".into(),
                error: "e".into(),
            },
            Body::User {
                event: "progress".into(),
                data: Map::new(),
            },
        ]
    }

    #[test]
    fn done_and_fail_are_final() {
        let fsm = Fsm::default();
        for stage in [DONE, FAIL] {
            for body in bodies() {
                let err = admit(&fsm, &state(stage), &body).unwrap_err();
                assert!(err.to_string().contains("final"), "{stage} {body:?}: {err}");
            }
        }
        let on_fail = admit(
            &fsm,
            &state(FAIL),
            &Body::Commit {
                from: FAIL.into(),
                duration_ms: 0,
            },
        );
        assert!(
            on_fail
                .unwrap_err()
                .to_string()
                .contains("(except `retry`)")
        );
    }

    #[test]
    fn a_terminal_move_is_preceded_by_its_stage_transition() {
        let commit = Body::Commit {
            from: "EXECUTE".into(),
            duration_ms: 3,
        };
        let logged = lines(commit.clone());
        assert_eq!(
            logged,
            [
                Body::Transition {
                    from: "EXECUTE".into(),
                    to: DONE.into(),
                    iteration: None
                },
                commit
            ]
        );
        let fail = Body::Fail {
            from: "NEW".into(),
            error: "e".into(),
        };
        assert!(matches!(&lines(fail)[0], Body::Transition { to, .. } if to == FAIL));
        assert_eq!(lines(Body::Activated), [Body::Activated]);
    }

    #[test]
    fn retry_is_the_way_out_of_fail() {
        let fsm = Fsm::default();
        let retry = Body::Retry {
            to: "NEW".into(),
            iteration: 2,
        };
        assert_eq!(admit(&fsm, &state(FAIL), &retry).unwrap(), Admit::Log);
        assert!(admit(&fsm, &state(DONE), &retry).is_err());
        assert!(admit(&fsm, &state("NEW"), &retry).is_err());
    }

    #[test]
    fn a_live_transaction_takes_changes() {
        let fsm = Fsm::default();
        for body in bodies() {
            assert_eq!(
                admit(&fsm, &state("NEW"), &body).unwrap(),
                Admit::Log,
                "{body:?}"
            );
        }
    }

    #[test]
    fn activating_a_finished_transaction_moves_only_the_pointer() {
        let fsm = Fsm::default();
        assert_eq!(
            admit(&fsm, &state(DONE), &Body::Activated).unwrap(),
            Admit::PointerOnly
        );
        assert_eq!(
            admit(&fsm, &state("NEW"), &Body::Activated).unwrap(),
            Admit::Log
        );
    }

    #[test]
    fn a_hook_outcome_annotates_live_and_finished_transactions() {
        let fsm = Fsm::default();
        let ran = Body::HookRan {
            hook: "on-commit".into(),
            for_seq: 4,
            for_event: "txn_commit".into(),
            outcome: "exited".into(),
            exit_code: Some(0),
            signal: None,
            duration_ms: 3,
            reason: String::new(),
        };
        for stage in ["NEW", DONE, FAIL] {
            assert_eq!(admit(&fsm, &state(stage), &ran).unwrap(), Admit::Log);
            let mut s = state(stage);
            let line = crate::event::Logged {
                ts: Some("2030-01-01T00:00:00.000Z".into()),
                request_id: None,
                event: crate::event::Event::Body(ran.clone()),
            };
            s.apply_logged(2, &line);
            // Only the seq moves: the stage and the checkpoint's time stay.
            assert_eq!((s.stage.as_str(), s.seq), (stage, 2));
            assert_eq!(s.last_checkpoint, "2025-10-17T14:30:22.000Z");
        }
    }
}
