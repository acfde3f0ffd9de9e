//! Drawing `ttmctl top`: a header, the transactions table, the selected
//! transaction's events, and a line of keys (or the module prompt).

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, HighlightSpacing, Paragraph, Row as TableRow, Table, TableState,
};
use ttm_core::event::{Body, Event as Typed};
use ttm_proto::v1::Event;

use super::app::{App, Link, Mode, Row};
use crate::render;
use crate::term::{self, StageKind, Tone};

pub fn draw(frame: &mut Frame, app: &App, now: DateTime<Utc>) {
    let area = frame.area();
    let events_height = (area.height / 3).clamp(5, 16);
    let [header, table, events, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(events_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header, now);
    draw_table(frame, app, table, now);
    draw_events(frame, app, events);
    draw_footer(frame, app, footer);
}

/// Styles that collapse to nothing when colour is off.
#[derive(Debug, Clone, Copy)]
struct Look {
    color: bool,
}

impl Look {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn stage(&self, stage: &str) -> Style {
        match term::stage_kind(stage) {
            StageKind::Done => self.fg(Color::Green).add_modifier(Modifier::BOLD),
            StageKind::Failed => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            StageKind::New => self.fg(Color::Cyan),
            StageKind::Running => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        }
    }

    fn event(&self, event: &Event) -> Style {
        match term::tone(event) {
            Tone::Done => self.fg(Color::Green),
            Tone::Failed => self.fg(Color::Red),
            Tone::Moved => self.fg(Color::Yellow),
            Tone::Plain => Style::new(),
        }
    }

    fn dim(&self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect, now: DateTime<Utc>) {
    let look = Look { color: app.color };
    let count = app.rows.len();
    let mut spans = vec![
        Span::styled(" ttmctl top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" module "),
        Span::styled(
            app.module.clone(),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  {count} transaction{}",
            if count == 1 { "" } else { "s" }
        )),
    ];
    if let Some(stage) = &app.filter {
        spans.push(Span::raw(format!(
            ", {} in stage {stage}",
            app.visible().len()
        )));
    }
    if app.quarantined > 0 {
        spans.push(Span::styled(
            format!(", {} quarantined", app.quarantined),
            look.fg(Color::Red),
        ));
    }
    let (link, style) = match &app.link {
        Link::Connecting => ("connecting…".to_owned(), look.dim()),
        Link::Live => ("● live".to_owned(), look.fg(Color::Green)),
        Link::Lost(why) => (format!("✗ {}", term::one_line(why)), look.fg(Color::Red)),
    };
    spans.push(Span::raw("  "));
    spans.push(Span::styled(link, style));
    spans.push(Span::styled(
        format!("  {}", now.format("%H:%M:%S")),
        look.dim(),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn age(created: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(created) {
        Ok(then) => term::duration(
            now.signed_duration_since(then)
                .num_seconds()
                .max(0)
                .unsigned_abs(),
        ),
        Err(_) => String::new(),
    }
}

/// `stage_transition NEW → EXECUTE`, `progress pct=50`, …
fn last_event_text(event: &Event) -> String {
    let detail = match term::typed(event) {
        Typed::Body(Body::Transition { from, to, .. } | Body::Migrated { from, to }) => {
            format!("{} → {}", term::clean(&from), term::clean(&to))
        }
        Typed::Body(b @ (Body::Overdue { .. } | Body::Stalled { .. } | Body::Resumed { .. })) => {
            term::clean(&ttm_core::timing::describe(&b).unwrap_or_default())
        }
        Typed::Body(
            Body::Start { .. }
            | Body::Updated { .. }
            | Body::EvidenceAdded { .. }
            | Body::TesResolved { .. }
            | Body::Commit { .. }
            | Body::Fail { .. }
            | Body::Retry { .. }
            | Body::Activated
            | Body::Adopted { .. }
            | Body::LeaseRequested { .. }
            | Body::LeaseAcquired { .. }
            | Body::LeaseReleased { .. }
            | Body::LeaseExpired { .. }
            | Body::HookRan { .. }
            | Body::User { .. },
        )
        | Typed::Foreign { .. }
        | Typed::Malformed => render::event_fields(event),
    };
    format!("{} {}", term::clean(&event.event), detail)
        .trim_end()
        .to_owned()
}

/// The LAST EVENT cell: the leases held or awaited, then the last event.
fn last_cell(row: &Row) -> String {
    let last = row
        .last_event
        .as_ref()
        .map(last_event_text)
        .unwrap_or_default();
    let leases = crate::render::lease_note(&row.state);
    if leases.is_empty() {
        last
    } else {
        format!("[{}] {last}", leases.trim())
    }
}

fn draw_table(frame: &mut Frame, app: &App, area: Rect, now: DateTime<Utc>) {
    let look = Look { color: app.color };
    let visible = app.visible();
    let id_width = visible
        .iter()
        .map(|row| term::columns(&row.state.txn_id))
        .max()
        .unwrap_or(0)
        .clamp(8, 48) as u16;
    let rows = visible.iter().map(|row| table_row(row, look, now));
    let header = TableRow::new(vec![
        "  ID",
        "STAGE",
        "ITER",
        "AGE",
        "UPDATED",
        "LAST EVENT",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(id_width + 2),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(11),
        Constraint::Fill(1),
    ];
    let title = match &app.filter {
        Some(stage) => format!(" transactions in {stage} "),
        None => " transactions ".to_owned(),
    };
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .column_spacing(2)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
    if visible.is_empty() {
        draw_empty_note(frame, app, area, look);
    }
}

/// One transaction's row: `*` and bold for the active one, the stage
/// coloured, times relative, the latest event as text.
fn table_row(row: &Row, look: Look, now: DateTime<Utc>) -> TableRow<'static> {
    let s = &row.state;
    let last = last_cell(row);
    let id = if s.active {
        Span::styled(
            format!("* {}", s.txn_id),
            Style::new().add_modifier(Modifier::BOLD),
        )
    } else {
        Span::raw(format!("  {}", s.txn_id))
    };
    TableRow::new(vec![
        Cell::from(id),
        Cell::from(Span::styled(s.stage.clone(), look.stage(&s.stage))),
        Cell::from(Line::from(s.iteration.to_string()).right_aligned()),
        Cell::from(age(&s.created, now)),
        Cell::from(term::relative(&s.last_checkpoint, now)),
        Cell::from(last),
    ])
}

/// Why the table is empty, inside its frame.
fn draw_empty_note(frame: &mut Frame, app: &App, area: Rect, look: Look) {
    let note = match (&app.link, &app.filter) {
        (Link::Connecting, _) => "waiting for ttmd…".to_owned(),
        (_, Some(stage)) => format!("no transaction in stage {stage} (a: show all)"),
        _ => format!("no transactions in module {} yet", app.module),
    };
    let inner = Rect {
        x: area.x + 2,
        y: area.y + 2,
        width: area.width.saturating_sub(4),
        height: 1,
    };
    if area.height > 3 {
        frame.render_widget(Paragraph::new(note).style(look.dim()), inner);
    }
}

fn draw_events(frame: &mut Frame, app: &App, area: Rect) {
    let look = Look { color: app.color };
    let title = match &app.events_of {
        Some(id) => format!(" events of {id} "),
        None => " events ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let room = usize::from(inner.height);
    let skip = app.events.len().saturating_sub(room);
    let lines: Vec<Line> = app
        .events
        .iter()
        .skip(skip)
        .map(|event| {
            // The time of day of `ts` (…THH:MM:SS.mmmZ).
            let time = event.ts.get(11..19).unwrap_or(&event.ts).to_owned();
            let kind = term::clean(&event.event);
            let pad = 16usize.saturating_sub(term::columns(&kind));
            Line::from(vec![
                Span::styled(format!("{:>5}  {time}  ", event.seq), look.dim()),
                Span::styled(kind, look.event(event)),
                Span::raw(format!(
                    "{}  {}",
                    " ".repeat(pad),
                    render::event_fields(event)
                )),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.mode {
        Mode::ModulePrompt(text) => Line::from(vec![
            Span::styled(" module: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{text}▏")),
            Span::styled(
                "   Enter switch · Esc cancel",
                Style::new().add_modifier(Modifier::DIM),
            ),
        ]),
        Mode::Normal => {
            let keys = [
                ("↑↓", "select"),
                ("s/S", "stage filter"),
                ("a", "all"),
                ("m", "module"),
                ("Tab", "next module"),
                ("q", "quit"),
            ];
            let mut spans = vec![Span::raw(" ")];
            for (key, what) in keys {
                spans.push(Span::styled(key, Style::new().add_modifier(Modifier::BOLD)));
                spans.push(Span::raw(format!(" {what}  ")));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::top::app::Msg;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ttm_proto::v1::TxnState;

    fn screen(app: &App) -> String {
        let Ok(mut terminal) = Terminal::new(TestBackend::new(120, 24));
        let now = DateTime::parse_from_rfc3339("2025-10-17T15:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        if terminal.draw(|frame| draw(frame, app, now)).is_err() {
            panic!("draw failed");
        }
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_screen_shows_rows_events_and_keys() {
        let mut app = App::new("ttm".to_owned(), false);
        let txn = |id: &str, stage: &str, active: bool| TxnState {
            txn_id: id.to_owned(),
            stage: stage.to_owned(),
            iteration: 2,
            active,
            created: "2025-10-17T14:57:00Z".to_owned(),
            last_checkpoint: "2025-10-17T14:59:30Z".to_owned(),
            seq: 3,
            ..Default::default()
        };
        app.update(Msg::Snapshot {
            module: "ttm".to_owned(),
            txns: vec![
                txn("deploy-api-20251017T145700", "EXECUTE", true),
                txn("backup-20251017T145700", "DONE", false),
            ],
            quarantined: 0,
        });
        app.update(Msg::Event {
            txn_id: "deploy-api-20251017T145700".to_owned(),
            event: Event {
                seq: 3,
                event: "stage_transition".to_owned(),
                ts: "2025-10-17T14:59:30.000Z".to_owned(),
                json: r#"{"from":"NEW","to":"EXECUTE"}"#.to_owned(),
            },
        });
        let text = screen(&app);
        assert!(text.contains("module ttm  2 transactions"), "{text}");
        assert!(text.contains("▶* deploy-api-20251017T145700"), "{text}");
        assert!(text.contains("   backup-20251017T145700"), "{text}");
        assert!(text.contains("EXECUTE"), "{text}");
        assert!(text.contains("3 min"), "{text}");
        assert!(text.contains("30 s ago"), "{text}");
        assert!(text.contains("stage_transition NEW → EXECUTE"), "{text}");
        assert!(
            text.contains("events of deploy-api-20251017T145700"),
            "{text}"
        );
        assert!(text.contains("14:59:30  stage_transition"), "{text}");
        assert!(text.contains("q quit"), "{text}");
        let header = text.lines().nth(2).unwrap_or("");
        let columns: Vec<&str> = header.trim_matches('│').split_whitespace().collect();
        assert_eq!(
            columns,
            ["ID", "STAGE", "ITER", "AGE", "UPDATED", "LAST", "EVENT"]
        );
        // Columns on screen (not bytes: the borders and ▶ are multi-byte).
        let column =
            |line: &str, needle: &str| line.find(needle).map(|at| line[..at].chars().count());
        let id_at = column(header, "ID");
        let row_at = text.lines().nth(3).and_then(|l| column(l, "deploy"));
        assert_eq!(id_at, row_at, "header not over its column:\n{text}");
    }
}
