//! Moving transactions an older version left in a stage the module's FSM
//! does not know, or cannot leave, to one they can continue from. The
//! original RAG wrapper stored SUBMIT, APPLY and FOLD as EXECUTE (logging
//! the real stage in `rag_stage` lines); under ttmd's `rag` FSM such a flow
//! could only be committed or failed. `ttmctl migrate` asks [`target`] for
//! each live transaction and logs a `stage_migrated` event for each move.

use super::event::Body;
use super::fsm::{FAIL, Fsm, is_terminal};
use super::state::State;
use super::{Error, Result};

/// The stage the original RAG wrapper wrote for each of these.
const EXECUTE_STOOD_FOR: &[&str] = &["SUBMIT", "APPLY", "FOLD"];

/// Whether a transaction in `stage` is stuck under `fsm`: a live stage
/// whose only `transition` is to FAIL (one an explicit FSM does not know,
/// or lists without edges). An ordered FSM moves on from any stage.
pub fn is_stuck(fsm: &Fsm, stage: &str) -> bool {
    !is_terminal(stage) && fsm.next_stages(stage).iter().all(|s| s == FAIL)
}

/// Where a stuck transaction in `state` continues from: the last stage an
/// older version recorded for it (`recorded`, e.g. the last `rag_stage`
/// line) when the FSM knows it; else, for EXECUTE, the first of the stages
/// the RAG wrapper stored as EXECUTE that the FSM knows; else the FSM's
/// initial stage. `None` when the transaction is not stuck or has nowhere
/// better to go.
pub fn target(fsm: &Fsm, state: &State, recorded: Option<&str>) -> Option<Body> {
    let from = state.stage.as_str();
    if !is_stuck(fsm, from) {
        return None;
    }
    let usable = |s: &&str| fsm.knows(s) && !is_terminal(s) && *s != from && !is_stuck(fsm, s);
    let to = recorded
        .filter(usable)
        .or_else(|| {
            (from == "EXECUTE")
                .then(|| EXECUTE_STOOD_FOR.iter().copied().find(usable))
                .flatten()
        })
        .or_else(|| Some(fsm.initial()).filter(usable))?;
    Some(Body::Migrated {
        from: from.to_string(),
        to: to.to_string(),
    })
}

/// Whether a transaction in `state` admits the migration to `to`.
pub fn check(fsm: &Fsm, state: &State, to: &str) -> Result<()> {
    if !is_stuck(fsm, &state.stage) {
        return Err(Error::Refused(format!(
            "transaction {} is in {}, a stage its module's FSM knows and can leave; move it \
             with `ttmctl transition` instead",
            state.txn_id, state.stage
        )));
    }
    if !fsm.knows(to) || is_terminal(to) || is_stuck(fsm, to) {
        return Err(Error::Refused(format!(
            "cannot migrate transaction {} to {to}: not a stage it can continue from",
            state.txn_id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Meta;

    fn state(stage: &str) -> State {
        let start = Body::Start {
            txn_id: "q-20251018T100000".into(),
            description: "d".into(),
            target: "@local".into(),
            agent: "base".into(),
            module: "rag".into(),
            stage: stage.into(),
            ctx_digest: String::new(),
            time: Default::default(),
        };
        let meta = Meta {
            ts: "2025-10-18T10:00:00.000Z".into(),
            seq: 1,
            request_id: None,
            client: None,
        };
        State::start(&start.to_object(&meta), "rag").unwrap()
    }

    fn to(body: Option<Body>) -> Option<String> {
        match body? {
            Body::Migrated { to, .. } => Some(to),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rag_flow_left_in_execute_continues_where_it_was() {
        let rag = crate::fsm::builtin("rag").unwrap();
        let s = state("EXECUTE");
        assert!(is_stuck(&rag, "EXECUTE"));
        assert_eq!(
            to(target(&rag, &s, Some("APPLY"))).as_deref(),
            Some("APPLY")
        );
        assert_eq!(to(target(&rag, &s, None)).as_deref(), Some("SUBMIT"));
        assert_eq!(
            to(target(&rag, &s, Some("BOGUS"))).as_deref(),
            Some("SUBMIT")
        );
        assert!(check(&rag, &s, "SUBMIT").is_ok());
        assert!(check(&rag, &s, "DONE").is_err());
    }

    #[test]
    fn known_stages_and_finished_transactions_stay() {
        let rag = crate::fsm::builtin("rag").unwrap();
        for stage in ["SUBMIT", "NEW", "DONE", "FAIL"] {
            assert_eq!(target(&rag, &state(stage), None), None, "{stage}");
        }
        assert!(check(&rag, &state("SUBMIT"), "APPLY").is_err());
        // An ordered FSM moves on from a stage it does not list.
        let fsm = Fsm::default();
        assert_eq!(target(&fsm, &state("LEGACY"), None), None);
        let strict =
            Fsm::from_json(r#"{"stages": ["NEW", "GO"], "transitions": {"NEW": ["GO"]}}"#).unwrap();
        assert_eq!(
            to(target(&strict, &state("LEGACY"), None)).as_deref(),
            Some("NEW")
        );
        assert!(is_stuck(&strict, "GO"));
    }
}
