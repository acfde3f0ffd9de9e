//! `status`: a summary of one transaction, and with `--follow` a wait for
//! its end (SPEC §9) that scripts can branch on.

use std::collections::VecDeque;

use serde_json::{Value, json};
use ttm_core::event::{Body, Event as Typed};
use ttm_core::fsm::{DONE, FAIL};
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{ContextFile, Event, EventsRequest, GetStateRequest, TxnState};

use super::follow::{self, EventFollow};
use super::streams::print_event;
use super::{Ctx, required, state_value};
use crate::connect::Daemon;
use crate::exit::{Exit, Failure};
use crate::output::parse_json;
use crate::render;
use crate::term;

/// Events shown in the summary.
const RECENT: usize = 5;

/// How a transaction ended.
enum End {
    Done,
    Failed(String),
}

/// Human: `render::status_summary`, an `events` heading and the last five
/// events; with `--follow`, then each new event until DONE (exit 0) or FAIL
/// (exit 9, the error on stderr).
///
/// `--json`: `{"state": {...}, "ctx": [...], "events": [...]}` (pretty);
/// with `--follow` that document on one line, then each new event's line
/// from events.ndjson, one per line.
pub async fn status(
    ctx: &mut Ctx,
    id: &str,
    follow: bool,
    timeout: Option<u64>,
) -> Result<(), Failure> {
    let until = follow::give_up_at(timeout);
    let mut daemon = ctx.daemon().await?;
    let mut view = View::load(ctx, &mut daemon, id, follow).await?;
    let ended = end_of(&view.state);
    let following = follow && ended.is_none();

    // Events are numbered by line, so the last five of the state's view
    // start at seq - 4; one stream serves the summary and the follow.
    // From here on the resolved id, not "the active one", which may change.
    let request = EventsRequest {
        txn: ctx.txn(&view.state.txn_id),
        from_seq: view.state.seq.saturating_sub(RECENT as u64 - 1).max(1),
        event: String::new(),
        follow: following,
    };
    let mut events = EventFollow::start(daemon, ctx.socket.clone(), request).await?;
    loop {
        let txn_id = &view.state.txn_id;
        let next = follow::within(until, events.next(), || {
            format!("{txn_id} had not finished")
        });
        let Some(kind) = next.await? else {
            break;
        };
        if let Some(end) = view.take(ctx, kind, following)? {
            return finish(ctx, &view.state.txn_id, end);
        }
    }
    view.summary_once(ctx)?;
    match view.pending.take().or(ended) {
        Some(end) if follow => finish(ctx, &view.state.txn_id, end),
        _ if following => Err(Failure::other(format!(
            "the event stream of {} ended before the transaction did",
            view.state.txn_id
        ))),
        _ => Ok(()),
    }
}

/// What `status` shows: the state, its ctx, the latest events until the
/// summary is printed, then each new event.
struct View {
    state: TxnState,
    files: Vec<ContextFile>,
    digest: String,
    recent: VecDeque<Event>,
    /// The summary is out and events now print as they come.
    live: bool,
    follow: bool,
    /// A lone stage_transition into DONE or FAIL (see `follow_step`) ends
    /// the follow at the next pause.
    pending: Option<End>,
}

impl View {
    async fn load(ctx: &Ctx, daemon: &mut Daemon, id: &str, follow: bool) -> Result<View, Failure> {
        let request = GetStateRequest { txn: ctx.txn(id) };
        let reply = daemon
            .call(async move |c| c.get_state(request).await)
            .await?;
        let state = required(reply.state)?;
        let context = super::pages::ctx_files(daemon, ctx.txn(&state.txn_id)).await?;
        let digest = if state.ctx_digest.is_empty() {
            context.ctx_digest
        } else {
            state.ctx_digest.clone()
        };
        Ok(View {
            state,
            files: context.files,
            digest,
            recent: VecDeque::new(),
            live: false,
            follow,
            pending: None,
        })
    }

    /// One message of the stream; `Some` once a new event ended the
    /// transaction.
    fn take(&mut self, ctx: &mut Ctx, kind: Kind, following: bool) -> Result<Option<End>, Failure> {
        match kind {
            Kind::Event(event) if !self.live && (!following || event.seq <= self.state.seq) => {
                self.recent.push_back(event);
                if self.recent.len() > RECENT {
                    self.recent.pop_front();
                }
            }
            Kind::Event(event) => {
                self.summary_once(ctx)?;
                print_event(ctx, &event)?;
                ctx.out.flush()?;
                if following && let Typed::Body(body) = term::typed(&event) {
                    // Time running out while we wait: said on stderr too,
                    // where a person watching a script's output looks.
                    if let Some(text) = ttm_core::timing::describe(&body) {
                        eprintln!("ttmctl: still waiting for {}: {text}", self.state.txn_id);
                    }
                }
                if event.seq > self.state.seq {
                    return Ok(follow_step(&event, &mut self.pending));
                }
            }
            // The replay is over: whatever comes next is new.
            Kind::CaughtUp(_) | Kind::Heartbeat(_) => {
                if following {
                    self.summary_once(ctx)?;
                }
                if let Some(end) = self.pending.take() {
                    return Ok(Some(end));
                }
            }
        }
        Ok(None)
    }

    fn summary_once(&mut self, ctx: &mut Ctx) -> Result<(), Failure> {
        if !self.live {
            self.live = true;
            print_summary(ctx, self)?;
        }
        Ok(())
    }
}

/// What a new event means for a follow: the end, now; or, for a
/// stage_transition into DONE or FAIL, the end unless the `txn_commit` or
/// `txn_fail` ttmd writes right after it comes first (kept in `pending`).
fn follow_step(event: &Event, pending: &mut Option<End>) -> Option<End> {
    let end = end_of_event(event)?;
    if event.event == "stage_transition" {
        *pending = Some(end);
        return None;
    }
    Some(end)
}

fn print_summary(ctx: &mut Ctx, view: &View) -> Result<(), Failure> {
    let View {
        state,
        files,
        digest,
        recent,
        follow,
        ..
    } = view;
    if ctx.json {
        let events = recent
            .iter()
            .map(|event| parse_json("an event", &event.json))
            .collect::<Result<Vec<Value>, _>>()?;
        let document = json!({
            "state": state_value(state)?,
            "ctx": files.iter().map(render::ctx_file_json).collect::<Vec<_>>(),
            "events": events,
        });
        if *follow {
            ctx.out.json_line(&document)?;
        } else {
            ctx.out.json(&document)?;
        }
    } else {
        let human = ctx.human();
        if human.tty {
            let recent: Vec<Event> = recent.iter().cloned().collect();
            let now = chrono::Utc::now();
            for line in render::status_rich(state, files, digest, &recent, now, &human) {
                ctx.out.line(&line)?;
            }
        } else {
            for line in render::status_summary(state, files, digest) {
                ctx.out.line(&line)?;
            }
            ctx.out.line("events")?;
            for event in recent {
                ctx.out
                    .line(&render::event_line_styled(event, human.palette))?;
            }
        }
    }
    ctx.out.flush()
}

/// DONE and FAIL are the terminal stages in every module's FSM.
fn end_of(state: &TxnState) -> Option<End> {
    match state.stage.as_str() {
        "DONE" => Some(End::Done),
        "FAIL" => Some(End::Failed(state.last_error.clone())),
        _ => None,
    }
}

/// Whether a new event ended the transaction: a commit or a fail, or a
/// transition into a terminal stage (an FSM may have a plain edge to DONE).
fn end_of_event(event: &Event) -> Option<End> {
    match term::typed(event) {
        Typed::Body(Body::Fail { error, .. }) => Some(End::Failed(error)),
        // A transition line carries no error text.
        Typed::Body(Body::Transition { to, .. }) => match to.as_str() {
            DONE => Some(End::Done),
            FAIL => Some(End::Failed(String::new())),
            _ => None,
        },
        Typed::Body(body) if body.final_stage() == Some(DONE) => Some(End::Done),
        Typed::Body(_) | Typed::Foreign { .. } | Typed::Malformed => None,
    }
}

fn finish(ctx: &mut Ctx, txn_id: &str, end: End) -> Result<(), Failure> {
    ctx.out.flush()?;
    match end {
        End::Done => Ok(()),
        End::Failed(error) if error.is_empty() => {
            Err(Failure::new(Exit::TxnFailed, format!("{txn_id} failed")))
        }
        End::Failed(error) => Err(Failure::new(
            Exit::TxnFailed,
            format!("{txn_id} failed: {error}"),
        )),
    }
}
