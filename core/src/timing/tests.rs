//! Table tests of the time rules with a clock passed in: each case folds a
//! log written at given times and asks what is due at given moments.

use chrono::{DateTime, Utc};

use super::*;
use crate::event::{Body, Event, Logged};
use crate::fsm::Fsm;
use crate::state::{State, fold_logged};

const FSM: &str = r#"{
    "stages": ["NEW", "EXECUTE", "VALIDATE"],
    "timeouts": {
        "EXECUTE": {"after": "30m", "on_timeout": "fail"},
        "VALIDATE": {"after": "10m", "on_timeout": "note", "heartbeat": "1m"}
    }
}"#;

fn t(hms: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-12-01T{hms}Z"))
        .unwrap()
        .with_timezone(&Utc)
}

fn start(settings: Settings) -> Body {
    Body::Start {
        txn_id: "backup-20261201T000000".into(),
        description: "backup".into(),
        target: "@local".into(),
        agent: "cron".into(),
        module: "ttm".into(),
        stage: "NEW".into(),
        ctx_digest: String::new(),
        time: settings,
    }
}

fn to(stage: &str) -> Body {
    Body::Transition {
        from: String::new(),
        to: stage.into(),
        iteration: None,
    }
}

fn user() -> Body {
    Body::User {
        event: "progress".into(),
        data: Default::default(),
    }
}

/// Folds `(time, body)` lines.
fn fold(lines: Vec<(&str, Body)>) -> State {
    let logged = lines.into_iter().enumerate().map(|(i, (hms, body))| {
        let line = Logged {
            ts: Some(crate::state::timestamp(t(hms))),
            request_id: None,
            event: Event::Body(body),
        };
        (i as u64 + 1, line)
    });
    fold_logged(logged, "ttm").unwrap()
}

fn watch(since: &str) -> Watch {
    Watch {
        since: t(since),
        heard: None,
    }
}

/// Applies `due` at `now` until nothing is due, as the daemon does, and
/// returns the event types appended.
fn run(state: &mut State, fsm: &Fsm, w: Watch, now: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(body) = due(state, fsm, w, t(now)) {
        out.push(body.kind().to_string());
        for b in crate::admit::lines(body) {
            let line = Logged {
                ts: Some(crate::state::timestamp(t(now))),
                request_id: None,
                event: Event::Body(b),
            };
            state.apply_logged(state.seq + 1, &line);
        }
        assert!(out.len() < 10, "the rules never settle: {out:?}");
    }
    out
}

fn fsm() -> Fsm {
    Fsm::from_json(FSM).unwrap()
}

#[test]
fn a_stage_timeout_fails_once_with_a_clear_error() {
    let fsm = fsm();
    let mut s = fold(vec![
        ("00:00:00", start(Settings::default())),
        ("00:01:00", to("EXECUTE")),
    ]);
    assert_eq!(next_due(&s, &fsm, watch("00:00:00")), Some(t("00:31:00")));
    assert!(run(&mut s, &fsm, watch("00:00:00"), "00:30:59").is_empty());
    let got = run(&mut s, &fsm, watch("00:00:00"), "00:31:00");
    assert_eq!(got, ["txn_overdue", "txn_fail"]);
    assert_eq!(s.stage, "FAIL");
    assert_eq!(
        s.last_error.as_deref(),
        Some("stage EXECUTE ran longer than its 30m timeout (on_timeout: fail)")
    );
    assert!(run(&mut s, &fsm, watch("00:00:00"), "05:00:00").is_empty());
    assert_eq!(next_due(&s, &fsm, watch("00:00:00")), None);
    // A retry into the stage is a new visit, timed afresh.
    s.apply_logged(
        s.seq + 1,
        &Logged {
            ts: Some(crate::state::timestamp(t("06:00:00"))),
            request_id: None,
            event: Event::Body(Body::Retry {
                to: "EXECUTE".into(),
                iteration: 2,
            }),
        },
    );
    assert!(s.timing.stage_overdue.is_none());
    assert_eq!(next_due(&s, &fsm, watch("00:00:00")), Some(t("06:30:00")));
}

#[test]
fn a_deadline_missed_while_down_is_applied_once_at_start_up() {
    let fsm = Fsm::default();
    let settings = Settings {
        deadline: Some("2026-12-01T06:00:00.000Z".into()),
        ..Settings::default()
    };
    let mut s = fold(vec![("00:00:00", start(settings))]);
    // The daemon was down from 01:00 and starts again at 07:00.
    let w = watch("07:00:00");
    assert_eq!(next_due(&s, &fsm, w), Some(t("06:00:00")));
    assert_eq!(run(&mut s, &fsm, w, "07:00:00"), ["txn_overdue"]);
    assert_eq!(s.stage, "NEW", "a deadline notes by default");
    let mark = s.timing.deadline_overdue.clone().unwrap();
    assert_eq!(mark.limit, "2026-12-01T06:00:00.000Z");
    // A second start (the log says it was done) does nothing again.
    assert!(run(&mut s, &fsm, watch("08:00:00"), "08:00:00").is_empty());
}

#[test]
fn the_note_policy_logs_once_and_stays() {
    let fsm = fsm();
    let mut s = fold(vec![
        ("00:00:00", start(Settings::default())),
        ("00:00:00", to("VALIDATE")),
    ]);
    let w = watch("00:00:00");
    // Keep it alive so only the timeout matters.
    s.apply_logged(
        s.seq + 1,
        &Logged {
            ts: Some(crate::state::timestamp(t("00:09:30"))),
            request_id: None,
            event: Event::Body(user()),
        },
    );
    assert_eq!(run(&mut s, &fsm, w, "00:10:00"), ["txn_overdue"]);
    assert_eq!(s.stage, "VALIDATE");
    assert!(run(&mut s, &fsm, w, "00:10:01").is_empty());
}

#[test]
fn a_transition_resets_the_stage_clock() {
    let fsm = Fsm::from_json(
        r#"{"stages":["NEW","EXECUTE"],"transitions":{"NEW":["EXECUTE"],
            "EXECUTE":[{"to":"EXECUTE","iterate":true}]},
            "timeouts":{"EXECUTE":{"after":"30m","on_timeout":"note"}}}"#,
    )
    .unwrap();
    let mut s = fold(vec![
        ("00:00:00", start(Settings::default())),
        ("00:00:00", to("EXECUTE")),
    ]);
    assert_eq!(
        run(&mut s, &fsm, watch("00:00:00"), "00:30:00"),
        ["txn_overdue"]
    );
    // A new visit of the same stage is timed afresh and reported afresh.
    s.apply_logged(
        s.seq + 1,
        &Logged {
            ts: Some(crate::state::timestamp(t("00:40:00"))),
            request_id: None,
            event: Event::Body(to("EXECUTE")),
        },
    );
    assert!(s.timing.stage_overdue.is_none());
    assert_eq!(next_due(&s, &fsm, watch("00:00:00")), Some(t("01:10:00")));
    assert_eq!(
        run(&mut s, &fsm, watch("00:00:00"), "01:10:00"),
        ["txn_overdue"]
    );
}

#[test]
fn heartbeats_renew_and_a_stall_then_resumes() {
    let fsm = Fsm::default();
    let settings = Settings {
        heartbeat_ms: Some(300_000),
        ..Settings::default()
    };
    let mut s = fold(vec![("00:00:00", start(settings)), ("00:04:00", user())]);
    let mut w = watch("00:00:00");
    assert_eq!(next_due(&s, &fsm, w), Some(t("00:09:00")));
    // A heartbeat heard in memory pushes the stall back.
    w.heard = Some(t("00:08:00"));
    assert_eq!(next_due(&s, &fsm, w), Some(t("00:13:00")));
    assert!(run(&mut s, &fsm, w, "00:12:59").is_empty());
    assert_eq!(run(&mut s, &fsm, w, "00:13:00"), ["txn_stalled"]);
    assert_eq!(
        s.timing.stalled_since.as_deref(),
        Some("2026-12-01T00:13:00.000Z")
    );
    // Once per silence.
    assert!(run(&mut s, &fsm, w, "01:00:00").is_empty());
    assert_eq!(next_due(&s, &fsm, w), None);
    // Life returns by a heartbeat: resumed at once, then watched again.
    w.heard = Some(t("01:00:00"));
    assert_eq!(run(&mut s, &fsm, w, "01:00:00"), ["txn_resumed"]);
    assert!(s.timing.stalled_since.is_none());
    assert_eq!(next_due(&s, &fsm, w), Some(t("01:05:00")));
}

#[test]
fn an_event_ends_a_stall_too() {
    let fsm = fsm();
    let mut s = fold(vec![
        ("00:00:00", start(Settings::default())),
        ("00:00:00", to("VALIDATE")),
    ]);
    let w = watch("00:00:00");
    assert_eq!(run(&mut s, &fsm, w, "00:01:00"), ["txn_stalled"]);
    s.apply_logged(
        s.seq + 1,
        &Logged {
            ts: Some(crate::state::timestamp(t("00:02:00"))),
            request_id: None,
            event: Event::Body(user()),
        },
    );
    assert_eq!(run(&mut s, &fsm, w, "00:02:00"), ["txn_resumed"]);
}

#[test]
fn a_restart_does_not_report_a_burst_of_stalls() {
    let fsm = Fsm::default();
    let settings = Settings {
        heartbeat_ms: Some(60_000),
        ..Settings::default()
    };
    let mut s = fold(vec![("00:00:00", start(settings))]);
    // Silent for hours while no daemon ran: silence counts from the start.
    let w = watch("05:00:00");
    assert!(run(&mut s, &fsm, w, "05:00:30").is_empty());
    assert_eq!(run(&mut s, &fsm, w, "05:01:00"), ["txn_stalled"]);
}

#[test]
fn a_deadline_can_fail_by_policy() {
    let fsm = Fsm::default();
    let settings = Settings {
        deadline: Some("2026-12-01T06:00:00.000Z".into()),
        on_deadline: Some(OnTimeout::Fail),
        heartbeat_ms: None,
    };
    let mut s = fold(vec![("00:00:00", start(settings))]);
    assert_eq!(
        run(&mut s, &fsm, watch("00:00:00"), "06:00:00"),
        ["txn_overdue", "txn_fail"]
    );
    assert!(
        s.last_error
            .unwrap()
            .contains("not finished by its deadline")
    );
}

#[test]
fn a_retry_after_a_deadline_fail_has_nothing_due() {
    let fsm = Fsm::default();
    let settings = Settings {
        deadline: Some("2026-12-01T06:00:00.000Z".into()),
        on_deadline: Some(OnTimeout::Fail),
        heartbeat_ms: None,
    };
    let mut s = fold(vec![("00:00:00", start(settings))]);
    let w = watch("00:00:00");
    assert_eq!(
        run(&mut s, &fsm, w, "06:00:00"),
        ["txn_overdue", "txn_fail"]
    );
    // `ttmctl retry`: the deadline already failed the transaction once.
    s.apply_logged(
        s.seq + 1,
        &Logged {
            ts: Some(crate::state::timestamp(t("07:00:00"))),
            request_id: None,
            event: Event::Body(Body::Retry {
                to: "NEW".into(),
                iteration: 2,
            }),
        },
    );
    assert_eq!(s.stage, "NEW");
    assert!(run(&mut s, &fsm, w, "08:00:00").is_empty());
    assert_eq!(next_due(&s, &fsm, w), None);
    let mark = s.timing.deadline_overdue.as_ref();
    assert!(mark.is_some(), "the deadline stays reported, once");
}

#[test]
fn finished_transactions_have_nothing_due() {
    let fsm = fsm();
    let settings = Settings {
        deadline: Some("2026-12-01T00:00:01.000Z".into()),
        on_deadline: None,
        heartbeat_ms: Some(1000),
    };
    let s = fold(vec![
        ("00:00:00", start(settings)),
        ("00:00:00", to("EXECUTE")),
        ("00:00:00", to("DONE")),
        (
            "00:00:00",
            Body::Commit {
                from: "EXECUTE".into(),
                duration_ms: 0,
            },
        ),
    ]);
    assert_eq!(next_due(&s, &fsm, watch("00:00:00")), None);
    assert!(due(&s, &fsm, watch("00:00:00"), t("23:00:00")).is_none());
}

#[test]
fn timing_stays_out_of_state_json_unless_set() {
    let plain = fold(vec![("00:00:00", start(Settings::default()))]);
    assert!(!plain.to_pretty_json().contains("timing"));
    let timed = fold(vec![(
        "00:00:00",
        start(Settings {
            heartbeat_ms: Some(5000),
            ..Settings::default()
        }),
    )]);
    let text = timed.to_pretty_json();
    assert!(text.contains("\"heartbeat_ms\": 5000"), "{text}");
    assert_eq!(serde_json::from_str::<State>(&text).unwrap(), timed);
}

#[test]
fn durations_and_deadlines() {
    assert_eq!(parse_duration_ms("90s"), Ok(90_000));
    assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
    assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
    assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
    assert_eq!(parse_duration_ms("500ms"), Ok(500));
    for bad in ["", "30", "3x", "m", "-1s"] {
        assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_duration(1_800_000), "30m");
    assert_eq!(format_duration(90_000), "1m30s");
    assert_eq!(format_duration(1500), "1s500ms");
    let now = t("22:00:00");
    assert_eq!(
        parse_deadline("2h", now).unwrap(),
        "2026-12-02T00:00:00.000Z"
    );
    assert_eq!(
        parse_deadline("2026-12-02T06:00:00+01:00", now).unwrap(),
        "2026-12-02T05:00:00.000Z"
    );
    let err = parse_deadline("tomorrow", now).unwrap_err();
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn bad_timeouts_are_explained() {
    let cases = [
        (r#""EXECUTE": {"after": "30x"}"#, "timeouts.EXECUTE.after"),
        (r#""EXECUTE": {"after": "0s"}"#, "longer than 0"),
        (
            r#""EXECUTE": {"after": "30m", "on_timeout": "kill"}"#,
            "\"fail\" or \"note\"",
        ),
        (r#""EXECUTE": {}"#, "neither"),
        (r#""EXECUTE": {"on_timeout": "fail"}"#, "no \"after\""),
        (r#""DEPLOY": {"after": "1m"}"#, "not a listed"),
        (r#""DONE": {"after": "1m"}"#, "final"),
        (
            r#""EXECUTE": {"after": "1m", "retries": 3}"#,
            "unknown field",
        ),
    ];
    for (entry, want) in cases {
        let text = format!(r#"{{"stages": ["NEW", "EXECUTE"], "timeouts": {{{entry}}}}}"#);
        let err = Fsm::from_json(&text).unwrap_err();
        assert!(err.contains(want), "{entry}: {err}");
    }
}
