//! Human-readable renderings (the non-`--json` output). Pure functions from
//! messages to lines, so the formats are unit-tested without a daemon.
//!
//! Two families: the plain formats (`list_table`, `ctx_table`,
//! `status_summary`, `event_line`, `watch_line`), printed when stdout is not
//! a terminal and stable for scripts; and the terminal ones (`*_rich`):
//! tables with relative times, cut to the terminal's width. Both take a
//! [`Palette`], which adds colour or nothing.

use chrono::{DateTime, Utc};
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde_json::{Map, Value};
use ttm_proto::v1::{ChangeKind, ContextFile, Event, TxnState, WatchResponse};

use crate::term::{self, Human, Palette};

/// Fields of an event line shown in their own columns, or hidden: `client`
/// (pid/uid of the writer) is on every event and would drown the rest.
const EVENT_COLUMNS: &[&str] = &["seq", "ts", "event", "client"];

/// `SEQ  TS  EVENT  key=value …` for one event.
#[cfg(test)]
pub fn event_line(event: &Event) -> String {
    event_line_styled(event, Palette::new(false))
}

/// [`event_line`], the event type coloured by `palette`.
pub fn event_line_styled(event: &Event, palette: Palette) -> String {
    let fields = event_fields(event);
    let pad = 16usize.saturating_sub(term::columns(&event.event));
    let line = format!(
        "{:>4}  {}  {}{}  {}",
        event.seq,
        event.ts,
        palette.event(&event.event, event),
        " ".repeat(pad),
        fields
    );
    line.trim_end().to_owned()
}

/// An event's own fields as `key=value …` (without seq, ts, event, client).
pub fn event_fields(event: &Event) -> String {
    match serde_json::from_str::<Value>(&event.json) {
        Ok(Value::Object(map)) => term::clean(&compact_fields(&map)),
        // A malformed line appended by hand: show it as it is.
        _ => term::clean(&event.json),
    }
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
#[cfg(test)]
pub fn watch_line(change: &WatchResponse) -> String {
    watch_line_styled(change, Palette::new(false))
}

/// [`watch_line`], the new stage coloured by `palette`.
pub fn watch_line_styled(change: &WatchResponse, palette: Palette) -> String {
    let to = palette.stage(&change.to);
    let stages = match (change.from.as_str(), change.to.as_str()) {
        ("", "") => String::new(),
        ("", _) => format!("→ {to}"),
        (from, "") => from.to_owned(),
        (from, _) => format!("{from} → {to}"),
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
#[cfg(test)]
pub fn list_table(txns: &[TxnState]) -> Vec<String> {
    list_table_styled(txns, Palette::new(false))
}

/// [`list_table`], stages coloured by `palette` (for `--color always`
/// into a pipe).
pub fn list_table_styled(txns: &[TxnState], palette: Palette) -> Vec<String> {
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
    let format_row = |mark: char, row: &[String; 5], stage: String| {
        let pad = widths[1].saturating_sub(row[1].chars().count());
        let line = format!(
            "{mark} {:<w0$}  {stage}{}  {:>w2$}  {:<w3$}  {}",
            row[0],
            " ".repeat(pad),
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w2 = widths[2],
            w3 = widths[3],
        );
        line.trim_end().to_owned()
    };
    let mut lines = vec![format_row(' ', &header, header[1].clone())];
    for (txn, row) in txns.iter().zip(&rows) {
        let mark = if txn.active { '*' } else { ' ' };
        lines.push(format_row(mark, row, palette.stage(&row[1])));
    }
    lines
}

/// A borderless, aligned table for the terminal: `header` in bold, columns
/// two spaces apart, the columns in `right` aligned right. Cells may hold
/// colour codes (they are not counted as width).
fn grid(palette: Palette, header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> Vec<String> {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(
            header
                .iter()
                .map(|title| palette.bold(title))
                .collect::<Vec<_>>(),
        );
    for row in rows {
        table.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 2 }));
        if right.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect()
}

/// What is left of `width` for a last column after the others (each two
/// spaces apart), never less than `min`.
fn remaining(width: usize, others: &[usize], min: usize) -> usize {
    let used: usize = others.iter().map(|w| w + 2).sum();
    width.saturating_sub(used).max(min)
}

fn column_width<'a>(title: &str, cells: impl Iterator<Item = &'a str>) -> usize {
    cells
        .map(term::columns)
        .chain([term::columns(title)])
        .max()
        .unwrap_or(0)
}

/// The `list` table on a terminal: `*` marks the active transaction, the
/// stage is coloured, the last change is relative ("3 min ago") and the
/// description is cut to what is left of the terminal's width.
pub fn list_rich(txns: &[TxnState], now: DateTime<Utc>, human: &Human) -> Vec<String> {
    let p = human.palette;
    let cells: Vec<[String; 5]> = txns
        .iter()
        .map(|t| {
            [
                t.txn_id.clone(),
                t.stage.clone(),
                t.iteration.to_string(),
                term::one_line(&t.target),
                term::relative(&t.last_checkpoint, now),
            ]
        })
        .collect();
    let titles = ["  ID", "STAGE", "ITER", "TARGET", "UPDATED"];
    let mut widths = Vec::new();
    for (i, title) in titles.iter().enumerate() {
        let extra = if i == 0 { 2 } else { 0 };
        widths.push(column_width(title, cells.iter().map(|c| c[i].as_str())) + extra);
    }
    let description = remaining(human.width, &widths, 12);
    let rows = txns
        .iter()
        .zip(cells)
        .map(|(t, [id, stage, iteration, target, updated])| {
            let id = if t.active {
                p.bold(&format!("* {id}"))
            } else {
                format!("  {id}")
            };
            vec![
                id,
                p.stage(&stage),
                iteration,
                target,
                updated,
                term::truncate(&term::one_line(&t.description), description),
            ]
        })
        .collect();
    grid(
        p,
        &["  ID", "STAGE", "ITER", "TARGET", "UPDATED", "DESCRIPTION"],
        rows,
        &[2],
    )
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

/// `ctx list` on a terminal: name, size, bytes and the evidence variable.
pub fn ctx_rich(files: &[ContextFile], human: &Human) -> Vec<String> {
    let rows = files
        .iter()
        .map(|f| {
            vec![
                term::clean(&f.name),
                term::bytes(f.bytes),
                f.bytes.to_string(),
                if f.evidence_index >= 1 {
                    format!("$e{}", f.evidence_index)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    grid(
        human.palette,
        &["NAME", "SIZE", "BYTES", "VAR"],
        rows,
        &[1, 2],
    )
}

/// The `status` page on a terminal: the state's fields (times relative),
/// the ctx files with their sizes and the digest, and the `recent` events.
pub fn status_rich(
    state: &TxnState,
    files: &[ContextFile],
    digest: &str,
    recent: &[Event],
    now: DateTime<Utc>,
    human: &Human,
) -> Vec<String> {
    let p = human.palette;
    let width = human.width.max(40);
    let mut lines = Vec::new();
    let active = if state.active { "  (active)" } else { "" };
    lines.push(format!("{}{active}", p.bold(&state.txn_id)));
    let mut field = |name: &str, value: String| {
        lines.push(format!("  {}  {value}", p.dim(&format!("{name:<11}"))));
    };
    let value_width = width.saturating_sub(15).max(20);
    field(
        "stage",
        format!("{}  iteration {}", p.stage(&state.stage), state.iteration),
    );
    let mut description = state.description.lines();
    field(
        "description",
        term::truncate(&term::clean(description.next().unwrap_or("")), value_width),
    );
    for line in description.take(4) {
        lines.push(format!(
            "{:15}{}",
            "",
            term::truncate(&term::clean(line), value_width)
        ));
    }
    let mut field = |name: &str, value: String| {
        lines.push(format!("  {}  {value}", p.dim(&format!("{name:<11}"))));
    };
    let plan = serde_json::from_str::<Value>(&state.json)
        .ok()
        .and_then(|v| v.get("tes_plan").and_then(Value::as_str).map(str::to_owned));
    let target = match plan {
        Some(plan) => format!(
            "{} → {}",
            term::one_line(&state.target),
            term::one_line(&plan)
        ),
        None => term::one_line(&state.target),
    };
    field("target", target);
    field("agent", term::one_line(&state.agent));
    field("module", state.module.clone());
    let when = |ts: &str| format!("{}  {}", term::relative(ts, now), p.dim(&format!("({ts})")));
    field("created", when(&state.created));
    field("last change", when(&state.last_checkpoint));
    if !state.last_error.is_empty() {
        field(
            "last error",
            p.red(&term::truncate(
                &term::one_line(&state.last_error),
                value_width,
            )),
        );
    }
    field("seq", state.seq.to_string());
    field("dir", state.dir.clone());

    let total: u64 = files.iter().map(|f| f.bytes).sum();
    lines.push(String::new());
    lines.push(format!(
        "{}  {} file{}, {}",
        p.bold("ctx"),
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        term::bytes(total)
    ));
    lines.push(format!(
        "  {}  {}",
        p.dim(&format!("{:<11}", "digest")),
        if digest.is_empty() { "-" } else { digest }
    ));
    if !files.is_empty() {
        let rows = files
            .iter()
            .map(|f| {
                vec![
                    term::clean(&f.name),
                    term::bytes(f.bytes),
                    if f.evidence_index >= 1 {
                        format!("$e{}", f.evidence_index)
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        let table = grid(p, &["NAME", "SIZE", "VAR"], rows, &[1]);
        lines.extend(table.into_iter().map(|line| format!("  {line}")));
    }

    lines.push(String::new());
    lines.push(p.bold(&format!("last {} events", recent.len())));
    if !recent.is_empty() {
        let whens: Vec<String> = recent.iter().map(|e| term::relative(&e.ts, now)).collect();
        let seqs: Vec<String> = recent.iter().map(|e| e.seq.to_string()).collect();
        let widths = [
            column_width("SEQ", seqs.iter().map(String::as_str)),
            column_width("WHEN", whens.iter().map(String::as_str)),
            column_width("EVENT", recent.iter().map(|e| e.event.as_str())),
        ];
        let details = remaining(width.saturating_sub(2), &widths, 16);
        let rows = recent
            .iter()
            .zip(whens)
            .map(|(e, when)| {
                vec![
                    e.seq.to_string(),
                    when,
                    p.event(&term::clean(&e.event), e),
                    term::truncate(&event_fields(e), details),
                ]
            })
            .collect();
        let table = grid(p, &["SEQ", "WHEN", "EVENT", "DETAILS"], rows, &[0]);
        lines.extend(table.into_iter().map(|line| format!("  {line}")));
    }
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
}
