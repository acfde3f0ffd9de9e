//! The cursors checked against etcd's record, once per session.
//!
//! The cursor file says how far each log was pushed; etcd may have lost
//! that (a cluster rebuilt from scratch, restored from an older snapshot).
//! A cursor ahead of etcd's `mirror_seq` (or of an absent state key) would
//! leave those lines unpushed for good, so it is lowered to etcd's record
//! and the sweep pushes again from there. One prefix read of the state
//! keys per module, at each (re)registration: a new session is when etcd
//! may have changed under us.

use std::collections::HashMap;

use serde_json::Value;

use super::cursor::Cursors;
use super::{Cluster, keys};

/// [`recheck`] once per session: `checked` is the session last checked.
pub(super) async fn per_session(
    cluster: &Cluster,
    cursors: &Cursors,
    modules: &[std::sync::Arc<crate::store::module::Module>],
    checked: &mut Option<i64>,
) {
    let session = cluster.session_id();
    if session.is_none() || session == *checked {
        return;
    }
    let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    if recheck(cluster, cursors, &names).await {
        *checked = session;
    }
}

/// Lowers every cursor of `modules` to what etcd records as pushed; false
/// when etcd could not be read (try again later).
pub(super) async fn recheck(cluster: &Cluster, cursors: &Cursors, modules: &[String]) -> bool {
    for module in modules {
        let prefix = keys::states(module);
        let range = match cluster.etcd().prefix(prefix.as_bytes()).await {
            Ok(range) => range,
            Err(e) => {
                tracing::debug!("mirror: etcd's record not checked yet: {e}");
                return false;
            }
        };
        let mut record: HashMap<String, u64> = HashMap::new();
        for kv in range.kvs {
            let Some(id) = std::str::from_utf8(&kv.key)
                .ok()
                .and_then(|k| k.strip_prefix(&prefix))
            else {
                continue;
            };
            let Ok(value) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if value.get("home").and_then(Value::as_str) == Some(cluster.host_id()) {
                let seq = value.get("mirror_seq").and_then(Value::as_u64).unwrap_or(0);
                record.insert(id.to_owned(), seq);
            }
        }
        for (id, seq) in cursors.of_module(module) {
            let known = record.get(&id).copied().unwrap_or(0);
            if known < seq {
                tracing::warn!(
                    module = %module, txn = %id, cursor = seq, etcd = known,
                    "etcd lost part of this transaction's mirror (rebuilt or restored?); pushing it again from seq {}",
                    known + 1
                );
                cursors.set(module, &id, known);
            }
        }
    }
    true
}
