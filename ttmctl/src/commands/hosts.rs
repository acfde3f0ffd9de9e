//! `ttmctl hosts`: the daemons of the cluster (SPEC §16), with liveness
//! and mirror lag.

use serde_json::json;
use ttm_proto::v1::{HostInfo, ListHostsRequest};

use super::Ctx;
use crate::exit::Failure;

pub async fn list(ctx: &mut Ctx) -> Result<(), Failure> {
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.list_hosts(ListHostsRequest {}).await)
        .await?;
    if ctx.json {
        let hosts: Vec<_> = reply
            .hosts
            .iter()
            .map(|h| {
                json!({
                    "host_id": h.host_id, "alive": h.alive, "this_host": h.this_host,
                    "version": h.version, "pid": h.pid, "started": h.started,
                    "mirror_lag_events": h.mirror_lag_events,
                    "mirror_lag_txns": h.mirror_lag_txns,
                })
            })
            .collect();
        return ctx
            .out
            .json(&json!({ "hosts": hosts, "endpoints": reply.endpoints }));
    }
    for h in &reply.hosts {
        ctx.out.line(&host_line(h))?;
    }
    Ok(())
}

/// One host as a line: id, liveness, lag, who and since when.
pub fn host_line(h: &HostInfo) -> String {
    let me = if h.this_host { " (this host)" } else { "" };
    let alive = if h.alive { "alive" } else { "gone" };
    let lag = match (h.mirror_lag_events, h.mirror_lag_txns) {
        (0, _) => "mirror up to date".to_owned(),
        (events, txns) => format!("mirror {events} events behind in {txns} transactions"),
    };
    format!(
        "{}{me}  {alive}  {lag}  ttmd {} pid {} since {}",
        h.host_id, h.version, h.pid, h.started
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_line_says_liveness_and_lag() {
        let h = HostInfo {
            host_id: "ci-1".into(),
            alive: true,
            this_host: true,
            version: "0.1.0".into(),
            pid: 7,
            started: "2026-12-01T00:00:00Z".into(),
            mirror_lag_events: 3,
            mirror_lag_txns: 1,
        };
        let line = host_line(&h);
        assert!(
            line.starts_with("ci-1 (this host)  alive  mirror 3 events behind"),
            "{line}"
        );
    }
}
