use chrono::{DateTime, Utc};
use ttm_proto::v1::{ChangeKind, ContextFile, Event, TxnState, WatchResponse};

use super::*;
use crate::term::{Human, Palette};

fn event(seq: u64, kind: &str, json: &str) -> Event {
    Event {
        seq,
        event: kind.to_owned(),
        ts: "2025-10-17T14:30:22.123Z".to_owned(),
        json: json.to_owned(),
    }
}

#[test]
fn event_line_shows_the_remaining_fields_compactly() {
    let line = event_line(&event(
        3,
        "stage_transition",
        r#"{"ts":"2025-10-17T14:30:22.123Z","event":"stage_transition","seq":3,"from":"NEW","to":"EXECUTE","client":{"pid":1}}"#,
    ));
    assert_eq!(
        line,
        "   3  2025-10-17T14:30:22.123Z  stage_transition  from=NEW to=EXECUTE"
    );
}

#[test]
fn event_line_quotes_text_that_is_not_a_bare_word() {
    let line = event_line(&event(
        1,
        "txn_fail",
        r#"{"error":"disk full","n":2,"data":{"a":[1]},"empty":"","q":"a=b"}"#,
    ));
    assert!(line.ends_with(r#"error="disk full" n=2 data={"a":[1]} empty="" q="a=b""#));
}

#[test]
fn event_line_shows_a_malformed_line_raw() {
    let line = event_line(&event(9, "", "not json"));
    assert!(line.ends_with("not json"));
}

#[test]
fn watch_line_formats_kinds_and_stages() {
    let change = WatchResponse {
        kind: ChangeKind::StageChanged as i32,
        txn_id: "a-1".to_owned(),
        from: "NEW".to_owned(),
        to: "EXECUTE".to_owned(),
        ts: "T".to_owned(),
        ..Default::default()
    };
    assert_eq!(watch_line(&change), "T  stage_changed  a-1  NEW → EXECUTE");
    let created = WatchResponse {
        kind: ChangeKind::Created as i32,
        txn_id: "a-1".to_owned(),
        to: "NEW".to_owned(),
        ts: "T".to_owned(),
        ..Default::default()
    };
    assert_eq!(watch_line(&created), "T  created        a-1  → NEW");
    assert_eq!(change_kind(99), "kind_99");
}

#[test]
fn list_table_aligns_and_marks_the_active_transaction() {
    let txn = |id: &str, stage: &str, active: bool, description: &str| TxnState {
        txn_id: id.to_owned(),
        stage: stage.to_owned(),
        iteration: 1,
        target: "@local".to_owned(),
        description: description.to_owned(),
        active,
        ..Default::default()
    };
    let lines = list_table(&[
        txn("a-1", "NEW", false, "first\nsecond line"),
        txn("bb-22", "EXECUTE", true, "deploy"),
    ]);
    assert_eq!(
        lines,
        [
            "  ID     STAGE    ITER  TARGET  DESCRIPTION",
            "  a-1    NEW         1  @local  first",
            "* bb-22  EXECUTE     1  @local  deploy",
        ]
    );
    assert!(list_table(&[]).is_empty());
}

#[test]
fn ctx_table_aligns_names_and_sizes() {
    let file = |name: &str, bytes: u64| ContextFile {
        name: name.to_owned(),
        bytes,
        ..Default::default()
    };
    assert_eq!(
        ctx_table(&[file("000_policy.md", 5), file("100_artifact.tar.gz", 12345)]),
        ["000_policy.md            5", "100_artifact.tar.gz  12345"]
    );
}

fn fixed_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-10-17T15:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn plain(width: usize) -> Human {
    Human {
        tty: true,
        palette: Palette::new(false),
        width,
    }
}

fn state(id: &str, stage: &str, active: bool, description: &str, changed: &str) -> TxnState {
    TxnState {
        txn_id: id.to_owned(),
        module: "ttm".to_owned(),
        stage: stage.to_owned(),
        iteration: 1,
        target: "@staging".to_owned(),
        agent: "human".to_owned(),
        description: description.to_owned(),
        created: "2025-10-17T14:30:22.000Z".to_owned(),
        last_checkpoint: changed.to_owned(),
        seq: 4,
        active,
        dir: format!("/t/ttm/txns/{id}"),
        ..Default::default()
    }
}

#[test]
fn list_rich_snapshot() {
    let txns = [
        state(
            "deploy-api-20251017T143022",
            "EXECUTE",
            true,
            "Deploy API v2.1.0 to the staging cluster, then run the smoke tests",
            "2025-10-17T14:57:00.000Z",
        ),
        state(
            "backup-20251017T143022",
            "DONE",
            false,
            "Nightly backup",
            "2025-10-17T10:00:00.000Z",
        ),
        state(
            "rollback-20251017T143022",
            "FAIL",
            false,
            "Roll back",
            "2025-10-17T14:59:58.500Z",
        ),
    ];
    let lines = list_rich(&txns, fixed_now(), &plain(90));
    let expected = [
        "  ID                          STAGE    ITER  TARGET    UPDATED    DESCRIPTION",
        "* deploy-api-20251017T143022  EXECUTE     1  @staging  3 min ago  Deploy API v2.1.0 to th…",
        "  backup-20251017T143022      DONE        1  @staging  5 h ago    Nightly backup",
        "  rollback-20251017T143022    FAIL        1  @staging  just now   Roll back",
    ];
    assert_eq!(lines, expected, "\n{}", lines.join("\n"));
    assert!(lines.iter().all(|l| term::columns(l) <= 90));
    // Colour adds codes but no width.
    let coloured = list_rich(
        &txns,
        fixed_now(),
        &Human {
            palette: Palette::new(true),
            ..plain(90)
        },
    );
    assert!(coloured[1].contains("\u{1b}[33"), "{:?}", coloured[1]);
    assert!(coloured[2].contains("\u{1b}[32"), "{:?}", coloured[2]);
    assert!(coloured[3].contains("\u{1b}[31"), "{:?}", coloured[3]);
}

#[test]
fn status_rich_snapshot() {
    let mut txn = state(
        "deploy-api-20251017T143022",
        "EXECUTE",
        true,
        "Deploy API v2.1.0\nsecond line",
        "2025-10-17T14:57:00.000Z",
    );
    txn.last_error = "disk full".to_owned();
    txn.json = r#"{"tes_plan":"staging.local"}"#.to_owned();
    let files = [
        ContextFile {
            name: "000_policy.md".to_owned(),
            bytes: 170,
            ..Default::default()
        },
        ContextFile {
            name: "100_artifact.tar.gz".to_owned(),
            bytes: 3 * 1024 * 1024 / 2,
            evidence_index: 1,
            ..Default::default()
        },
    ];
    let recent = [event(
        4,
        "stage_transition",
        r#"{"from":"NEW","to":"EXECUTE","client":{"pid":1}}"#,
    )];
    let mut recent = recent.to_vec();
    recent[0].ts = "2025-10-17T14:57:00.000Z".to_owned();
    let lines = status_rich(&txn, &files, "ab12", &recent, fixed_now(), &plain(80));
    let expected = [
        "deploy-api-20251017T143022  (active)",
        "  stage        EXECUTE  iteration 1",
        "  description  Deploy API v2.1.0",
        "               second line",
        "  target       @staging → staging.local",
        "  agent        human",
        "  module       ttm",
        "  created      29 min ago  (2025-10-17T14:30:22.000Z)",
        "  last change  3 min ago  (2025-10-17T14:57:00.000Z)",
        "  last error   disk full",
        "  seq          4",
        "  dir          /t/ttm/txns/deploy-api-20251017T143022",
        "",
        "ctx  2 files, 1.50 MiB",
        "  digest       ab12",
        "  NAME                     SIZE  VAR",
        "  000_policy.md           170 B",
        "  100_artifact.tar.gz  1.50 MiB  $e1",
        "",
        "last 1 events",
        "  SEQ  WHEN       EVENT             DETAILS",
        "    4  3 min ago  stage_transition  from=NEW to=EXECUTE",
    ];
    assert_eq!(lines, expected, "\n{}", lines.join("\n"));
}

#[test]
fn time_marks_show_in_list_status_and_watch() {
    let plain = TxnState {
        txn_id: "backup-1".to_owned(),
        stage: "EXECUTE".to_owned(),
        target: "@local".to_owned(),
        ..Default::default()
    };
    let marked = TxnState {
        deadline: "2026-12-02T05:00:00.000Z".to_owned(),
        heartbeat_ms: 300_000,
        stalled_since: "2026-12-02T04:00:00.000Z".to_owned(),
        overdue: "deadline 2026-12-02T05:00:00.000Z passed".to_owned(),
        overdue_since: "2026-12-02T05:00:00.012Z".to_owned(),
        ..plain.clone()
    };
    let table = list_table(&[plain.clone(), marked.clone()]);
    assert!(!table[1].contains("STALLED") && !table[1].contains("OVERDUE"));
    assert!(table[2].contains("@local STALLED OVERDUE"), "{table:?}");
    let status = status_summary(&marked, &[], "");
    let has = |needle: &str| status.iter().any(|l| l.contains(needle));
    assert!(has("deadline     2026-12-02T05:00:00.000Z"), "{status:?}");
    assert!(has("heartbeat    every 5m at least"), "{status:?}");
    assert!(
        has("stalled      since 2026-12-02T04:00:00.000Z"),
        "{status:?}"
    );
    assert!(has(
        "overdue      deadline 2026-12-02T05:00:00.000Z passed (since"
    ));
    assert!(
        status_summary(&plain, &[], "")
            .iter()
            .all(|l| !l.contains("stalled"))
    );
    let change = WatchResponse {
        kind: ChangeKind::Stalled as i32,
        txn_id: "backup-1".to_owned(),
        ts: "T".to_owned(),
        note: "stalled: no sign of life for 5m".to_owned(),
        ..Default::default()
    };
    let line = watch_line(&change);
    assert!(
        line.contains("stalled") && line.ends_with("no sign of life for 5m"),
        "{line}"
    );
}
