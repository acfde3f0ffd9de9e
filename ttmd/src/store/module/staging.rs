//! What lets creations in one module overlap: ids and request ids reserved
//! in memory (so each creation writes its directory outside the module
//! lock), one `txns/` sync shared by the creations waiting for it (group
//! commit, like a log's), and the files creations left for the checkpoint
//! to sync.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use super::lock;
use crate::core::Result;
use crate::store::fsio::{self, Durability};
use crate::store::txn::Txn;

/// What concurrent creations in one module share.
#[derive(Debug, Default)]
pub(super) struct Creations {
    /// Ids and request ids of creations under way.
    pub ids: Creating,
    /// The `txns/` sync creations share.
    pub txns_sync: DirSync,
    /// Derived files creations left for the checkpoint to sync.
    pub unsynced: Unsynced,
}

/// Ids and create request ids of creations under way.
#[derive(Debug, Default)]
pub(super) struct Creating {
    ids: Mutex<(HashSet<String>, HashSet<String>)>,
    /// Signalled when a creation ends, for one waiting on its request id.
    ended: Condvar,
}

/// A reserved id (and request id), released when dropped.
pub(super) struct Reservation<'a> {
    creating: &'a Creating,
    pub id: String,
    request_id: Option<String>,
}

impl Creating {
    /// Waits while a creation with request id `rid` is under way, then
    /// runs `done` (which looks up what that request created) and, when
    /// it gives nothing, reserves `rid` and the first id `pick` accepts
    /// (`pick(n)` gives the n-th candidate, `None` when taken on disk).
    pub fn reserve<T>(
        &self,
        rid: Option<&str>,
        done: impl Fn() -> Option<T>,
        pick: impl Fn(u32) -> Option<String>,
    ) -> std::result::Result<Reservation<'_>, T> {
        let mut held = lock(&self.ids);
        if let Some(rid) = rid {
            loop {
                if let Some(found) = done() {
                    return Err(found);
                }
                if !held.1.contains(rid) {
                    break;
                }
                held = self.ended.wait(held).unwrap_or_else(|p| p.into_inner());
            }
            held.1.insert(rid.to_string());
        }
        let mut n = 1;
        let id = loop {
            match pick(n) {
                Some(id) if !held.0.contains(&id) => break id,
                _ => n += 1,
            }
        };
        held.0.insert(id.clone());
        Ok(Reservation {
            creating: self,
            id,
            request_id: rid.map(str::to_string),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.creating.ids);
        held.0.remove(&self.id);
        if let Some(rid) = &self.request_id {
            held.1.remove(rid);
        }
        drop(held);
        self.creating.ended.notify_all();
    }
}

/// One directory's fsync shared by everyone who changed it meanwhile.
#[derive(Debug, Default)]
pub(super) struct DirSync {
    /// (syncs started, syncs finished well, one running).
    rounds: Mutex<(u64, u64, bool)>,
    done: Condvar,
}

impl DirSync {
    /// Returns once a sync of `dir` that began after this call has
    /// finished: the first caller syncs, those arriving meanwhile wait and
    /// are covered by the next round.
    pub fn sync(&self, dir: &Path, durability: Durability) -> Result<()> {
        if !durability.syncs() {
            return Ok(());
        }
        let mut rounds = lock(&self.rounds);
        let needed = rounds.0 + 1;
        loop {
            if rounds.1 >= needed {
                return Ok(());
            }
            if !rounds.2 {
                break;
            }
            rounds = self.done.wait(rounds).unwrap_or_else(|p| p.into_inner());
        }
        rounds.0 += 1;
        let round = rounds.0;
        rounds.2 = true;
        drop(rounds);
        let result = crate::metrics::WRITE
            .fsync
            .time(|| fsio::sync_dir(dir, durability));
        let mut rounds = lock(&self.rounds);
        rounds.2 = false;
        if result.is_ok() {
            rounds.1 = rounds.1.max(round);
        }
        drop(rounds);
        self.done.notify_all();
        result
    }
}

/// Transactions whose derived files (initial ctx files, `state.json`) a
/// creation left unsynced, with the ctx files' names; the checkpoint syncs
/// them.
#[derive(Debug, Default)]
pub(super) struct Unsynced(Mutex<Vec<(Arc<Txn>, Vec<String>)>>);

impl Unsynced {
    pub fn push(&self, txn: Arc<Txn>, names: Vec<String>) {
        lock(&self.0).push((txn, names));
    }

    /// Syncs them all with one `syncfs` of the file system holding `dir`
    /// (a round of creations costs one call, not five syncs each), or file
    /// by file if that fails; those that fail stay for the next round.
    pub fn sync(&self, dir: &Path) {
        let pending = std::mem::take(&mut *lock(&self.0));
        if pending.is_empty() {
            return;
        }
        let whole = fsio::open_dir(dir).and_then(|d| Ok(rustix::fs::syncfs(&d)?));
        if whole.is_ok() {
            return;
        }
        for (txn, names) in pending {
            if let Err(e) = txn.sync_created(&names) {
                tracing::warn!(txn = %txn.id, error = %e, "cannot sync a new transaction's files; will retry");
                self.push(txn, names);
            }
        }
    }
}
