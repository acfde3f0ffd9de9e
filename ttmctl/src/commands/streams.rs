//! The long-running readers: `events` and `watch`.

use std::io::{IsTerminal, Write};

use serde_json::json;
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{Event, EventsRequest, GetStateRequest, WatchRequest};

use super::follow::{self, EventFollow, WatchFollow};
use super::{Ctx, required};
use crate::exit::Failure;
use crate::render;

/// Human: one `render::event_line` per event. `--json`: each event's line
/// from events.ndjson, verbatim. Ends when the daemon ends the stream (at
/// once without `--follow`); a follow rides out daemon restarts and ends
/// only on an error a restart does not explain, or on `--timeout` (exit 11).
pub async fn events(
    ctx: &mut Ctx,
    id: &str,
    event_type: String,
    from: u64,
    follow: bool,
    timeout: Option<u64>,
) -> Result<(), Failure> {
    let until = follow::give_up_at(timeout);
    let mut daemon = ctx.daemon().await?;
    // A follow pins the transaction: "the active one" may be another
    // after a reconnect.
    let txn = if follow && id.is_empty() {
        let request = GetStateRequest { txn: ctx.txn(id) };
        let state = daemon
            .call(async move |c| c.get_state(request).await)
            .await?;
        ctx.txn(&required(state.state)?.txn_id)
    } else {
        ctx.txn(id)
    };
    let shown = txn.as_ref().map(|t| t.txn_id.clone()).unwrap_or_default();
    let request = EventsRequest {
        txn,
        from_seq: from,
        event: event_type,
        follow,
    };
    let mut events = EventFollow::start(daemon, ctx.socket.clone(), request).await?;
    loop {
        let next = follow::within(until, events.next(), || {
            format!("{shown} was still being followed")
        });
        let Some(message) = next.await? else {
            return Ok(());
        };
        match message {
            Kind::Event(event) => {
                print_event(ctx, &event)?;
                if follow {
                    ctx.out.flush()?;
                }
            }
            Kind::CaughtUp(caught_up) => {
                if follow && !ctx.json {
                    note(ctx, &format!("-- caught up at seq {} --", caught_up.seq))?;
                }
            }
            Kind::Heartbeat(_) => {}
        }
    }
}

/// One event as `events` prints it, in either mode (the type coloured
/// when colour is on).
pub fn print_event(ctx: &mut Ctx, event: &Event) -> Result<(), Failure> {
    if ctx.json {
        ctx.out.line(&event.json)
    } else {
        let palette = ctx.palette();
        ctx.out.line(&render::event_line_styled(event, palette))
    }
}

/// A remark for a person watching: stderr, and only when it is a terminal,
/// so logs of scripts stay clean.
fn note(ctx: &mut Ctx, text: &str) -> Result<(), Failure> {
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        ctx.out.flush()?;
        // Losing a remark is harmless; it is not worth an error.
        let _ = writeln!(stderr, "{text}");
    }
    Ok(())
}

/// Human: one `render::watch_line` per change. `--json`: one object per line
/// `{"kind","module","txn_id","from","to","seq","ts"}`. Heartbeats are not
/// printed. Runs until interrupted, across daemon restarts.
pub async fn watch(ctx: &mut Ctx) -> Result<(), Failure> {
    let request = WatchRequest {
        module: ctx.module.clone(),
    };
    let daemon = ctx.daemon().await?;
    let mut changes = WatchFollow::start(daemon, ctx.socket.clone(), request).await?;
    loop {
        let change = changes.next().await?;
        if change.heartbeat.is_some() {
            continue;
        }
        if ctx.json {
            let mut line = json!({
                "kind": render::change_kind(change.kind),
                "module": change.module,
                "txn_id": change.txn_id,
                "from": change.from,
                "to": change.to,
                "seq": change.seq,
                "ts": change.ts,
            });
            if !change.warning.is_empty() {
                line["warning"] = change.warning.into();
            }
            if !change.note.is_empty() {
                line["note"] = change.note.into();
            }
            if !change.lease.is_empty() {
                line["lease"] = change.lease.clone().into();
                line["token"] = change.token.into();
            }
            ctx.out.json_line(&line)?;
        } else {
            let palette = ctx.palette();
            ctx.out.line(&render::watch_line_styled(&change, palette))?;
        }
        ctx.out.flush()?;
    }
}
