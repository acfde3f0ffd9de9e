//! The cursors and the keys in etcd checked against etcd's record, once
//! per session (and after a missed change of a module's feed).
//!
//! The cursor file says how far each log was pushed; etcd may have lost
//! that (a cluster rebuilt from scratch, restored from an older snapshot).
//! A cursor ahead of etcd's `mirror_seq` (or of an absent state key) would
//! leave those lines unpushed for good, so it is lowered to etcd's record
//! and the sweep pushes again from there.
//!
//! The other way round, etcd may hold transactions of this host that are
//! gone here: their keys are deleted when the module's feed announces an
//! archive or a removal, and that is remembered only in memory, so a daemon
//! killed (or a feed that lagged) before the deletion reached etcd would
//! leave them there for good, a ghost in every other host's `list`. Every
//! state key homed here whose transaction is neither served nor on disk
//! here is handed back to be deleted.
//!
//! One prefix read of the state keys per module, at each (re)registration:
//! a new session is when etcd may have changed under us.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::cursor::Cursors;
use super::{Cluster, keys};
use crate::store::module::Module;

/// (module, txn) of a transaction whose keys are to go.
pub(super) type Ghost = (String, String);

/// [`recheck`] once per session: `checked` is the session last checked
/// (`None` asks for a recheck at the next call). Returns the ghosts found.
pub(super) async fn per_session(
    cluster: &Cluster,
    cursors: &Cursors,
    modules: &[Arc<Module>],
    checked: &mut Option<i64>,
) -> Vec<Ghost> {
    let session = cluster.session_id();
    if session.is_none() || session == *checked {
        return Vec::new();
    }
    match recheck(cluster, cursors, modules).await {
        Some(ghosts) => {
            *checked = session;
            ghosts
        }
        None => Vec::new(),
    }
}

/// Lowers every cursor of `modules` to what etcd records as pushed, and
/// returns the transactions etcd has homed here that are gone here; `None`
/// when etcd could not be read (try again later).
pub(super) async fn recheck(
    cluster: &Cluster,
    cursors: &Cursors,
    modules: &[Arc<Module>],
) -> Option<Vec<Ghost>> {
    let mut ghosts = Vec::new();
    for m in modules {
        let module = &m.name;
        let prefix = keys::states(module);
        let range = match cluster.etcd().prefix(prefix.as_bytes()).await {
            Ok(range) => range,
            Err(e) => {
                tracing::debug!("mirror: etcd's record not checked yet: {e}");
                return None;
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
        ghosts.extend(gone_here(m, record.into_keys()));
    }
    Some(ghosts)
}

/// The transactions of `in_etcd` (ids of module `m` homed here in etcd)
/// that this host no longer has: neither served nor in `txns/`. Called
/// after etcd's range was read: a transaction created since is not in it,
/// and one still here now was here then.
fn gone_here(m: &Module, in_etcd: impl Iterator<Item = String>) -> Vec<Ghost> {
    let module = &m.name;
    // A txns/ that cannot be listed now would make every transaction look
    // gone: decide nothing about this module this time.
    let listed = std::fs::read_dir(&m.txns_dir).and_then(|list| {
        list.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<String>>>()
    });
    let on_disk = match listed {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(%module, error = %e, "cannot list txns/; etcd's keys of transactions gone here are looked at again next session");
            return Vec::new();
        }
    };
    let here: HashSet<String> = m.served_ids().into_iter().chain(on_disk).collect();
    in_etcd
        .filter(|id| !here.contains(id))
        .map(|id| {
            tracing::info!(%module, txn = %id, "etcd still has a transaction this host no longer has (archived or removed); deleting its keys");
            (module.clone(), id)
        })
        .collect()
}
