//! The long-running readers: `events` and `watch`.

use std::io::{IsTerminal, Write};

use serde_json::json;
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{Event, EventsRequest, WatchRequest};

use super::Ctx;
use crate::exit::Failure;
use crate::render;

/// Human: one `render::event_line` per event. `--json`: each event's line
/// from events.ndjson, verbatim. Ends when the daemon ends the stream
/// (at once without `--follow`).
pub async fn events(
    ctx: &mut Ctx,
    id: &str,
    event_type: String,
    from: u64,
    follow: bool,
) -> Result<(), Failure> {
    let request = EventsRequest {
        txn: ctx.txn(id),
        from_seq: from,
        event: event_type,
        follow,
    };
    let mut daemon = ctx.daemon().await?;
    let mut stream = daemon.call(async move |c| c.events(request).await).await?;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(status) => return Err(daemon.explain(status).await),
        };
        match message.kind {
            Some(Kind::Event(event)) => {
                print_event(ctx, &event)?;
                if follow {
                    ctx.out.flush()?;
                }
            }
            Some(Kind::CaughtUp(caught_up)) => {
                if follow && !ctx.json {
                    note(ctx, &format!("-- caught up at seq {} --", caught_up.seq))?;
                }
            }
            Some(Kind::Heartbeat(_)) | None => {}
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
/// printed. Runs until interrupted or the daemon ends the stream.
pub async fn watch(ctx: &mut Ctx) -> Result<(), Failure> {
    let request = WatchRequest {
        module: ctx.module.clone(),
    };
    let mut daemon = ctx.daemon().await?;
    let mut stream = daemon.call(async move |c| c.watch(request).await).await?;
    loop {
        let change = match stream.message().await {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(()),
            Err(status) => return Err(daemon.explain(status).await),
        };
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
