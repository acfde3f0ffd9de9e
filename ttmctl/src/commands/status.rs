//! `status`: a summary of one transaction, and with `--follow` a wait for
//! its end (SPEC §9) that scripts can branch on.

use std::collections::VecDeque;

use serde_json::{Value, json};
use tonic::Streaming;
use ttm_core::event::{Body, Event as Typed};
use ttm_core::fsm::{DONE, FAIL};
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{
    Event, EventsRequest, EventsResponse, GetStateRequest, ListContextRequest, TxnRef, TxnState,
};

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
pub async fn status(ctx: &mut Ctx, id: &str, follow: bool) -> Result<(), Failure> {
    let mut daemon = ctx.daemon().await?;
    let request = GetStateRequest { txn: ctx.txn(id) };
    let state = required(
        daemon
            .call(async move |c| c.get_state(request).await)
            .await?
            .state,
    )?;
    // From here on the resolved id, not "the active one", which may change.
    let txn = Some(TxnRef {
        module: ctx.module.clone(),
        txn_id: state.txn_id.clone(),
    });
    let request = ListContextRequest { txn: txn.clone() };
    let context = daemon
        .call(async move |c| c.list_context(request).await)
        .await?;
    let digest = if state.ctx_digest.is_empty() {
        context.ctx_digest.clone()
    } else {
        state.ctx_digest.clone()
    };
    let ended = end_of(&state);
    let following = follow && ended.is_none();

    // Events are numbered by line, so the last five of the state's view
    // start at seq - 4; one stream serves the summary and the follow.
    let request = EventsRequest {
        txn,
        from_seq: state.seq.saturating_sub(RECENT as u64 - 1).max(1),
        event: String::new(),
        follow: following,
    };
    let mut stream = daemon.call(async move |c| c.events(request).await).await?;

    let mut recent: VecDeque<Event> = VecDeque::new();
    // Whether the summary is out and events now print as they come.
    let mut live = false;
    while let Some(kind) = next(&mut daemon, &mut stream).await? {
        match kind {
            Kind::Event(event) if !live && (!following || event.seq <= state.seq) => {
                recent.push_back(event);
                if recent.len() > RECENT {
                    recent.pop_front();
                }
            }
            Kind::Event(event) => {
                if !live {
                    print_summary(ctx, &state, &context.files, &digest, &recent, follow)?;
                    live = true;
                }
                print_event(ctx, &event)?;
                ctx.out.flush()?;
                if event.seq > state.seq
                    && let Some(end) = end_of_event(&event)
                {
                    return finish(ctx, &state.txn_id, end);
                }
            }
            // The replay is over: whatever comes next is new.
            Kind::CaughtUp(_) | Kind::Heartbeat(_) => {
                if following && !live {
                    print_summary(ctx, &state, &context.files, &digest, &recent, follow)?;
                    live = true;
                }
            }
        }
    }
    if !live {
        print_summary(ctx, &state, &context.files, &digest, &recent, follow)?;
    }
    match ended {
        Some(end) if follow => finish(ctx, &state.txn_id, end),
        _ if following => Err(Failure::other(format!(
            "the event stream of {} ended before the transaction did",
            state.txn_id
        ))),
        _ => Ok(()),
    }
}

/// The next message of an events stream; `None` when the daemon ended it.
async fn next(
    daemon: &mut Daemon,
    stream: &mut Streaming<EventsResponse>,
) -> Result<Option<Kind>, Failure> {
    loop {
        match stream.message().await {
            Ok(Some(EventsResponse { kind: Some(kind) })) => return Ok(Some(kind)),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(status) => return Err(daemon.explain(status).await),
        }
    }
}

fn print_summary(
    ctx: &mut Ctx,
    state: &TxnState,
    files: &[ttm_proto::v1::ContextFile],
    digest: &str,
    recent: &VecDeque<Event>,
    follow: bool,
) -> Result<(), Failure> {
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
        if follow {
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
        Typed::Body(Body::Commit { .. }) => Some(End::Done),
        Typed::Body(Body::Fail { error, .. }) => Some(End::Failed(error)),
        // A transition line carries no error text.
        Typed::Body(Body::Transition { to, .. }) => match to.as_str() {
            DONE => Some(End::Done),
            FAIL => Some(End::Failed(String::new())),
            _ => None,
        },
        Typed::Body(
            Body::Start { .. }
            | Body::Updated { .. }
            | Body::EvidenceAdded { .. }
            | Body::TesResolved { .. }
            | Body::Retry { .. }
            | Body::Activated
            | Body::Adopted { .. }
            | Body::LeaseRequested { .. }
            | Body::LeaseAcquired { .. }
            | Body::LeaseReleased { .. }
            | Body::LeaseExpired { .. }
            | Body::User { .. },
        )
        | Typed::Foreign { .. }
        | Typed::Malformed => None,
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
