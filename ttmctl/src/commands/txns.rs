//! Creating, choosing and reading transactions.

use serde_json::{Value, json};
use ttm_proto::v1::{
    ActivateRequest, CreateRequest, GetActiveRequest, GetStateRequest, ListRequest, ListResponse,
    TxnState,
};

use super::{Ctx, preconditions, print_state_if_json, required, state_value};
use crate::cli::Guards;
use crate::connect::Daemon;
use crate::exit::{Exit, Failure};
use crate::render;
use crate::term;

/// Creates a transaction; with `--lease`, also waits for the leases that
/// were queued (see `leases::wait_for`). Skipped (`--skip-if-busy`):
/// nothing created, one line on stderr, exit 0.
pub async fn create(
    ctx: &mut Ctx,
    request: CreateRequest,
    wait: crate::cli::WaitArgs,
) -> Result<(), Failure> {
    let mut daemon = ctx.daemon().await?;
    let reply = match daemon.call(async move |c| c.create(request).await).await {
        Err(f) => return super::leases::skip_if_busy(f, &wait),
        Ok(reply) => reply,
    };
    let mut state = required(reply.state)?;
    let mut tokens = Vec::new();
    for lease in reply.leases {
        let token = if lease.granted {
            lease.token
        } else {
            let id = state.txn_id.clone();
            match super::leases::wait_for(ctx, &mut daemon, &id, &lease.name, 0, wait).await {
                Ok(token) => token,
                Err(f) => return Err(abandon(ctx, &mut daemon, &id, f).await),
            }
        };
        tokens.push((lease.name, token));
    }
    if !tokens.is_empty() {
        let id = state.txn_id.clone();
        let request = GetStateRequest { txn: ctx.txn(&id) };
        let reply = daemon
            .call(async move |c| c.get_state(request).await)
            .await?;
        state = required(reply.state)?;
    }
    if ctx.json {
        let fences: serde_json::Map<String, Value> =
            tokens.into_iter().map(|(n, t)| (n, t.into())).collect();
        ctx.out.json(&json!({
            "txn_id": state.txn_id,
            "dir": state.dir,
            "state": state_value(&state)?,
            "leases": fences,
        }))
    } else {
        ctx.out.line(&state.txn_id)
    }
}

/// A create whose lease wait failed (ran out, refused): the transaction
/// it made is failed with the reason, so it does not linger half-started;
/// the wait's own failure is what the caller is told.
async fn abandon(ctx: &Ctx, daemon: &mut Daemon, id: &str, f: Failure) -> Failure {
    let request = ttm_proto::v1::FailRequest {
        txn: ctx.txn(id),
        error: format!("could not get its leases: {}", f.message),
        ..Default::default()
    };
    if let Err(e) = daemon.call(async move |c| c.fail(request).await).await {
        eprintln!("ttmctl: could not mark {id} failed: {}", e.message);
    }
    f
}

pub async fn active(ctx: &mut Ctx) -> Result<(), Failure> {
    let request = GetActiveRequest {
        module: ctx.module.clone(),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.get_active(request).await)
        .await?;
    // The daemon refuses with FAILED_PRECONDITION itself; an empty answer
    // (allowed by the API) means the same.
    if reply.txn_id.is_empty() {
        return Err(Failure::new(
            Exit::Refused,
            format!("no active transaction in module {}", ctx.module),
        ));
    }
    if ctx.json {
        ctx.out.json(&json!({ "txn_id": reply.txn_id }))
    } else {
        ctx.out.line(&reply.txn_id)
    }
}

pub async fn activate(ctx: &mut Ctx, id: &str, guards: &Guards) -> Result<(), Failure> {
    let request = ActivateRequest {
        txn: ctx.txn(id),
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.activate(request).await)
        .await?;
    print_state_if_json(ctx, reply.state)
}

/// The state of one transaction, for the commands that only read it.
pub async fn get_state(ctx: &Ctx, id: &str) -> Result<TxnState, Failure> {
    let request = GetStateRequest { txn: ctx.txn(id) };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.get_state(request).await)
        .await?;
    required(reply.state)
}

pub async fn dir(ctx: &mut Ctx, id: &str) -> Result<(), Failure> {
    let state = get_state(ctx, id).await?;
    if ctx.json {
        ctx.out.json(&json!({ "dir": state.dir }))
    } else {
        ctx.out.line(&state.dir)
    }
}

pub async fn list(ctx: &mut Ctx, stage: String) -> Result<(), Failure> {
    let request = ListRequest {
        module: ctx.module.clone(),
        stage: stage.clone(),
        brief: !ctx.json,
        ..Default::default()
    };
    let mut daemon = ctx.daemon().await?;
    let reply = super::pages::txns(&mut daemon, request).await?;
    if ctx.json {
        list_json(ctx, &mut daemon, &stage, &reply).await
    } else {
        list_human(ctx, &stage, &reply)
    }
}

/// One document: the active transaction's id, the rows as state.json
/// documents, and the quarantined directories with their reasons.
async fn list_json(
    ctx: &mut Ctx,
    daemon: &mut Daemon,
    stage: &str,
    reply: &ListResponse,
) -> Result<(), Failure> {
    let mut active = reply
        .txns
        .iter()
        .find(|txn| txn.active)
        .map_or(Value::Null, |txn| Value::String(txn.txn_id.clone()));
    // With --stage the active transaction may be filtered out; "active"
    // still names it, as the module's fact rather than the list's.
    if !stage.is_empty() && active.is_null() {
        let request = GetActiveRequest {
            module: ctx.module.clone(),
        };
        match daemon
            .call(async move |c| c.get_active(request).await)
            .await
        {
            Ok(reply) if !reply.txn_id.is_empty() => active = Value::String(reply.txn_id),
            Ok(_) => {}
            Err(failure) if failure.exit == Exit::Refused => {}
            Err(failure) => return Err(failure),
        }
    }
    let txns = reply
        .txns
        .iter()
        .map(state_value)
        .collect::<Result<Vec<_>, _>>()?;
    let quarantined: Vec<Value> = reply
        .quarantined
        .iter()
        .map(|q| json!({ "txn_id": q.txn_id, "reason": q.reason }))
        .collect();
    ctx.out
        .json(&json!({ "active": active, "txns": txns, "quarantined": quarantined }))
}

/// The table (rich on a terminal), then the quarantined directories, then
/// on a terminal a hint when there is nothing to show.
fn list_human(ctx: &mut Ctx, stage: &str, reply: &ListResponse) -> Result<(), Failure> {
    let human = ctx.human();
    let lines = if human.tty {
        render::list_rich(&reply.txns, chrono::Utc::now(), &human)
    } else {
        render::list_table_styled(&reply.txns, human.palette)
    };
    for line in lines {
        ctx.out.line(&line)?;
    }
    // Never silently skipped: a transaction that cannot be loaded is
    // listed with the reason.
    for q in &reply.quarantined {
        let line = format!("! {}  QUARANTINED  {}", q.txn_id, q.reason);
        ctx.out.line(&if human.tty {
            human.palette.red(&term::one_line(&line))
        } else {
            line
        })?;
    }
    if human.tty && reply.txns.is_empty() && reply.quarantined.is_empty() {
        let module = &ctx.module;
        let note = if stage.is_empty() {
            format!(
                "no transactions in module {module} yet; start one with `ttmctl create DESCRIPTION`"
            )
        } else {
            format!("no transactions in stage {stage} of module {module}")
        };
        ctx.out.line(&human.palette.dim(&note))?;
    }
    Ok(())
}

/// The document exactly as the daemon wrote it (already pretty), in both
/// modes, so `ttmctl state` and `cat state.json` agree.
pub async fn state(ctx: &mut Ctx, id: &str) -> Result<(), Failure> {
    let state = get_state(ctx, id).await?;
    // state.json verbatim, except in cluster mode, where it gains the home.
    if state.json.trim().is_empty() || !state.home.is_empty() {
        let value = state_value(&state)?;
        ctx.out.json(&value)
    } else {
        ctx.out.line(&state.json)
    }
}
