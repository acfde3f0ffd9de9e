//! The state of `ttmctl top` and how messages change it: no terminal, no
//! I/O, so every key and every stream message is unit-tested.

use std::collections::VecDeque;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ttm_proto::v1::{Event, TxnState};

/// Events of the selected transaction kept in memory.
pub const EVENTS_KEPT: usize = 500;
/// How many past events the selected transaction's stream starts with.
pub const EVENTS_BACKLOG: u64 = 200;

/// Everything the screen shows.
#[derive(Debug)]
pub struct App {
    /// The module shown.
    pub module: String,
    /// Modules visited (Tab cycles through them).
    pub modules: Vec<String>,
    /// Its transactions, newest first.
    pub rows: Vec<Row>,
    /// Quarantined transaction directories (not served), for the header.
    pub quarantined: usize,
    /// The selected transaction's id.
    pub selected: Option<String>,
    /// Only rows in this stage, if set.
    pub filter: Option<String>,
    /// Whose events `events` holds.
    pub events_of: Option<String>,
    /// The selected transaction's events, oldest first.
    pub events: VecDeque<Event>,
    /// Whether the feeds are live, and if not why.
    pub link: Link,
    /// What keys do at the moment.
    pub mode: Mode,
    /// Colour on (off with NO_COLOR or `--color never`).
    pub color: bool,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its latest known state.
    pub state: TxnState,
    /// Its latest known event.
    pub last_event: Option<Event>,
}

/// The state of the link to ttmd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Live,
    /// The feed failed; the message says why (and whether it retries).
    Lost(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a module name.
    ModulePrompt(String),
}

/// What happened, from the keyboard or the feeds. Feed messages carry the
/// module (or transaction) they are about, so late ones from a feed that
/// was replaced are ignored.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    /// The keyboard cannot be read any more: nothing could end `top` but
    /// a signal, so it ends now.
    InputClosed,
    /// Redraw (resize, clock tick).
    Redraw,
    /// The module's transactions, from `List`.
    Snapshot {
        module: String,
        txns: Vec<TxnState>,
        quarantined: usize,
    },
    /// A transaction's new state, after a change seen on `Watch`.
    State {
        module: String,
        state: Box<TxnState>,
    },
    /// A transaction became the active one.
    Activated {
        module: String,
        txn_id: String,
    },
    /// A transaction was removed or archived.
    Removed {
        module: String,
        txn_id: String,
    },
    /// A transaction's latest event (from a one-shot `Events` read).
    LastEvent {
        module: String,
        txn_id: String,
        event: Event,
    },
    /// An event on the selected transaction's followed stream.
    Event {
        txn_id: String,
        event: Event,
    },
    /// The module feed lost ttmd (it retries) or was refused.
    Lost {
        module: String,
        message: String,
    },
}

/// What the caller must do after an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Replace the module feed.
    SwitchModule(String),
    /// Follow this transaction's events from this seq (None: follow none).
    Follow(Option<(String, u64)>),
}

/// The stages in the order the filter cycles through them: the default
/// FSM's first, then any others (a module's own) alphabetically, the
/// terminal ones last.
fn stage_rank(stage: &str) -> (u8, &str) {
    let rank = match stage {
        "NEW" => 0,
        "SELECT" => 1,
        "ASSEMBLE" => 2,
        "EXECUTE" => 3,
        "VALIDATE" => 4,
        "DONE" => 8,
        "FAIL" => 9,
        _ => 5,
    };
    (rank, stage)
}

impl App {
    pub fn new(module: String, color: bool) -> App {
        let mut modules = vec![module.clone()];
        if module != ttm_core::DEFAULT_MODULE {
            modules.push(ttm_core::DEFAULT_MODULE.to_owned());
        }
        App {
            module,
            modules,
            rows: Vec::new(),
            quarantined: 0,
            selected: None,
            filter: None,
            events_of: None,
            events: VecDeque::new(),
            link: Link::Connecting,
            mode: Mode::Normal,
            color,
        }
    }

    /// The rows the filter lets through, in display order.
    pub fn visible(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|row| self.filter.as_ref().is_none_or(|s| &row.state.stage == s))
            .collect()
    }

    /// The index of the selected row among the visible ones.
    pub fn selected_index(&self) -> Option<usize> {
        let selected = self.selected.as_ref()?;
        self.visible()
            .iter()
            .position(|row| &row.state.txn_id == selected)
    }

    pub fn update(&mut self, msg: Msg) -> Action {
        match msg {
            Msg::Key(key) => self.key(key),
            Msg::InputClosed => Action::Quit,
            Msg::Redraw => Action::None,
            Msg::Snapshot {
                module,
                txns,
                quarantined,
            } if module == self.module => self.snapshot(txns, quarantined),
            Msg::State { module, state } if module == self.module => self.state(*state),
            Msg::Activated { module, txn_id } if module == self.module => {
                for row in &mut self.rows {
                    row.state.active = row.state.txn_id == txn_id;
                }
                Action::None
            }
            Msg::Removed { module, txn_id } if module == self.module => {
                self.rows.retain(|row| row.state.txn_id != txn_id);
                self.reselect(false)
            }
            Msg::LastEvent {
                module,
                txn_id,
                event,
            } if module == self.module => {
                self.note_event(&txn_id, &event);
                Action::None
            }
            Msg::Event { txn_id, event } => {
                self.followed_event(txn_id, event);
                Action::None
            }
            Msg::Lost { module, message } if module == self.module => {
                self.link = Link::Lost(message);
                Action::None
            }
            // About a module no longer shown.
            Msg::Snapshot { .. }
            | Msg::State { .. }
            | Msg::Activated { .. }
            | Msg::Removed { .. }
            | Msg::LastEvent { .. }
            | Msg::Lost { .. } => Action::None,
        }
    }

    /// A module's whole listing: rows replaced, the latest event each row
    /// already showed kept.
    fn snapshot(&mut self, txns: Vec<TxnState>, quarantined: usize) -> Action {
        let old: Vec<Row> = std::mem::take(&mut self.rows);
        self.rows = txns
            .into_iter()
            .map(|state| {
                let last_event = old
                    .iter()
                    .find(|row| row.state.txn_id == state.txn_id)
                    .and_then(|row| row.last_event.clone());
                Row { state, last_event }
            })
            .collect();
        self.sort();
        self.quarantined = quarantined;
        self.link = Link::Live;
        self.reselect(true)
    }

    /// One transaction's fresh state: a new row, or an update of its row
    /// unless the row already shows a later one (messages crossed).
    fn state(&mut self, state: TxnState) -> Action {
        self.link = Link::Live;
        match self
            .rows
            .iter_mut()
            .find(|row| row.state.txn_id == state.txn_id)
        {
            Some(row) if row.state.seq > state.seq => {}
            Some(row) => row.state = state,
            None => {
                self.rows.push(Row {
                    state,
                    last_event: None,
                });
                self.sort();
            }
        }
        self.reselect(false)
    }

    /// An event of the transaction whose events are shown, kept in order
    /// and without repeats, the oldest dropped past `EVENTS_KEPT`.
    fn followed_event(&mut self, txn_id: String, event: Event) {
        if self.events_of.as_ref() == Some(&txn_id)
            && self.events.back().is_none_or(|last| last.seq < event.seq)
        {
            self.note_event(&txn_id, &event);
            self.events.push_back(event);
            while self.events.len() > EVENTS_KEPT {
                self.events.pop_front();
            }
        }
    }

    fn note_event(&mut self, txn_id: &str, event: &Event) {
        if let Some(row) = self.rows.iter_mut().find(|row| row.state.txn_id == txn_id)
            && row.last_event.as_ref().is_none_or(|e| e.seq <= event.seq)
        {
            row.last_event = Some(event.clone());
        }
    }

    /// Newest first; ties by id, so the order never flickers.
    fn sort(&mut self) {
        self.rows.sort_by(|a, b| {
            (&b.state.created, &b.state.txn_id).cmp(&(&a.state.created, &a.state.txn_id))
        });
    }

    /// Keeps the selection on a visible row (the active one first, when
    /// `prefer_active` and nothing is selected yet), and tells the caller to
    /// follow another transaction when the selection moved.
    fn reselect(&mut self, prefer_active: bool) -> Action {
        let visible = self.visible();
        let still = self
            .selected
            .as_ref()
            .is_some_and(|id| visible.iter().any(|row| &row.state.txn_id == id));
        if !still {
            let pick = if prefer_active {
                visible
                    .iter()
                    .find(|row| row.state.active)
                    .or(visible.first())
            } else {
                visible.first()
            };
            self.selected = pick.map(|row| row.state.txn_id.clone());
        }
        self.follow_selected()
    }

    /// `Follow` when the followed transaction is not the selected one.
    fn follow_selected(&mut self) -> Action {
        if self.events_of == self.selected {
            return Action::None;
        }
        self.events_of = self.selected.clone();
        self.events.clear();
        match &self.selected {
            None => Action::Follow(None),
            Some(id) => {
                let seq = self
                    .rows
                    .iter()
                    .find(|row| &row.state.txn_id == id)
                    .map_or(0, |row| row.state.seq);
                let from = seq.saturating_sub(EVENTS_BACKLOG - 1).max(1);
                Action::Follow(Some((id.clone(), from)))
            }
        }
    }

    fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Mode::ModulePrompt(text) = &mut self.mode {
            match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => {
                    let name = text.trim().to_owned();
                    self.mode = Mode::Normal;
                    if !name.is_empty() && name != self.module {
                        return self.switch_to(name);
                    }
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !c.is_control() && text.len() < 32 => text.push(c),
                _ => {}
            }
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Char('s') => self.cycle_filter(true),
            KeyCode::Char('S') => self.cycle_filter(false),
            KeyCode::Char('a') => {
                self.filter = None;
                self.reselect(false)
            }
            KeyCode::Char('m') => {
                self.mode = Mode::ModulePrompt(String::new());
                Action::None
            }
            KeyCode::Tab => self.cycle_module(true),
            KeyCode::BackTab => self.cycle_module(false),
            _ => Action::None,
        }
    }

    fn move_by(&mut self, delta: isize) -> Action {
        let ids: Vec<String> = self
            .visible()
            .iter()
            .map(|row| row.state.txn_id.clone())
            .collect();
        if ids.is_empty() {
            return Action::None;
        }
        let current = self.selected_index().unwrap_or(0) as isize;
        let last = ids.len() as isize - 1;
        let next = current.saturating_add(delta).clamp(0, last) as usize;
        self.selected = ids.get(next).cloned();
        self.follow_selected()
    }

    /// The stages present, in [`stage_rank`] order.
    pub fn stages(&self) -> Vec<String> {
        let mut stages: Vec<String> = Vec::new();
        for row in &self.rows {
            if !stages.contains(&row.state.stage) {
                stages.push(row.state.stage.clone());
            }
        }
        stages.sort_by(|a, b| stage_rank(a).cmp(&stage_rank(b)));
        stages
    }

    /// all → each stage present → all (or backwards).
    fn cycle_filter(&mut self, forward: bool) -> Action {
        let mut options: Vec<Option<String>> = vec![None];
        options.extend(self.stages().into_iter().map(Some));
        if let Some(current) = &self.filter
            && !options.iter().any(|o| o.as_ref() == Some(current))
        {
            options.push(Some(current.clone()));
        }
        let at = options.iter().position(|o| *o == self.filter).unwrap_or(0);
        let n = options.len();
        let next = if forward {
            (at + 1) % n
        } else {
            (at + n - 1) % n
        };
        self.filter = options.get(next).cloned().flatten();
        self.reselect(false)
    }

    fn cycle_module(&mut self, forward: bool) -> Action {
        let n = self.modules.len();
        if n < 2 {
            return Action::None;
        }
        let at = self
            .modules
            .iter()
            .position(|m| *m == self.module)
            .unwrap_or(0);
        let next = if forward {
            (at + 1) % n
        } else {
            (at + n - 1) % n
        };
        match self.modules.get(next).cloned() {
            Some(module) => self.switch_to(module),
            None => Action::None,
        }
    }

    /// Shows `module` (empty until its feed's snapshot arrives).
    fn switch_to(&mut self, module: String) -> Action {
        if !self.modules.contains(&module) {
            self.modules.push(module.clone());
        }
        self.module = module.clone();
        self.rows.clear();
        self.quarantined = 0;
        self.selected = None;
        self.filter = None;
        self.events_of = None;
        self.events.clear();
        self.link = Link::Connecting;
        Action::SwitchModule(module)
    }
}

#[cfg(test)]
mod tests;
