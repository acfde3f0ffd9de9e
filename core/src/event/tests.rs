//! Line layout, user event types and JSON objects.

use super::*;

fn meta(seq: u64) -> Meta {
    Meta {
        ts: "2025-10-17T14:30:22.123Z".into(),
        seq,
        request_id: None,
        client: None,
    }
}

#[test]
fn lines_start_with_ts_event_seq() {
    let line = Body::Transition {
        from: "NEW".into(),
        to: "SELECT".into(),
        iteration: None,
    }
    .to_line(&meta(2));
    assert_eq!(
        line,
        "{\"ts\":\"2025-10-17T14:30:22.123Z\",\"event\":\"stage_transition\",\"seq\":2,\
         \"from\":\"NEW\",\"to\":\"SELECT\"}\n"
    );
}

#[test]
fn hostile_text_stays_on_one_line() {
    let line = Body::Fail {
        from: "NEW".into(),
        error: "a \"b\"\nc\u{0}\u{2028}".into(),
    }
    .to_line(&meta(3));
    assert_eq!(line.matches('\n').count(), 1);
    let back: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(back["error"], "a \"b\"\nc\u{0}\u{2028}");
}

#[test]
fn user_types() {
    for good in ["progress", "log.line", "a_1"] {
        assert!(validate_user_type(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "Progress",
        "1x",
        "_x",
        "a-b",
        "a/b",
        "txn_commit",
        &"a".repeat(65),
    ] {
        assert!(validate_user_type(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn objects_only() {
    assert!(parse_object("", "patch").unwrap().is_empty());
    assert_eq!(parse_object(r#"{"a":1}"#, "patch").unwrap()["a"], 1);
    for bad in ["[1]", "1", "\"x\"", "null", "{", "{\"a\":}"] {
        let err = parse_object(bad, "patch").unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{bad}");
    }
}
