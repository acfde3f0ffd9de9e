//! `ListLeases` in cluster mode: every host's holders and waiters, read
//! from etcd's lease keys (`etcd.rs`), beside what this host's table knows.
//!
//! etcd is the cluster's record: a name's holder and queue (in
//! create-revision order, the order they are granted in) are etcd's. This
//! host's table adds what only it knows of its own: a holder's exact expiry
//! and a waiter's `since`. A name only this host's table has (a holder
//! whose key lapsed, not yet logged `lease_expired`) is listed as the
//! table has it.

use std::collections::BTreeMap;

use serde_json::Value;
use ttm_etcd::KeyValue;

use super::etcd::{HolderCard, holder_key};
use super::{HolderView, LeaseView};
use crate::cluster::Cluster;
use crate::core::Result;
use crate::core::lease::Waiter;

/// Every lease etcd records, holders with the time their etcd lease has
/// left. Refused (exit 12) while etcd is unreachable.
pub async fn read(cluster: &Cluster) -> Result<Vec<LeaseView>> {
    let what = "listing the cluster's leases";
    cluster.require(what)?;
    let prefix = holder_key("");
    let range = cluster.note(what, cluster.etcd().prefix(prefix.as_bytes()).await)?;
    let mut views = parse(&prefix, &range.kvs);
    for view in &mut views {
        let Some(holder) = view.holder.as_mut() else {
            continue;
        };
        let lease = range
            .kvs
            .iter()
            .find(|kv| kv.key == holder_key(&view.name).as_bytes())
            .map_or(0, |kv| kv.lease);
        if lease != 0 {
            let ttl = cluster.note(what, cluster.etcd().lease_time_to_live(lease).await)?;
            holder.expires_in_ms = u64::try_from(ttl).unwrap_or(0) * 1000;
        }
    }
    Ok(views)
}

/// The leases the keys under `prefix` (`/ttm/v1/ttm/lease/`) record:
/// `<name>` a holder, `<name>/q/<module>/<txn>` a waiter.
fn parse(prefix: &str, kvs: &[KeyValue]) -> Vec<LeaseView> {
    let mut names: BTreeMap<String, LeaseView> = BTreeMap::new();
    for kv in kvs {
        let Some(rest) = std::str::from_utf8(&kv.key)
            .ok()
            .and_then(|k| k.strip_prefix(prefix))
        else {
            continue;
        };
        match rest.split_once("/q/") {
            None => {
                let Ok(card) = serde_json::from_slice::<HolderCard>(&kv.value) else {
                    continue;
                };
                let token = u64::try_from(kv.create_revision).unwrap_or(0);
                let view = entry(&mut names, rest);
                view.last_token = token;
                view.holder = Some(HolderView {
                    txn: (card.module, card.txn),
                    host: card.host,
                    since: card.since,
                    token,
                    ttl_ms: card.ttl_ms,
                    expires_in_ms: 0,
                });
            }
            Some((name, txn)) => {
                let Some((module, id)) = txn.split_once('/') else {
                    continue;
                };
                let card: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                let waiter = Waiter {
                    txn: (module.to_owned(), id.to_owned()),
                    ticket: u64::try_from(kv.create_revision).unwrap_or(0),
                    ttl_ms: card.get("ttl_ms").and_then(Value::as_u64).unwrap_or(0),
                    since: String::new(),
                };
                entry(&mut names, name).queue.push(waiter);
            }
        }
    }
    // The lowest create-revision is granted next.
    names
        .into_values()
        .map(|mut view| {
            view.queue.sort_by_key(|w| w.ticket);
            view
        })
        .collect()
}

/// The view of `name` in `names`, added empty if absent.
fn entry<'a>(names: &'a mut BTreeMap<String, LeaseView>, name: &str) -> &'a mut LeaseView {
    names.entry(name.to_owned()).or_insert_with(|| LeaseView {
        name: name.to_owned(),
        holder: None,
        queue: Vec::new(),
        last_token: 0,
    })
}

/// etcd's leases (`cluster`) with what this host's table (`local`) knows
/// of its own, by name.
pub fn merge(local: Vec<LeaseView>, cluster: Vec<LeaseView>) -> Vec<LeaseView> {
    let mut mine: BTreeMap<String, LeaseView> =
        local.into_iter().map(|l| (l.name.clone(), l)).collect();
    let mut merged: BTreeMap<String, LeaseView> = BTreeMap::new();
    for mut view in cluster {
        if let Some(here) = mine.remove(&view.name) {
            if let (Some(h), Some(ours)) = (view.holder.as_mut(), here.holder.as_ref())
                && h.txn == ours.txn
                && h.token == ours.token
            {
                h.expires_in_ms = ours.expires_in_ms;
            }
            for w in &mut view.queue {
                if let Some(ours) = here.queue.iter().find(|o| o.txn == w.txn) {
                    w.since.clone_from(&ours.since);
                }
            }
            view.last_token = view.last_token.max(here.last_token);
        }
        merged.insert(view.name.clone(), view);
    }
    merged.extend(mine);
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: revision,
            ..KeyValue::default()
        }
    }

    const P: &str = "/ttm/v1/ttm/lease/";

    fn cluster() -> Vec<LeaseView> {
        let holder = r#"{"module":"ttm","txn":"t-a","host":"host-a","since":"S","ttl_ms":30000}"#;
        let waiter =
            |host: &str| format!(r#"{{"module":"ttm","txn":"x","host":"{host}","ttl_ms":5000}}"#);
        parse(
            P,
            &[
                kv("/ttm/v1/ttm/lease/prod", holder, 7),
                kv("/ttm/v1/ttm/lease/prod/q/ttm/t-c", &waiter("host-b"), 12),
                kv("/ttm/v1/ttm/lease/prod/q/ttm/t-b", &waiter("host-b"), 9),
                kv("/ttm/v1/ttm/lease/qa/q/m2/t-d", &waiter("host-a"), 11),
            ],
        )
    }

    #[test]
    fn etcd_keys_give_each_names_holder_token_and_queue_in_revision_order() {
        let views = cluster();
        assert_eq!(views.len(), 2);
        let prod = &views[0];
        assert_eq!(prod.name, "prod");
        let h = prod.holder.as_ref().expect("holder");
        assert_eq!(
            (h.txn.1.as_str(), h.host.as_str(), h.token),
            ("t-a", "host-a", 7)
        );
        let queue: Vec<&str> = prod.queue.iter().map(|w| w.txn.1.as_str()).collect();
        assert_eq!(queue, ["t-b", "t-c"]);
        assert_eq!(prod.last_token, 7);
        assert!(views[1].holder.is_none());
        assert_eq!(views[1].queue[0].txn, ("m2".to_owned(), "t-d".to_owned()));
    }

    #[test]
    fn this_hosts_table_adds_its_expiry_and_since_and_its_own_names() {
        let mut local = cluster();
        local.truncate(1);
        let here = &mut local[0];
        if let Some(h) = here.holder.as_mut() {
            h.expires_in_ms = 1234;
        }
        here.queue.truncate(1);
        here.queue[0].since = "T".into();
        here.last_token = 3;
        let mut stale = here.clone();
        stale.name = "old".into();
        local.push(stale);
        let merged = merge(local, cluster());
        let names: Vec<&str> = merged.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["old", "prod", "qa"]);
        let prod = &merged[1];
        assert_eq!(prod.holder.as_ref().map(|h| h.expires_in_ms), Some(1234));
        assert_eq!(prod.queue[0].since, "T");
        assert_eq!(prod.queue[1].since, "");
        assert_eq!(prod.last_token, 7);
    }
}
