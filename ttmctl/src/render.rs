//! Human-readable renderings (the non-`--json` output). Pure functions from
//! messages to lines, so the formats are unit-tested without a daemon.

use serde_json::{Map, Value};
use ttm_proto::v1::{ChangeKind, ContextFile, Event, TxnState, WatchResponse};

/// Fields of an event line shown in their own columns, or hidden: `client`
/// (pid/uid of the writer) is on every event and would drown the rest.
const EVENT_COLUMNS: &[&str] = &["seq", "ts", "event", "client"];

/// `SEQ  TS  EVENT  key=value …` for one event.
pub fn event_line(event: &Event) -> String {
    let fields = match serde_json::from_str::<Value>(&event.json) {
        Ok(Value::Object(map)) => compact_fields(&map),
        // A malformed line appended by hand: show it as it is.
        _ => event.json.clone(),
    };
    let line = format!(
        "{:>4}  {}  {:<16}  {}",
        event.seq, event.ts, event.event, fields
    );
    line.trim_end().to_owned()
}

fn compact_fields(map: &Map<String, Value>) -> String {
    map.iter()
        .filter(|(key, _)| !EVENT_COLUMNS.contains(&key.as_str()))
        .map(|(key, value)| format!("{key}={}", compact_value(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A bare word when it cannot be misread, else JSON (quoted, escaped).
fn compact_value(value: &Value) -> String {
    match value {
        Value::String(text) if is_bare_word(text) => text.clone(),
        other => other.to_string(),
    }
}

fn is_bare_word(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '=' | '\\'))
}

/// `TS  KIND  TXN_ID  FROM → TO` for one change.
pub fn watch_line(change: &WatchResponse) -> String {
    let stages = match (change.from.as_str(), change.to.as_str()) {
        ("", "") => String::new(),
        ("", to) => format!("→ {to}"),
        (from, "") => from.to_owned(),
        (from, to) => format!("{from} → {to}"),
    };
    let line = format!(
        "{}  {:<13}  {}  {}",
        change.ts,
        change_kind(change.kind),
        change.txn_id,
        stages
    );
    line.trim_end().to_owned()
}

/// `created`, `stage_changed`, …: the enum's proto name without its prefix.
pub fn change_kind(kind: i32) -> String {
    match ChangeKind::try_from(kind) {
        Ok(kind) => kind
            .as_str_name()
            .trim_start_matches("CHANGE_KIND_")
            .to_ascii_lowercase(),
        Err(_) => format!("kind_{kind}"),
    }
}

/// The `list` table: a header, then one row per transaction, `*` marking
/// the active one, the description cut to its first line.
pub fn list_table(txns: &[TxnState]) -> Vec<String> {
    if txns.is_empty() {
        return Vec::new();
    }
    let rows: Vec<[String; 5]> = txns
        .iter()
        .map(|txn| {
            [
                txn.txn_id.clone(),
                txn.stage.clone(),
                txn.iteration.to_string(),
                txn.target.clone(),
                txn.description.lines().next().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    let header = ["ID", "STAGE", "ITER", "TARGET", "DESCRIPTION"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_row = |mark: char, row: &[String; 5]| {
        let line = format!(
            "{mark} {:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        line.trim_end().to_owned()
    };
    let mut lines = vec![format_row(' ', &header)];
    for (txn, row) in txns.iter().zip(&rows) {
        lines.push(format_row(if txn.active { '*' } else { ' ' }, row));
    }
    lines
}

/// `ctx list`: name and size in bytes, aligned.
pub fn ctx_table(files: &[ContextFile]) -> Vec<String> {
    let name_width = files
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    let bytes_width = files
        .iter()
        .map(|f| f.bytes.to_string().len())
        .max()
        .unwrap_or(0);
    files
        .iter()
        .map(|f| format!("{:<name_width$}  {:>bytes_width$}", f.name, f.bytes))
        .collect()
}

/// The `status` summary, up to (not including) its events.
pub fn status_summary(state: &TxnState, files: &[ContextFile], digest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut field = |name: &str, value: &str| {
        // Continuation lines of multi-line values stay under the value.
        let value = value.replace('\n', &format!("\n{:13}", ""));
        lines.push(format!("{name:<11}  {value}"));
    };
    let id = if state.active {
        format!("{} (active)", state.txn_id)
    } else {
        state.txn_id.clone()
    };
    field("txn", &id);
    field("module", &state.module);
    field("stage", &state.stage);
    field("description", &state.description);
    field("target", &state.target);
    field("iteration", &state.iteration.to_string());
    field("agent", &state.agent);
    field("created", &state.created);
    field("last change", &state.last_checkpoint);
    if !state.last_error.is_empty() {
        field("last error", &state.last_error);
    }
    field("digest", if digest.is_empty() { "-" } else { digest });
    field("dir", &state.dir);
    lines.push(format!("ctx ({} files)", files.len()));
    lines.extend(ctx_table(files).into_iter().map(|row| format!("  {row}")));
    lines
}

pub fn ctx_file_json(file: &ContextFile) -> Value {
    serde_json::json!({
        "name": file.name,
        "number": file.number,
        "bytes": file.bytes,
        "path": file.path,
        "evidence_index": file.evidence_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
