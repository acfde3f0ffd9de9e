//! One event or one watch change as a line.

use serde_json::{Map, Value};
use ttm_proto::v1::{ChangeKind, Event, WatchResponse};

use crate::term::{self, Palette};

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
    if !change.lease.is_empty() {
        let line = format!(
            "{}  {:<13}  {}  {} token {}",
            change.ts,
            change_kind(change.kind),
            change.txn_id,
            change.lease,
            change.token
        );
        return line;
    }
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
    if !change.note.is_empty() {
        // Overdue, stalled, resumed: what happened, on the same line.
        return format!("{}  {}", line.trim_end(), change.note);
    }
    if change.warning.is_empty() {
        return line.trim_end().to_owned();
    }
    // A refused hand edit or foreign line: say what, on the same line.
    format!("{}  ! {}", line.trim_end(), change.warning)
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
