use super::*;
use ratatui::crossterm::event::KeyEventKind;

fn txn(id: &str, stage: &str, created: &str, seq: u64) -> TxnState {
    TxnState {
        txn_id: id.to_owned(),
        stage: stage.to_owned(),
        created: created.to_owned(),
        seq,
        iteration: 1,
        ..Default::default()
    }
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent {
        code,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Press,
        state: ratatui::crossterm::event::KeyEventState::NONE,
    })
}

fn event(seq: u64, kind: &str) -> Event {
    Event {
        seq,
        event: kind.to_owned(),
        ts: "2025-10-17T14:30:22.000Z".to_owned(),
        json: "{}".to_owned(),
    }
}

fn app() -> (App, Action) {
    let mut app = App::new("ttm".to_owned(), false);
    let mut b = txn("b-2", "EXECUTE", "2025-10-17T14:00:02Z", 7);
    b.active = true;
    let action = app.update(Msg::Snapshot {
        module: "ttm".to_owned(),
        txns: vec![
            txn("a-1", "NEW", "2025-10-17T14:00:01Z", 1),
            b,
            txn("c-3", "DONE", "2025-10-17T14:00:03Z", 400),
        ],
        quarantined: 0,
    });
    (app, action)
}

fn ids(app: &App) -> Vec<&str> {
    app.visible()
        .iter()
        .map(|r| r.state.txn_id.as_str())
        .collect()
}

#[test]
fn a_snapshot_sorts_newest_first_and_follows_the_active_one() {
    let (app, action) = app();
    assert_eq!(ids(&app), ["c-3", "b-2", "a-1"]);
    assert_eq!(app.selected.as_deref(), Some("b-2"));
    assert_eq!(action, Action::Follow(Some(("b-2".to_owned(), 1))));
    assert_eq!(app.link, Link::Live);
}

#[test]
fn arrows_move_the_selection_and_follow_it() {
    let (mut app, _) = app();
    assert_eq!(
        app.update(key(KeyCode::Up)),
        Action::Follow(Some(("c-3".to_owned(), 201)))
    );
    assert_eq!(app.update(key(KeyCode::Up)), Action::None);
    app.update(key(KeyCode::End));
    assert_eq!(app.selected.as_deref(), Some("a-1"));
    assert_eq!(app.update(key(KeyCode::Down)), Action::None);
}

#[test]
fn the_stage_filter_cycles_through_the_stages_present() {
    let (mut app, _) = app();
    assert_eq!(app.stages(), ["NEW", "EXECUTE", "DONE"]);
    app.update(key(KeyCode::Char('s')));
    assert_eq!(app.filter.as_deref(), Some("NEW"));
    assert_eq!(ids(&app), ["a-1"]);
    assert_eq!(app.selected.as_deref(), Some("a-1"));
    app.update(key(KeyCode::Char('S')));
    assert_eq!(app.filter, None);
    app.update(key(KeyCode::Char('S')));
    assert_eq!(app.filter.as_deref(), Some("DONE"));
    app.update(key(KeyCode::Char('a')));
    assert_eq!(ids(&app).len(), 3);
}

#[test]
fn changes_update_rows_and_stale_states_are_ignored() {
    let (mut app, _) = app();
    let mut moved = txn("a-1", "SELECT", "2025-10-17T14:00:01Z", 2);
    moved.iteration = 2;
    app.update(Msg::State {
        module: "ttm".to_owned(),
        state: Box::new(moved),
    });
    app.update(Msg::State {
        module: "ttm".to_owned(),
        state: Box::new(txn("a-1", "NEW", "2025-10-17T14:00:01Z", 1)),
    });
    let row = &app.visible()[2];
    assert_eq!(
        (row.state.stage.as_str(), row.state.iteration),
        ("SELECT", 2)
    );
    // A new one goes on top; one from another module is ignored.
    app.update(Msg::State {
        module: "ttm".to_owned(),
        state: Box::new(txn("d-4", "NEW", "2025-10-17T14:00:04Z", 1)),
    });
    app.update(Msg::State {
        module: "rag".to_owned(),
        state: Box::new(txn("z-9", "NEW", "2025-10-17T14:00:09Z", 1)),
    });
    assert_eq!(ids(&app), ["d-4", "c-3", "b-2", "a-1"]);
    app.update(Msg::Activated {
        module: "ttm".to_owned(),
        txn_id: "d-4".to_owned(),
    });
    let active: Vec<&str> = app
        .rows
        .iter()
        .filter(|r| r.state.active)
        .map(|r| r.state.txn_id.as_str())
        .collect();
    assert_eq!(active, ["d-4"]);
    // Removing the selected one selects another and follows it.
    let action = app.update(Msg::Removed {
        module: "ttm".to_owned(),
        txn_id: "b-2".to_owned(),
    });
    assert_eq!(app.selected.as_deref(), Some("d-4"));
    assert!(matches!(action, Action::Follow(Some(_))));
}

#[test]
fn events_of_the_followed_transaction_are_kept_in_order() {
    let (mut app, _) = app();
    for seq in [1, 2, 2, 3] {
        app.update(Msg::Event {
            txn_id: "b-2".to_owned(),
            event: event(seq, "progress"),
        });
    }
    app.update(Msg::Event {
        txn_id: "a-1".to_owned(),
        event: event(9, "progress"),
    });
    let seqs: Vec<u64> = app.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let last = app.rows.iter().find(|r| r.state.txn_id == "b-2");
    assert_eq!(
        last.and_then(|r| r.last_event.as_ref()).map(|e| e.seq),
        Some(3)
    );
}

#[test]
fn modules_switch_by_prompt_and_tab() {
    let (mut app, _) = app();
    app.update(key(KeyCode::Char('m')));
    for c in "rag".chars() {
        app.update(key(KeyCode::Char(c)));
    }
    assert_eq!(app.mode, Mode::ModulePrompt("rag".to_owned()));
    // 'q' is text in the prompt, not quit.
    app.update(key(KeyCode::Char('q')));
    app.update(key(KeyCode::Backspace));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        Action::SwitchModule("rag".to_owned())
    );
    assert_eq!(app.module, "rag");
    assert!(app.rows.is_empty());
    assert_eq!(app.link, Link::Connecting);
    assert_eq!(
        app.update(key(KeyCode::Tab)),
        Action::SwitchModule("ttm".to_owned())
    );
    app.update(key(KeyCode::Char('m')));
    assert_eq!(app.update(key(KeyCode::Esc)), Action::None);
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn q_escape_and_ctrl_c_quit() {
    let (mut app, _) = app();
    assert_eq!(app.update(key(KeyCode::Char('q'))), Action::Quit);
    assert_eq!(app.update(key(KeyCode::Esc)), Action::Quit);
    let ctrl_c = Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(app.update(ctrl_c), Action::Quit);
}
