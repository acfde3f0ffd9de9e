//! `ttmctl top`: a live monitor of one module (ratatui).
//!
//! Driven by streams only — `Watch` for the module's transactions, a
//! followed `Events` for the selected one — never by reading or polling the
//! tree. The keyboard is read on a thread of its own; everything meets in
//! one channel, and the screen is redrawn after each batch of messages and
//! once a second (for the relative times).
//!
//! The terminal is set up here and nowhere else, so the other commands pay
//! nothing for it.

mod app;
mod feed;
mod ui;

use std::io::IsTerminal;
use std::time::Duration;

use ratatui::crossterm::event::{self as terminal_event, Event as TerminalEvent, KeyEventKind};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use ttm_proto::v1::ListRequest;

use self::app::{Action, App, Msg};
use self::feed::Task;
use super::Ctx;
use crate::connect::Daemon;
use crate::exit::Failure;
use crate::term;

pub async fn top(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.json {
        return Err(Failure::usage(
            "top is interactive and has no --json; for the same changes as JSON lines use \
             `ttmctl watch --json`",
        ));
    }
    if !std::io::stdout().is_terminal() {
        return Err(Failure::usage(
            "top needs a terminal on stdout; in a script use `ttmctl watch` (or `watch --json`)",
        ));
    }
    let mut daemon = ctx.daemon().await?;
    // Check the module before taking over the screen, so a mistake is one
    // ordinary line and exit code.
    let request = ListRequest {
        module: ctx.module.clone(),
        stage: String::new(),
        brief: true,
        page_size: 1,
        ..Default::default()
    };
    daemon.call(async move |c| c.list(request).await).await?;

    let color = term::color_from_env(ctx.color, true);
    let app = App::new(ctx.module.clone(), color);
    let mut terminal = ratatui::try_init()
        .map_err(|err| Failure::other(format!("cannot set up the terminal: {err}")))?;
    let local = tokio::task::LocalSet::new();
    let result = local.run_until(run(&mut terminal, app, daemon)).await;
    ratatui::restore();
    result
}

/// The feeds currently running.
struct Feeds {
    daemon: Daemon,
    tx: UnboundedSender<Msg>,
    module: Option<Task>,
    events: Option<Task>,
}

impl Feeds {
    fn apply(&mut self, app: &App, action: Action) -> bool {
        match action {
            Action::None => {}
            Action::Quit => return false,
            Action::SwitchModule(module) => {
                self.events = None;
                self.module = Some(Task::spawn(feed::module(
                    self.daemon.clone(),
                    module,
                    self.tx.clone(),
                )));
            }
            Action::Follow(None) => self.events = None,
            Action::Follow(Some((txn_id, from))) => {
                // Dropping the old task ends its stream.
                self.events = Some(Task::spawn(feed::events(
                    self.daemon.clone(),
                    app.module.clone(),
                    txn_id,
                    from,
                    self.tx.clone(),
                )));
            }
        }
        true
    }
}

async fn run(
    terminal: &mut ratatui::DefaultTerminal,
    mut app: App,
    daemon: Daemon,
) -> Result<(), Failure> {
    let (tx, mut rx) = unbounded_channel();
    spawn_keyboard(tx.clone());
    let mut feeds = Feeds {
        daemon,
        tx,
        module: None,
        events: None,
    };
    feeds.apply(&app, Action::SwitchModule(app.module.clone()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        terminal
            .draw(|frame| ui::draw(frame, &app, chrono::Utc::now()))
            .map_err(|err| Failure::other(format!("cannot draw on the terminal: {err}")))?;
        let first = tokio::select! {
            msg = rx.recv() => msg,
            _ = tick.tick() => Some(Msg::Redraw),
        };
        let Some(first) = first else {
            return Ok(());
        };
        // Apply everything already queued before drawing again.
        for msg in std::iter::once(first).chain(drain(&mut rx)) {
            let action = app.update(msg);
            if !feeds.apply(&app, action) {
                return Ok(());
            }
        }
    }
}

fn drain(rx: &mut UnboundedReceiver<Msg>) -> Vec<Msg> {
    let mut queued = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        queued.push(msg);
        if queued.len() >= 1000 {
            break;
        }
    }
    queued
}

/// Reads keys and resizes on a thread (reading the terminal blocks); ends
/// when the receiver is gone or the terminal cannot be read.
fn spawn_keyboard(tx: UnboundedSender<Msg>) {
    std::thread::spawn(move || {
        loop {
            let msg = match terminal_event::read() {
                Ok(TerminalEvent::Key(key)) if key.kind != KeyEventKind::Release => Msg::Key(key),
                Ok(TerminalEvent::Resize(..)) => Msg::Redraw,
                Ok(_) => continue,
                Err(_) => {
                    let _ = tx.send(Msg::InputClosed);
                    return;
                }
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}
