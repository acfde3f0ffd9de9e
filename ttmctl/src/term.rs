//! What the terminal allows, decided only by the commands that print for
//! people: whether stdout is a terminal, whether to colour, how wide it is;
//! and the human formats of stages, times and sizes.
//!
//! Nothing here runs at start-up: `ttmctl event`, `transition` and the other
//! commands that print nothing pay for none of it.

use std::ffi::OsStr;
use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use owo_colors::{OwoColorize, Style};
use ttm_core::event::{Body, Event as Typed, Logged};
use ttm_proto::v1::Event;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour when the output is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Colour even into a pipe (e.g. for `less -R`), whatever `NO_COLOR` says.
    Always,
    /// Never colour.
    Never,
}

/// Whether to colour output going to a stream that is (or is not) a
/// terminal. `NO_COLOR` (https://no-color.org) set to anything but the
/// empty string turns colour off in `auto`; so does `TERM=dumb`. An
/// explicit `--color always` wins over both, as the convention asks.
pub fn wants_color(
    when: ColorWhen,
    is_terminal: bool,
    no_color: Option<&OsStr>,
    term: Option<&OsStr>,
) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            is_terminal
                && no_color.is_none_or(OsStr::is_empty)
                && term.is_none_or(|term| term != "dumb")
        }
    }
}

/// How human output to stdout should look.
#[derive(Clone, Copy, Debug)]
pub struct Human {
    /// stdout is a terminal: tables, relative times, cut to its width.
    /// Otherwise the plain, stable formats scripts may read.
    pub tty: bool,
    /// The colours to use (possibly none).
    pub palette: Palette,
    /// Columns available (only meaningful with `tty`).
    pub width: usize,
}

impl Human {
    /// Looks at stdout and the environment.
    pub fn detect(when: ColorWhen) -> Human {
        let tty = std::io::stdout().is_terminal();
        Human {
            tty,
            palette: Palette::new(color_from_env(when, tty)),
            width: if tty { width() } else { 0 },
        }
    }
}

/// [`wants_color`] with this process's environment.
pub fn color_from_env(when: ColorWhen, is_terminal: bool) -> bool {
    wants_color(
        when,
        is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

/// The width of the terminal on stdout: `$COLUMNS` when set to a number
/// (so a user or a test can choose), else the terminal's own, else 80.
pub fn width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return columns;
    }
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(size) if size.ws_col > 0 => usize::from(size.ws_col),
        _ => 80,
    }
}

/// Colours for human output; every method returns the text unchanged when
/// colour is off, so callers never branch.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    on: bool,
}

/// The colour family of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// Not started yet.
    New,
    /// Any other stage of a live transaction.
    Running,
    Done,
    Failed,
}

pub fn stage_kind(stage: &str) -> StageKind {
    match stage {
        "DONE" => StageKind::Done,
        "FAIL" => StageKind::Failed,
        "NEW" => StageKind::New,
        _ => StageKind::Running,
    }
}

impl Palette {
    pub fn new(on: bool) -> Palette {
        Palette { on }
    }

    fn paint(self, text: &str, style: Style) -> String {
        if self.on && !text.is_empty() {
            text.style(style).to_string()
        } else {
            text.to_owned()
        }
    }

    /// DONE green, FAIL red, NEW cyan, every running stage yellow.
    pub fn stage(self, stage: &str) -> String {
        let style = match stage_kind(stage) {
            StageKind::Done => Style::new().green().bold(),
            StageKind::Failed => Style::new().red().bold(),
            StageKind::New => Style::new().cyan(),
            StageKind::Running => Style::new().yellow().bold(),
        };
        self.paint(stage, style)
    }

    /// `text` (an event's type) in the colour of its [`Tone`].
    pub fn event(self, text: &str, event: &Event) -> String {
        let style = match tone(event) {
            Tone::Done => Style::new().green(),
            Tone::Failed => Style::new().red(),
            Tone::Moved => Style::new().yellow(),
            Tone::Plain => Style::new(),
        };
        self.paint(text, style)
    }

    pub fn bold(self, text: &str) -> String {
        self.paint(text, Style::new().bold())
    }

    pub fn dim(self, text: &str) -> String {
        self.paint(text, Style::new().dimmed())
    }

    pub fn red(self, text: &str) -> String {
        self.paint(text, Style::new().red())
    }
}

/// How an event stands out: the end of a transaction in its stage's
/// colour, a change of stage highlighted, everything else plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Done,
    Failed,
    Moved,
    Plain,
}

/// A streamed event's line read as a typed event, of the type the daemon
/// reported for it.
pub fn typed(event: &Event) -> Typed {
    match serde_json::from_str::<serde_json::Value>(&event.json) {
        Ok(serde_json::Value::Object(mut line)) => {
            line.insert("event".into(), event.event.as_str().into());
            Logged::read(Some(&line)).event
        }
        _ => Typed::Malformed,
    }
}

/// The [`Tone`] of a streamed event.
pub fn tone(event: &Event) -> Tone {
    match typed(event) {
        Typed::Body(Body::Commit { .. }) => Tone::Done,
        // Time running out is a failure in the making: shown as one.
        Typed::Body(Body::Fail { .. } | Body::Overdue { .. } | Body::Stalled { .. }) => {
            Tone::Failed
        }
        Typed::Body(
            Body::Transition { .. }
            | Body::Migrated { .. }
            | Body::Retry { .. }
            | Body::Start { .. },
        ) => Tone::Moved,
        Typed::Body(
            Body::Updated { .. }
            | Body::EvidenceAdded { .. }
            | Body::TesResolved { .. }
            | Body::Activated
            | Body::Adopted { .. }
            | Body::LeaseRequested { .. }
            | Body::LeaseAcquired { .. }
            | Body::LeaseReleased { .. }
            | Body::LeaseExpired { .. }
            | Body::HookRan { .. }
            | Body::Resumed { .. }
            | Body::User { .. },
        )
        | Typed::Foreign { .. }
        | Typed::Malformed => Tone::Plain,
    }
}

/// `ts` (RFC 3339) relative to `now`: "just now", "42 s ago", "3 min ago",
/// "5 h ago", "12 d ago" ("in 3 s" for a clock ahead of ours); the text
/// itself when it is not a time.
pub fn relative(ts: &str, now: DateTime<Utc>) -> String {
    let Ok(then) = DateTime::parse_from_rfc3339(ts) else {
        return ts.to_owned();
    };
    let secs = now.signed_duration_since(then).num_seconds();
    if secs.abs() < 2 {
        return "just now".to_owned();
    }
    let span = duration(secs.unsigned_abs());
    if secs < 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `42 s`, `3 min`, `5 h`, `12 d`: the largest whole unit.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// `1.50 MiB` and the like.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// The first line of `text`, control characters replaced, so that text
/// from users (descriptions, messages) can neither break a table nor send
/// escape sequences to the terminal.
pub fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    clean(first)
}

/// `text` with every control character (escape codes, newlines) shown as
/// `�`, tabs as a space.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `text` cut to `width` terminal columns, ending in `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Terminal columns taken by `text` (escape codes excluded by the callers:
/// they measure before colouring).
pub fn columns(text: &str) -> usize {
    text.width()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-10-17T15:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn colour_follows_flag_terminal_and_no_color() {
        let empty = OsStr::new("");
        let one = OsStr::new("1");
        assert!(wants_color(ColorWhen::Auto, true, None, None));
        assert!(wants_color(ColorWhen::Auto, true, Some(empty), None));
        assert!(!wants_color(ColorWhen::Auto, false, None, None));
        assert!(!wants_color(ColorWhen::Auto, true, Some(one), None));
        assert!(!wants_color(
            ColorWhen::Auto,
            true,
            None,
            Some(OsStr::new("dumb"))
        ));
        assert!(!wants_color(ColorWhen::Never, true, None, None));
        assert!(wants_color(ColorWhen::Always, false, Some(one), None));
    }

    #[test]
    fn palette_off_returns_plain_text() {
        let off = Palette::new(false);
        assert_eq!(off.stage("DONE"), "DONE");
        let fail = Event {
            seq: 2,
            event: "txn_fail".into(),
            ts: "2025-10-17T14:30:22.123Z".into(),
            json: r#"{"event":"txn_fail","seq":2,"from":"NEW","error":"x"}"#.into(),
        };
        assert_eq!(off.event("txn_fail", &fail), "txn_fail");
        assert!(
            Palette::new(true)
                .event("txn_fail", &fail)
                .contains("\u{1b}[31")
        );
        assert_eq!(tone(&fail), Tone::Failed);
        let on = Palette::new(true);
        assert!(
            on.stage("DONE").contains("\u{1b}[32"),
            "{:?}",
            on.stage("DONE")
        );
        assert!(on.stage("FAIL").contains("\u{1b}[31"));
        assert!(on.stage("EXECUTE").contains("\u{1b}[33"));
    }

    #[test]
    fn relative_times() {
        let at = |ts: &str| relative(ts, now());
        assert_eq!(at("2025-10-17T15:00:00.500Z"), "just now");
        assert_eq!(at("2025-10-17T14:59:18Z"), "42 s ago");
        assert_eq!(at("2025-10-17T14:57:00Z"), "3 min ago");
        assert_eq!(at("2025-10-17T10:00:00Z"), "5 h ago");
        assert_eq!(at("2025-10-05T15:00:00Z"), "12 d ago");
        assert_eq!(at("2025-10-17T15:00:03Z"), "in 3 s");
        assert_eq!(at("yesterday"), "yesterday");
    }

    #[test]
    fn truncation_counts_columns_and_marks_the_cut() {
        assert_eq!(truncate("deploy", 10), "deploy");
        assert_eq!(truncate("deploy api", 7), "deploy…");
        assert_eq!(truncate("日本語のテキスト", 5), "日本…");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(one_line("a\u{1b}[31mb\nsecond"), "a\u{fffd}[31mb");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(5), "5 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.50 MiB");
    }
}
