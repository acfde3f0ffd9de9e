use super::*;

fn d(txn: &str, event: &str, from: &str, stage: &str, ts: &str) -> Durable {
    Durable {
        module: "m".into(),
        txn_id: txn.into(),
        txn_dir: std::path::PathBuf::new(),
        seq: 1,
        event: event.into(),
        stage: stage.into(),
        from: from.into(),
        ts: ts.into(),
        annotation: false,
    }
}

#[test]
fn events_are_counted_by_name_and_stage_visits_timed() {
    let m = Metrics::default();
    m.count(&d("a", "txn_start", "", "NEW", "2030-01-01T00:00:00.000Z"));
    m.count(&d(
        "a",
        "stage_transition",
        "NEW",
        "EXECUTE",
        "2030-01-01T00:00:10.000Z",
    ));
    m.count(&d(
        "a",
        "txn_stalled",
        "",
        "EXECUTE",
        "2030-01-01T00:00:20.000Z",
    ));
    m.count(&d(
        "a",
        "txn_commit",
        "EXECUTE",
        "DONE",
        "2030-01-01T00:01:10.000Z",
    ));
    let t = m.tally();
    assert_eq!(t.moves.get("m"), Some(&2));
    let stalled = t.events.get(&("m".into(), "txn_stalled".into()));
    assert_eq!(stalled, Some(&1));
    let new = &t.stages[&("m".to_string(), "NEW".to_string())];
    assert_eq!((new.count, new.sum), (1, 10.0));
    let exec = &t.stages[&("m".to_string(), "EXECUTE".to_string())];
    assert_eq!((exec.count, exec.sum), (1, 60.0));
    assert_eq!(t.last_done.get("m"), Some(&1_893_456_070.0));
    assert!(t.entered.is_empty(), "a finished transaction is forgotten");
}

#[test]
fn user_event_types_share_one_label() {
    let m = Metrics::default();
    for (i, kind) in ["progress", "deploy-42", "txn_start", "anything"]
        .iter()
        .enumerate()
    {
        let ts = format!("2030-01-01T00:00:{i:02}.000Z");
        m.count(&d("a", kind, "", "NEW", &ts));
    }
    let t = m.tally();
    let keys: Vec<&str> = t.events.keys().map(|(_, e)| e.as_str()).collect();
    assert_eq!(keys, ["txn_start", "user"]);
    assert_eq!(t.events.get(&("m".into(), "user".into())), Some(&3));
}

#[test]
fn a_transaction_gone_while_live_is_forgotten() {
    let m = Metrics::default();
    m.count(&d("a", "txn_start", "", "NEW", "2030-01-01T00:00:00.000Z"));
    assert_eq!(m.tally().entered.len(), 1);
    m.forget(&("m".into(), "a".into()));
    assert!(m.tally().entered.is_empty());
}
