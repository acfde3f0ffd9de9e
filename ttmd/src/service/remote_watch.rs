//! Cluster mode's `Watch`: this host's changes and, beside them, other
//! hosts' transactions as their state keys change in etcd.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use ttm_etcd::WatchItem;
use ttm_etcd::mvccpb::event::EventType;

use crate::cluster::{Cluster, keys};
use crate::shutdown::Shutdown;
use crate::store::module::{Change, ChangeKind};

/// Pause before watching etcd again after a lost watch.
const AGAIN: Duration = Duration::from_secs(1);

/// One feed of `local` changes and other hosts' changes of `module`; ends
/// (closed) when the watcher goes away or ttmd stops.
pub fn merged(
    cluster: Arc<Cluster>,
    module: String,
    mut local: broadcast::Receiver<Change>,
    shutdown: Shutdown,
) -> broadcast::Receiver<Change> {
    let (tx, rx) = broadcast::channel(1024);
    let to_watcher = tx.clone();
    tokio::spawn(async move {
        // Lagging here ends the feed (the watcher sees it close), as a
        // watcher that falls behind is ended.
        while let Ok(change) = local.recv().await {
            if to_watcher.send(change).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut stages: HashMap<String, String> = HashMap::new();
        let prefix = keys::states(&module);
        loop {
            let watch = cluster
                .etcd()
                .watch_prefix_with(prefix.as_bytes(), 0, true)
                .await;
            if let Ok(mut watch) = watch {
                loop {
                    let item = tokio::select! {
                        item = watch.next() => item,
                        () = shutdown.wait() => return,
                    };
                    let Ok(WatchItem::Events { events, .. }) = item else {
                        break;
                    };
                    for event in events {
                        let Some(kv) = event.kv else { continue };
                        let deleted = event.r#type == EventType::Delete as i32;
                        let before = event.prev_kv.as_ref().and_then(|p| stage_of(&p.value));
                        let change = remote_change(&cluster, &mut stages, &kv, before, deleted);
                        if let Some(change) = change
                            && tx.send(change).is_err()
                        {
                            return; // the watcher left
                        }
                    }
                }
            }
            if tx.receiver_count() == 0 {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(AGAIN) => {}
                () = shutdown.wait() => return,
            }
        }
    });
    rx
}

/// What a put or delete of another host's state key means to a watcher:
/// created, a new stage, committed, failed, archived; `None` for the pushes
/// that change no stage (and for this host's own keys).
fn remote_change(
    cluster: &Cluster,
    stages: &mut HashMap<String, String>,
    kv: &ttm_etcd::KeyValue,
    previous: Option<String>,
    deleted: bool,
) -> Option<Change> {
    let id = keys::last_segment(&kv.key)?.to_owned();
    let change = |kind, from: String, to: String, seq, ts| Change {
        kind,
        txn_id: id.clone(),
        from,
        to,
        seq,
        ts,
        warning: String::new(),
        lease: None,
    };
    if deleted {
        let from = stages.remove(&id).or(previous)?;
        return Some(change(
            ChangeKind::Archived,
            from.clone(),
            from,
            0,
            String::new(),
        ));
    }
    let object: Map<String, Value> = serde_json::from_slice(&kv.value).ok()?;
    let text = |k: &str| {
        object
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if text("home") == cluster.host_id() {
        return None;
    }
    let (stage, seq) = (
        text("stage"),
        object.get("seq").and_then(Value::as_u64).unwrap_or(0),
    );
    let before = stages.insert(id.clone(), stage.clone()).or(previous);
    let kind = match (before.as_deref(), stage.as_str()) {
        (Some(old), _) if old == stage => return None,
        (None, _) if kv.version == 1 => ChangeKind::Created,
        (_, "DONE") => ChangeKind::Committed,
        (_, "FAIL") => ChangeKind::Failed,
        _ => ChangeKind::StageChanged,
    };
    Some(change(
        kind,
        before.unwrap_or_default(),
        stage,
        seq,
        text("last_checkpoint"),
    ))
}

/// The stage in a state key's value.
fn stage_of(value: &[u8]) -> Option<String> {
    let object: Map<String, Value> = serde_json::from_slice(value).ok()?;
    Some(object.get("stage")?.as_str()?.to_owned())
}
