//! Reading a finished transaction without loading it: start-up and memory
//! do not grow with the history.

use std::path::Path;

use serde_json::{Map, Value};

use super::open::dir_name;
use super::{EVENTS_FILE, STATE_FILE};
use crate::core::event::{Event, Logged};
use crate::core::fsm::{DONE, FAIL};
use crate::core::state::State;
use crate::core::summary::Summary;
use crate::store::fsio;

/// A finished transaction read without loading it: its summary and the
/// request id its creation carried. Only a transaction whose files agree is
/// trusted this way: `state.json` parses and is DONE or FAIL, the log ends in
/// a newline, has exactly `seq` lines, and its last line — but for hook
/// outcomes after it (annotations) — is the commit or failure that made
/// that stage. Anything else (live, torn, stale, edited,
/// foreign lines last) gives `None`, and the caller loads it fully, which
/// recovers it.
pub fn probe_finished(dir: &Path) -> Option<(Summary, Option<String>)> {
    let state: State =
        serde_json::from_slice(&fsio::read_file(&dir.join(STATE_FILE)).ok()?).ok()?;
    if !matches!(state.stage.as_str(), DONE | FAIL) || state.txn_id != dir_name(dir) {
        // Live, or a copy under another name: loaded (and adopted) fully.
        return None;
    }
    let log = fsio::read_file(&dir.join(EVENTS_FILE)).ok()?;
    let body = log.strip_suffix(b"\n")?;
    let lines = log.iter().filter(|&&b| b == b'\n').count() as u64;
    if lines != state.seq {
        return None;
    }
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last: Map<String, Value> = serde_json::from_slice(&body[last_start..]).ok()?;
    if last.get("seq").and_then(Value::as_u64) != Some(state.seq) {
        return None;
    }
    // Hooks' outcomes may follow the commit or failure (annotations): the
    // last line that is not one must be it.
    let (mut start, mut line) = (last_start, last);
    loop {
        match Logged::read(Some(&line)).event {
            Event::Body(b) if b.is_annotation() => {}
            event if made_stage(&event, &state.stage) => break,
            _ => return None,
        }
        let end = start.checked_sub(1)?; // the previous line's newline
        start = body[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        line = serde_json::from_slice(&body[start..end]).ok()?;
    }
    let first = &body[..body.iter().position(|&b| b == b'\n').unwrap_or(body.len())];
    // Its initial ctx files were synced after the creation's answer: a
    // crash may have lost them, which a full load rebuilds.
    if !super::initial::initial_sizes_match(&dir.join(super::CTX_DIR), first) {
        return None;
    }
    // Most creations carry no request id: parse the first line only if it
    // can hold one.
    let create_request = if first.windows(12).any(|w| w == b"\"request_id\"") {
        let first = Logged::parse(first);
        if first.event == Event::Malformed {
            return None;
        }
        first.request_id
    } else {
        None
    };
    Some((Summary::of(&state), create_request))
}

/// Whether `event` is the commit or failure that ends a log in `stage`.
fn made_stage(event: &Event, stage: &str) -> bool {
    // Anything else last (a transition into DONE by hand, a foreign line)
    // is not trusted without a full load.
    matches!(event, Event::Body(body) if body.final_stage() == Some(stage))
}
