//! The `status` page: a plain summary for scripts, a rich page on a terminal.

use chrono::{DateTime, Utc};
use serde_json::Value;
use ttm_proto::v1::{ContextFile, Event, TxnState};

use super::{column_width, ctx_table, event_fields, grid, remaining};
use crate::term::{self, Human, Palette};

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
    let leases = super::list::lease_note(state);
    if !leases.is_empty() {
        field("leases", leases.trim());
    }
    for (name, value) in time_lines(state) {
        field(name, &value);
    }
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
    let width = human.width.max(40);
    let mut page = Page {
        palette: human.palette,
        value_width: width.saturating_sub(15).max(20),
        lines: Vec::new(),
    };
    page.head(state, now);
    page.ctx(files, digest);
    page.events(recent, now, width);
    page.lines
}

/// The rich status page while it is being laid out.
struct Page {
    palette: Palette,
    /// Room for a field's value after its name.
    value_width: usize,
    lines: Vec<String>,
}

impl Page {
    fn field(&mut self, name: &str, value: String) {
        let name = self.palette.dim(&format!("{name:<11}"));
        self.lines.push(format!("  {name}  {value}"));
    }

    /// The id, then one field a line; a long description keeps up to five
    /// lines, each cut to the width.
    fn head(&mut self, state: &TxnState, now: DateTime<Utc>) {
        let p = self.palette;
        let active = if state.active { "  (active)" } else { "" };
        self.lines
            .push(format!("{}{active}", p.bold(&state.txn_id)));
        self.field(
            "stage",
            format!("{}  iteration {}", p.stage(&state.stage), state.iteration),
        );
        let mut description = state.description.lines();
        let first = term::clean(description.next().unwrap_or(""));
        self.field("description", term::truncate(&first, self.value_width));
        for line in description.take(4) {
            let line = term::truncate(&term::clean(line), self.value_width);
            self.lines.push(format!("{:15}{line}", ""));
        }
        self.field("target", target_and_plan(state));
        let leases = super::list::lease_note(state);
        if !leases.is_empty() {
            self.field("leases", leases.trim().to_owned());
        }
        for (name, value) in time_lines(state) {
            let marked = name == "stalled" || name == "overdue";
            self.field(name, if marked { p.red(&value) } else { value });
        }
        self.field("agent", term::one_line(&state.agent));
        self.field("module", state.module.clone());
        let when = |ts: &str| format!("{}  {}", term::relative(ts, now), p.dim(&format!("({ts})")));
        self.field("created", when(&state.created));
        self.field("last change", when(&state.last_checkpoint));
        if !state.last_error.is_empty() {
            let error = term::truncate(&term::one_line(&state.last_error), self.value_width);
            self.field("last error", p.red(&error));
        }
        self.field("seq", state.seq.to_string());
        self.field("dir", state.dir.clone());
    }

    /// `ctx  N files, SIZE`, the digest, and a table of the files.
    fn ctx(&mut self, files: &[ContextFile], digest: &str) {
        let p = self.palette;
        let total: u64 = files.iter().map(|f| f.bytes).sum();
        self.lines.push(String::new());
        self.lines.push(format!(
            "{}  {} file{}, {}",
            p.bold("ctx"),
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            term::bytes(total)
        ));
        self.field(
            "digest",
            (if digest.is_empty() { "-" } else { digest }).to_owned(),
        );
        if files.is_empty() {
            return;
        }
        let rows = files
            .iter()
            .map(|f| {
                let var = if f.evidence_index >= 1 {
                    format!("$e{}", f.evidence_index)
                } else {
                    String::new()
                };
                vec![term::clean(&f.name), term::bytes(f.bytes), var]
            })
            .collect();
        let table = grid(p, &["NAME", "SIZE", "VAR"], rows, &[1]);
        self.lines
            .extend(table.into_iter().map(|line| format!("  {line}")));
    }

    /// `last N events`, then a table whose details column takes what is
    /// left of the width.
    fn events(&mut self, recent: &[Event], now: DateTime<Utc>, width: usize) {
        let p = self.palette;
        self.lines.push(String::new());
        self.lines
            .push(p.bold(&format!("last {} events", recent.len())));
        if recent.is_empty() {
            return;
        }
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
        self.lines
            .extend(table.into_iter().map(|line| format!("  {line}")));
    }
}

/// `@staging → staging.local` once resolved, else the target alone.
fn target_and_plan(state: &TxnState) -> String {
    let plan = serde_json::from_str::<Value>(&state.json)
        .ok()
        .and_then(|v| v.get("tes_plan").and_then(Value::as_str).map(str::to_owned));
    match plan {
        Some(plan) => format!(
            "{} → {}",
            term::one_line(&state.target),
            term::one_line(&plan)
        ),
        None => term::one_line(&state.target),
    }
}

/// The time lines of a status (SPEC §14): the deadline and heartbeat a
/// transaction was given, and since when it is stalled or overdue.
pub fn time_lines(state: &TxnState) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if !state.deadline.is_empty() {
        lines.push(("deadline", state.deadline.clone()));
    }
    if state.heartbeat_ms > 0 {
        let period = ttm_core::timing::format_duration(state.heartbeat_ms);
        lines.push(("heartbeat", format!("every {period} at least")));
    }
    if !state.stalled_since.is_empty() {
        lines.push((
            "stalled",
            format!("since {} (no sign of life)", state.stalled_since),
        ));
    }
    if !state.overdue.is_empty() {
        lines.push((
            "overdue",
            format!("{} (since {})", state.overdue, state.overdue_since),
        ));
    }
    lines
}
