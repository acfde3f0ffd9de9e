//! TES targets: resolving a transaction's target, reading a connector.

use serde_json::{Value, json};
use ttm_proto::v1::{GetConnectorRequest, ResolveRequest};

use super::{Ctx, preconditions};
use crate::cli::Guards;
use crate::exit::Failure;
use crate::output::{parse_json, pretty};

/// Prints the plan (e.g. `staging.local`); `--json` prints
/// `{"target", "plan", "connector": {...}}`.
pub async fn resolve(ctx: &mut Ctx, id: &str, guards: &Guards) -> Result<(), Failure> {
    let request = ResolveRequest {
        txn: ctx.txn(id),
        pre: preconditions(guards),
    };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon.call(async move |c| c.resolve(request).await).await?;
    if ctx.json {
        let connector = if reply.connector_json.trim().is_empty() {
            Value::Null
        } else {
            parse_json("a connector", &reply.connector_json)?
        };
        ctx.out.json(&json!({
            "target": reply.target,
            "plan": reply.plan,
            "connector": connector,
        }))
    } else {
        ctx.out.line(&reply.plan)
    }
}

/// The connector entry, pretty-printed, in both modes.
pub async fn connector(ctx: &mut Ctx, target: String) -> Result<(), Failure> {
    let request = GetConnectorRequest { target };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.get_connector(request).await)
        .await?;
    let connector = parse_json("a connector", &reply.connector_json)?;
    ctx.out.line(&pretty(&connector))
}
