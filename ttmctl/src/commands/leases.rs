//! Leases (SPEC §13): acquire (waiting in the queue, with the holder and
//! the position on stderr), release, list, heartbeat.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{Value, json};
use ttm_proto::v1::{
    AcquireLeaseRequest, HeartbeatRequest, LeaseHolder, ListLeasesRequest, ReleaseLeaseRequest,
    WaitPolicy,
};

use super::Ctx;
use crate::cli::WaitArgs;
use crate::connect::Daemon;
use crate::exit::{Exit, Failure};

/// The wait policy the flags ask for.
pub fn policy(wait: &WaitArgs) -> WaitPolicy {
    if wait.skip_if_busy {
        WaitPolicy::Skip
    } else if wait.no_wait {
        WaitPolicy::NoWait
    } else {
        WaitPolicy::Wait
    }
}

/// With `--skip-if-busy`, "busy" is no failure: one line on stderr, exit 0.
pub fn skip_if_busy(f: Failure, wait: &WaitArgs) -> Result<(), Failure> {
    if f.exit == Exit::Busy && wait.skip_if_busy {
        eprintln!(
            "ttmctl: skipped (--skip-if-busy), nothing done: {}",
            f.message
        );
        return Ok(());
    }
    Err(f)
}

fn holder_text(h: &Option<LeaseHolder>) -> String {
    match h {
        Some(h) => format!(
            "held by {} on {} since {} (token {})",
            h.txn_id, h.host, h.since, h.token
        ),
        None => "being handed over".to_owned(),
    }
}

/// Asks for `name` for the transaction and waits for the grant, showing
/// who holds it and the position: one updating line on a terminal, plain
/// lines when stderr is piped. Returns the fencing token.
pub async fn wait_for(
    ctx: &Ctx,
    daemon: &mut Daemon,
    txn_id: &str,
    name: &str,
    ttl_ms: u64,
    wait: WaitArgs,
) -> Result<u64, Failure> {
    let request = AcquireLeaseRequest {
        txn: ctx.txn(txn_id),
        name: name.to_owned(),
        ttl_ms,
        wait_policy: policy(&wait) as i32,
        wait_timeout_ms: wait.wait_timeout.unwrap_or(0),
    };
    let mut stream = daemon
        .call(async move |c| c.acquire_lease(request).await)
        .await?;
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(Failure::other(
                    "ttmd ended the lease wait without an answer",
                ));
            }
            Err(status) => {
                if shown && tty {
                    eprintln!();
                }
                return Err(daemon.explain(status).await);
            }
        };
        if msg.granted {
            if shown && tty {
                eprintln!();
            }
            return Ok(msg.token);
        }
        let line = format!(
            "waiting for {name}: {}, position {} in the queue",
            holder_text(&msg.holder),
            msg.position
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
        shown = true;
    }
}

pub async fn acquire(
    ctx: &mut Ctx,
    txn_id: &str,
    name: &str,
    ttl_ms: u64,
    wait: WaitArgs,
) -> Result<(), Failure> {
    let mut daemon = ctx.daemon().await?;
    let token = match wait_for(ctx, &mut daemon, txn_id, name, ttl_ms, wait).await {
        Ok(t) => t,
        Err(f) => return skip_if_busy(f, &wait),
    };
    if ctx.json {
        ctx.out.json(&json!({ "name": name, "token": token }))
    } else {
        ctx.out.line(&token.to_string())
    }
}

pub async fn release(ctx: &mut Ctx, txn_id: &str, name: &str) -> Result<(), Failure> {
    let request = ReleaseLeaseRequest {
        txn: ctx.txn(txn_id),
        name: name.to_owned(),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.release_lease(request).await)
        .await?;
    if ctx.json {
        return ctx
            .out
            .json(&json!({ "name": name, "released": reply.released }));
    }
    if !reply.released {
        eprintln!("ttmctl: the transaction neither held nor awaited {name}; nothing to release");
    }
    Ok(())
}

pub async fn heartbeat(ctx: &mut Ctx, txn_id: &str) -> Result<(), Failure> {
    let request = HeartbeatRequest {
        txn: ctx.txn(txn_id),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.heartbeat(request).await)
        .await?;
    if ctx.json {
        ctx.out.json(&json!({ "renewed": reply.renewed }))
    } else {
        Ok(())
    }
}

fn age(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    format!("{:.1}s", d.as_secs_f64())
}

/// `--json`: `{"leases": [{name, holder: {...}|null, queue: [...],
/// last_token}]}` (docs/json.md). Human: one line per lease, then its queue.
pub async fn list(ctx: &mut Ctx) -> Result<(), Failure> {
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.list_leases(ListLeasesRequest {}).await)
        .await?;
    if ctx.json {
        let leases: Vec<Value> = reply
            .leases
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "holder": l.holder.as_ref().map(|h| json!({
                        "module": h.module, "txn_id": h.txn_id, "host": h.host,
                        "since": h.since, "token": h.token, "ttl_ms": h.ttl_ms,
                        "expires_in_ms": h.expires_in_ms,
                    })),
                    "queue": l.queue.iter().map(|w| json!({
                        "module": w.module, "txn_id": w.txn_id, "since": w.since,
                    })).collect::<Vec<_>>(),
                    "last_token": l.last_token,
                })
            })
            .collect();
        return ctx.out.json(&json!({ "leases": leases }));
    }
    if reply.leases.is_empty() {
        return ctx.out.line("no leases held or awaited");
    }
    for l in &reply.leases {
        let head = match &l.holder {
            Some(h) => format!(
                "{}  token {}  {}/{} on {} since {}  expires in {}",
                l.name,
                h.token,
                h.module,
                h.txn_id,
                h.host,
                h.since,
                age(h.expires_in_ms)
            ),
            None => format!("{}  (free, being handed over)", l.name),
        };
        ctx.out.line(&head)?;
        for (i, w) in l.queue.iter().enumerate() {
            let line = format!(
                "  {}. {}/{} waiting since {}",
                i + 1,
                w.module,
                w.txn_id,
                w.since
            );
            ctx.out.line(&line)?;
        }
    }
    Ok(())
}
