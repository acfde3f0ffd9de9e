//! `ttmctl daemon …`: the daemon itself. These never start a daemon: asking
//! a daemon that is not running for its status should say so. Also the
//! retention commands, `archive` and `gc`.

use std::time::{Duration, Instant};

use serde_json::json;
use ttm_proto::v1::{
    ArchiveRequest, DaemonStatusRequest, GcRequest, MetricsRequest, MigrateRequest, ReloadRequest,
    ShutdownRequest,
};

use super::Ctx;
use crate::connect::{self, Daemon};
use crate::exit::Failure;
use crate::term;

async fn existing(ctx: &Ctx) -> Result<Daemon, Failure> {
    connect::connect_with(&ctx.socket, false).await
}

/// The Prometheus exposition as the daemon renders it (with `--json`:
/// `{"text": …}`).
pub async fn metrics(ctx: &mut Ctx) -> Result<(), Failure> {
    let mut daemon = existing(ctx).await?;
    let m = daemon
        .call(async move |c| c.metrics(MetricsRequest {}).await)
        .await?;
    if ctx.json {
        return ctx.out.json(&json!({ "text": m.text }));
    }
    ctx.out.line(&m.text)
}

/// `name  value` lines, or one JSON object.
pub async fn status(ctx: &mut Ctx) -> Result<(), Failure> {
    let mut daemon = existing(ctx).await?;
    let s = daemon
        .call(async move |c| c.daemon_status(DaemonStatusRequest {}).await)
        .await?;
    if ctx.json {
        return ctx.out.json(&json!({
            "pid": s.pid,
            "version": s.version,
            "api_version": s.api_version,
            "uptime_secs": s.uptime_secs,
            "root": s.root,
            "socket": s.socket,
            "transactions": s.transactions,
            "modules": s.modules,
            "open_streams": s.open_streams,
            "durability": s.durability,
            "read_only": s.read_only,
            "pending_repairs": s.pending_repairs,
        }));
    }
    let mode = if s.read_only.is_empty() {
        "read-write".to_string()
    } else {
        format!("read-only ({}): writes are refused", s.read_only)
    };
    let rows = [
        ("pid", s.pid.to_string()),
        ("version", format!("{} (API v{})", s.version, s.api_version)),
        ("uptime", uptime(s.uptime_secs)),
        ("tree", s.root),
        ("socket", s.socket),
        (
            "transactions",
            format!("{} in {} module(s)", s.transactions, s.modules),
        ),
        ("open streams", s.open_streams.to_string()),
        ("durability", s.durability),
        ("mode", mode),
    ];
    for (k, v) in rows {
        ctx.out.line(&format!("{k:<13} {v}"))?;
    }
    for r in &s.pending_repairs {
        ctx.out.line(&format!("{:<13} {r}", "pending"))?;
    }
    Ok(())
}

/// Asks for a graceful shutdown, then waits (up to 30 s) until the
/// daemon's process is gone, so a script can start another at once.
pub async fn stop(ctx: &mut Ctx) -> Result<(), Failure> {
    let mut daemon = existing(ctx).await?;
    let pid = daemon
        .call(async move |c| c.daemon_status(DaemonStatusRequest {}).await)
        .await?
        .pid;
    daemon
        .call(async move |c| c.shutdown(ShutdownRequest {}).await)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if ctx.json {
        ctx.out.json(&json!({ "stopped": pid }))
    } else {
        ctx.out.line(&format!("ttmd (pid {pid}) stopped"))
    }
}

/// Prints what the reload re-read or refused, one line each.
pub async fn reload(ctx: &mut Ctx) -> Result<(), Failure> {
    let mut daemon = existing(ctx).await?;
    let reply = daemon
        .call(async move |c| c.reload(ReloadRequest {}).await)
        .await?;
    if ctx.json {
        return ctx.out.json(&json!({ "report": reply.report }));
    }
    for line in reply.report {
        ctx.out.line(&line)?;
    }
    Ok(())
}

/// Whether process `pid` still runs: it exists and is not a zombie waiting
/// for its parent to reap it (its work is over either way).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Moves finished transactions into the archive; a dry run without `yes`.
pub async fn archive(
    ctx: &mut Ctx,
    older_than: u64,
    stage: String,
    yes: bool,
) -> Result<(), Failure> {
    let request = ArchiveRequest {
        module: ctx.module.clone(),
        older_than_secs: older_than,
        stage,
        apply: yes,
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.archive(request).await).await?;
    report(ctx, "archive", "archived", reply.txn_ids, reply.applied)
}

/// Deletes archived transactions; a dry run without `yes`.
pub async fn gc(ctx: &mut Ctx, older_than: u64, keep: u32, yes: bool) -> Result<(), Failure> {
    let request = GcRequest {
        module: ctx.module.clone(),
        older_than_secs: older_than,
        keep,
        apply: yes,
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.gc(request).await).await?;
    report(ctx, "delete", "deleted", reply.txn_ids, reply.applied)
}

/// `migrate`: says what it would move, or moved, one line per transaction.
pub async fn migrate(ctx: &mut Ctx, yes: bool) -> Result<(), Failure> {
    let request = MigrateRequest {
        module: ctx.module.clone(),
        apply: yes,
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.migrate(request).await).await?;
    let moves: Vec<_> = reply
        .migrations
        .iter()
        .map(|m| json!({"txn_id": m.txn_id, "from": m.from, "to": m.to}))
        .collect();
    if ctx.json {
        return ctx
            .out
            .json(&json!({ "applied": reply.applied, "migrations": moves }));
    }
    let n = reply.migrations.len();
    ctx.out.line(&if reply.applied {
        format!("moved {n} transaction(s)")
    } else {
        format!("would move {n} transaction(s) (dry run; add --yes to do it)")
    })?;
    for m in &reply.migrations {
        ctx.out.line(&format!(
            "  {}  {} → {}",
            term::clean(&m.txn_id),
            term::clean(&m.from),
            term::clean(&m.to)
        ))?;
    }
    Ok(())
}

fn report(
    ctx: &mut Ctx,
    verb: &str,
    done: &str,
    ids: Vec<String>,
    applied: bool,
) -> Result<(), Failure> {
    if ctx.json {
        return ctx.out.json(&json!({ "applied": applied, "txn_ids": ids }));
    }
    if ids.is_empty() {
        ctx.out.line(&format!("nothing to {verb}"))?;
    } else if applied {
        ctx.out
            .line(&format!("{done} {} transaction(s)", ids.len()))?;
    } else {
        ctx.out.line(&format!(
            "would {verb} {} transaction(s) (dry run; add --yes to do it)",
            ids.len()
        ))?;
    }
    for id in ids {
        ctx.out.line(&format!("  {id}"))?;
    }
    Ok(())
}
