//! Transaction directories that came or went behind the daemon's back.

use std::fs;

use chrono::Utc;

use super::{ACTIVE_LINK, Change, ChangeKind, Module, lock, read};
use crate::core::id;
use crate::core::state;

impl Module {
    /// Brings the loaded set in line with `txns/<id>` on disk after a
    /// change made behind the daemon's back: a directory copied or moved in
    /// is loaded (watchers hear `created`), one removed is forgotten (its
    /// followers end, watchers hear `removed`).
    pub fn reconcile_dir(&self, id: &str) {
        if id == ACTIVE_LINK || id::validate_txn_id(id).is_err() {
            return;
        }
        let _guard = lock(&self.module_lock);
        let dir = self.txns_dir.join(id);
        let present = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        let gone = if present {
            None
        } else {
            self.drop_finished(id)
        };
        if let Some(gone) = gone {
            lock(&self.quarantined).remove(id);
            tracing::warn!(module = %self.name, txn = %id,
                "a finished transaction was removed from the tree");
            self.tell(Change {
                kind: ChangeKind::Removed,
                lease: None,
                txn_id: id.to_string(),
                from: gone.stage().to_string(),
                to: String::new(),
                seq: gone.seq,
                ts: state::timestamp(Utc::now()),
                warning: String::new(),
            });
            return;
        }
        if present && read(&self.finished).contains_key(id) {
            return;
        }
        let loaded = read(&self.txns).get(id).cloned();
        match (present, loaded) {
            (true, None) => self.serve_appeared(id),
            (false, Some(_)) => {
                self.stop_serving(
                    id,
                    "a transaction was removed from the tree; no longer serving it",
                );
            }
            (false, None) => {
                lock(&self.quarantined).remove(id);
            }
            (true, Some(_)) => {}
        }
    }

    /// Loads a directory that appeared in the tree and announces it.
    fn serve_appeared(&self, id: &str) {
        if let Ok((txn, true)) = self.load_new(id) {
            tracing::info!(module = %self.name, txn = %id, "a transaction appeared in the tree; serving it");
            let s = txn.state();
            self.tell(Change {
                kind: ChangeKind::Created,
                lease: None,
                txn_id: id.to_string(),
                from: String::new(),
                to: s.stage.clone(),
                seq: s.seq,
                ts: s.last_checkpoint.clone(),
                warning: String::new(),
            });
        }
    }

    /// Stops serving a loaded transaction whose log was replaced under it
    /// (its followers end); the watcher loads it again from disk, or
    /// quarantines it, once the directory has settled.
    pub fn forget(&self, id: &str) {
        let _guard = lock(&self.module_lock);
        self.stop_serving(
            id,
            "its log was removed or replaced behind ttmd's back; no longer serving it \
             (it is loaded again if a valid one is there)",
        );
    }

    /// Unloads `id` (its followers end), says `why` in the log and tells
    /// watchers it was removed. The caller holds the module lock.
    fn stop_serving(&self, id: &str, why: &str) {
        let Some(txn) = self.unload(id) else {
            return;
        };
        tracing::warn!(module = %self.name, txn = %id, "{why}");
        let s = txn.state();
        self.tell(Change {
            kind: ChangeKind::Removed,
            lease: None,
            txn_id: id.to_string(),
            from: s.stage.clone(),
            to: String::new(),
            seq: s.seq,
            ts: state::timestamp(Utc::now()),
            warning: String::new(),
        });
    }
}
