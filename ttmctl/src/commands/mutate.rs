//! Mutations of one transaction. Human mode prints nothing (the exit code
//! says it worked); `--json` prints the state the mutation left.

use serde_json::json;
use ttm_proto::v1::{
    AppendEventRequest, CommitRequest, FailRequest, RetryRequest, TransitionRequest, TxnState,
    UpdateRequest,
};

use super::{Ctx, preconditions, print_state_if_json, required, state_value, text_arg};
use crate::cli::{Guards, MoveArg};
use crate::exit::Failure;

pub async fn transition(
    ctx: &mut Ctx,
    id: &str,
    stage: String,
    guards: &Guards,
    show: &MoveArg,
) -> Result<(), Failure> {
    let request = TransitionRequest {
        txn: ctx.txn(id),
        stage,
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.transition(request).await)
        .await?;
    print_moved(ctx, show, reply.state, &reply.previous_stage)
}

/// `--json` prints `{"duration_ms": N, "state": {...}}`: the duration is
/// the one thing commit adds that the state does not hold.
pub async fn commit(
    ctx: &mut Ctx,
    id: &str,
    guards: &Guards,
    show: &MoveArg,
) -> Result<(), Failure> {
    let request = CommitRequest {
        txn: ctx.txn(id),
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.commit(request).await).await?;
    if show.print_move {
        print_move(ctx, reply.state, &reply.previous_stage)
    } else if ctx.json {
        let state = required(reply.state)?;
        ctx.out.json(&json!({
            "duration_ms": reply.duration_ms,
            "state": state_value(&state)?,
        }))
    } else {
        Ok(())
    }
}

pub async fn fail(
    ctx: &mut Ctx,
    id: &str,
    message: String,
    guards: &Guards,
    show: &MoveArg,
) -> Result<(), Failure> {
    let request = FailRequest {
        txn: ctx.txn(id),
        error: message,
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.fail(request).await).await?;
    print_moved(ctx, show, reply.state, &reply.previous_stage)
}

pub async fn retry(
    ctx: &mut Ctx,
    id: &str,
    to: String,
    guards: &Guards,
    show: &MoveArg,
) -> Result<(), Failure> {
    let request = RetryRequest {
        txn: ctx.txn(id),
        to,
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.retry(request).await).await?;
    print_moved(ctx, show, reply.state, &reply.previous_stage)
}

/// `--print-move`'s line, else what `--json` prints for a mutation.
fn print_moved(
    ctx: &mut Ctx,
    show: &MoveArg,
    state: Option<TxnState>,
    previous: &str,
) -> Result<(), Failure> {
    if show.print_move {
        print_move(ctx, state, previous)
    } else {
        print_state_if_json(ctx, state)
    }
}

/// `ID<TAB>FROM<TAB>TO`: ids and stage names hold no tab or line break, so
/// a script splits it without a JSON parser. A daemon too old to send the
/// previous stage leaves `?`, as the shims always printed for an unknown.
fn print_move(ctx: &mut Ctx, state: Option<TxnState>, previous: &str) -> Result<(), Failure> {
    let state = required(state)?;
    let from = if previous.is_empty() { "?" } else { previous };
    ctx.out
        .line(&format!("{}\t{from}\t{}", state.txn_id, state.stage))
}

pub async fn update(ctx: &mut Ctx, id: &str, patch: &str, guards: &Guards) -> Result<(), Failure> {
    let request = UpdateRequest {
        txn: ctx.txn(id),
        patch_json: text_arg(patch)?,
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.update(request).await).await?;
    print_state_if_json(ctx, reply.state)
}

/// Human mode prints nothing; `--json` prints `{"seq": N}`.
pub async fn event(
    ctx: &mut Ctx,
    id: &str,
    event_type: String,
    data: Option<&str>,
    guards: &Guards,
) -> Result<(), Failure> {
    let request = AppendEventRequest {
        txn: ctx.txn(id),
        event: event_type,
        data_json: data.map(text_arg).transpose()?.unwrap_or_default(),
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.append_event(request).await)
        .await?;
    if ctx.json {
        ctx.out.json(&json!({ "seq": reply.seq }))
    } else {
        Ok(())
    }
}
