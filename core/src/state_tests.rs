//! Tests of the fold (kept apart: state.rs is the rules).

use super::*;
use crate::event::{Body, Meta};
use chrono::TimeZone;

fn obj(body: Body, seq: u64) -> Map<String, Value> {
    body.to_object(&Meta {
        ts: format!("2025-10-17T14:30:{:02}.000Z", seq),
        seq,
        request_id: None,
        client: None,
    })
}

fn start() -> Body {
    Body::Start {
        txn_id: "t-20251017T143022".into(),
        description: "say \"hi\"\nnaïve".into(),
        target: "@staging".into(),
        agent: "cron".into(),
        module: "ttm".into(),
        stage: "NEW".into(),
        ctx_digest: "d0".into(),
        time: Default::default(),
    }
}

fn fold_all(bodies: Vec<Body>) -> State {
    let lines: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| obj(b, i as u64 + 1))
        .collect();
    fold(
        lines.iter().enumerate().map(|(i, l)| (i as u64 + 1, l)),
        "ttm",
    )
    .unwrap()
}

#[test]
fn lifecycle_folds() {
    let s = fold_all(vec![
        start(),
        Body::Transition {
            from: "NEW".into(),
            to: "EXECUTE".into(),
            iteration: None,
        },
        Body::EvidenceAdded {
            file: "100_a.txt".into(),
            description: "a".into(),
            bytes: 1,
            sha256: "x".into(),
            ctx_digest: "d1".into(),
        },
        Body::Updated {
            patch: serde_json::from_str(r#"{"tes_plan":"p","stage":"DONE","k":[1]}"#).unwrap(),
        },
        Body::User {
            event: "progress".into(),
            data: Map::new(),
        },
        Body::Fail {
            from: "EXECUTE".into(),
            error: "boom".into(),
        },
        Body::Retry {
            to: "NEW".into(),
            iteration: 2,
        },
        Body::Commit {
            from: "NEW".into(),
            duration_ms: 5,
        },
    ]);
    assert_eq!(s.description, "say \"hi\"\nnaïve");
    assert_eq!(s.stage, "DONE");
    assert_eq!(s.iteration, 2);
    assert_eq!(s.ctx_digest.as_deref(), Some("d1"));
    assert_eq!(s.last_error, None);
    assert_eq!(s.seq, 8);
    assert_eq!(s.last_checkpoint, "2025-10-17T14:30:08.000Z");
    assert_eq!(s.created, "2025-10-17T14:30:01.000Z");
    assert_eq!(s.extra["tes_plan"], "p");
    assert_eq!(s.extra["k"], serde_json::json!([1]));
    assert!(!s.extra.contains_key("stage"));
}

#[test]
fn failure_is_recorded() {
    let s = fold_all(vec![
        start(),
        Body::Fail {
            from: "NEW".into(),
            error: "disk gone".into(),
        },
    ]);
    assert_eq!(
        (s.stage.as_str(), s.last_error.as_deref()),
        ("FAIL", Some("disk gone"))
    );
}

#[test]
fn state_json_round_trips_with_stable_keys() {
    let s = fold_all(vec![start()]);
    let text = s.to_pretty_json();
    assert!(text.ends_with("}\n"));
    let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&text)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys[..3], ["txn_id", "description", "stage"]);
    assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s);
}

#[test]
fn a_log_must_start_with_txn_start() {
    let line = obj(Body::Activated, 1);
    let err = fold([(1, &line)].into_iter(), "ttm").unwrap_err();
    assert_eq!(err, FoldError::NoStart("activated".into()));
    assert_eq!(
        fold(std::iter::empty(), "ttm").unwrap_err(),
        FoldError::Empty
    );
}

#[test]
fn legacy_lines_fold() {
    // As the bash version wrote them: no seq, second-precision ts.
    let l1: Map<String, Value> = serde_json::from_str(
        r#"{"ts":"2025-10-18T14:30:22Z","event":"txn_start","txn_id":"x-20251018T143022",
            "description":"x","target":"@local","agent":"human"}"#,
    )
    .unwrap();
    let l2: Map<String, Value> = serde_json::from_str(
        r#"{"ts":"2025-10-18T14:30:25Z","event":"stage_transition","from":"NEW","to":"SELECT"}"#,
    )
    .unwrap();
    let s = fold([(1, &l1), (2, &l2)].into_iter(), "ttm").unwrap();
    assert_eq!(
        (s.stage.as_str(), s.seq, s.module.as_str()),
        ("SELECT", 2, "ttm")
    );
    let now = Utc.with_ymd_and_hms(2025, 10, 18, 14, 30, 25).unwrap();
    assert_eq!(duration_ms(&s.created, now), 3000);
}

fn foreign(text: &str) -> Logged {
    Logged::parse(text.as_bytes())
}

#[test]
fn a_final_transaction_stays_final_and_stages_stay_names() {
    let mut s = fold_all(vec![
        start(),
        Body::Commit {
            from: "NEW".into(),
            duration_ms: 1,
        },
    ]);
    let reopen = foreign(r#"{"event":"stage_transition","from":"DONE","to":"NEW"}"#);
    let why = s.apply_checked(3, &reopen, None);
    assert!(why.is_some_and(|w| w.contains("final")));
    assert_eq!((s.stage.as_str(), s.seq), ("DONE", 3));
    let fail = foreign(r#"{"event":"txn_fail","error":"x"}"#);
    assert!(s.apply_checked(4, &fail, None).is_some());
    assert_eq!(s.stage, "DONE");

    let mut live = fold_all(vec![start()]);
    let bogus = foreign(r#"{"event":"stage_transition","from":"NEW","to":"BOGUS STAGE"}"#);
    assert!(live.apply_checked(2, &bogus, None).is_some());
    assert_eq!(live.stage, "NEW");
    let unknown = foreign(r#"{"event":"stage_transition","from":"NEW","to":"ZZZ"}"#);
    assert!(
        live.apply_checked(3, &unknown, Some(&Fsm::default()))
            .is_some()
    );
    assert!(
        live.apply_checked(3, &unknown, None).is_none(),
        "well-formed, no FSM given"
    );
    let retry = foreign(r#"{"event":"txn_retry","to":"NEW","iteration":2}"#);
    assert!(
        live.apply_checked(4, &retry, None).is_some(),
        "retry of a live one"
    );
}

#[test]
fn the_commit_or_failure_after_its_stage_transition_completes_the_move() {
    let mut done = fold_all(vec![start()]);
    let to_done = foreign(r#"{"event":"stage_transition","from":"NEW","to":"DONE"}"#);
    assert!(done.apply_checked(2, &to_done, None).is_none());
    let commit = foreign(r#"{"event":"txn_commit","from":"NEW","duration_ms":5}"#);
    assert_eq!(done.apply_checked(3, &commit, None), None);
    assert_eq!((done.stage.as_str(), done.seq), ("DONE", 3));

    let mut failed = fold_all(vec![start()]);
    let to_fail = foreign(r#"{"event":"stage_transition","from":"NEW","to":"FAIL"}"#);
    assert!(failed.apply_checked(2, &to_fail, None).is_none());
    let fail = foreign(r#"{"event":"txn_fail","from":"NEW","error":"boom"}"#);
    assert_eq!(failed.apply_checked(3, &fail, None), None);
    assert_eq!(failed.last_error.as_deref(), Some("boom"));
    // Completing is not changing: a commit still cannot end a FAIL.
    assert!(failed.apply_checked(4, &commit, None).is_some());
    assert_eq!(failed.stage, "FAIL");
}

#[test]
fn adopting_a_legacy_view_never_reopens_a_final_transaction() {
    let mut s = fold_all(vec![
        start(),
        Body::Commit {
            from: "NEW".into(),
            duration_ms: 1,
        },
    ]);
    let legacy: Map<String, Value> = serde_json::from_str(r#"{"stage":"EXECUTE"}"#).unwrap();
    s.apply_logged(
        3,
        &Logged::read(Some(&obj(Body::Adopted { state: legacy }, 3))),
    );
    assert_eq!(s.stage, "DONE");
}

#[test]
fn expect_seq_holds_across_annotations_only() {
    let hook = || Body::HookRan {
        hook: "on-transition".into(),
        for_seq: 2,
        for_event: "stage_transition".into(),
        outcome: "exited".into(),
        exit_code: Some(0),
        signal: None,
        duration_ms: 5,
        reason: String::new(),
    };
    let to = || Body::Transition {
        from: "NEW".into(),
        to: "EXECUTE".into(),
        iteration: None,
    };
    // A script moved (seq 2) and read seq 2; a hook's outcome then landed.
    let s = fold_all(vec![start(), to(), hook(), hook()]);
    assert_eq!(s.seq, 4);
    assert!(s.expects_seq(2) && s.expects_seq(3) && s.expects_seq(4));
    assert!(!s.expects_seq(1), "a real change after seq 1");
    assert!(!s.expects_seq(5));
    // A state read from its file knows no more than its seq.
    let read: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert!(read.expects_seq(4) && !read.expects_seq(2));
}
