//! Publishing a round: the writer syncs the log for every request of its
//! round, then publishes `state.json`, the snapshot and the followers' end
//! mark;
//! the checkpoint's deferred view syncs; the seq → offset index.

use super::{CTX_DIR, Committed, EVENTS_FILE, MARK_EVERY, STATE_FILE, Txn, lock};
use crate::core::summary::Summary;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};

impl Txn {
    /// Makes the log durable as far as it is written, then moves the view
    /// (`state.json`, the snapshot, the followers' end mark) to that point,
    /// never past it. Run by the writer's turn holder only.
    pub(super) fn sync_and_publish(&self) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let (file, len, state) = {
            let mut inner = lock(&self.inner);
            let file = match &inner.log {
                Some(f) => f.try_clone(),
                // Syncing any descriptor of the file flushes its data.
                None => fsio::open_read(&path),
            }
            .map_err(|e| Error::io("syncing", &path, e))?;
            if inner.state.is_terminal() {
                // Finished: nothing more will be appended (retry reopens).
                inner.log = None;
            }
            (file, inner.len, inner.state.clone())
        };
        if self.durability != Durability::None {
            crate::metrics::WRITE
                .fsync
                .time(|| file.sync_data())
                .map_err(|e| Error::io("syncing", self.dir.join(EVENTS_FILE), e))?;
        }
        // The events are durable: the mutations have happened. If the view
        // cannot be replaced now, the next round rewrites it and start-up
        // rebuilds it, so the answer stays "done" rather than inviting a
        // duplicate retry.
        let _view = lock(&self.view);
        let view = self.durability.for_view();
        if self.durability.defers_view_sync() {
            self.view_dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Err(e) = fsio::atomic_write(
            &self.dir,
            STATE_FILE,
            state.to_pretty_json().as_bytes(),
            view,
        ) {
            tracing::warn!(txn = %self.id, error = %e, "state.json is behind the log until the next write");
        }
        let seq = state.seq;
        *lock(&self.snapshot) = state;
        self.committed.send_replace(Committed { seq, len });
        Ok(())
    }

    /// Syncs `state.json` and its directory if a replacement was left
    /// unsynced (see [`Durability::Fsync`]). Called by the checkpoint.
    pub fn sync_view(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.ctx_dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = fsio::sync_dir(&self.dir.join(CTX_DIR), self.durability)
        {
            self.ctx_dirty.store(true, Ordering::Release);
            return Err(e);
        }
        if !self
            .view_dirty
            .swap(false, std::sync::atomic::Ordering::AcqRel)
            || self.is_removed()
        {
            return Ok(());
        }
        let _view = lock(&self.view);
        let path = self.dir.join(STATE_FILE);
        let synced = fsio::open_read(&path).and_then(|f| f.sync_all());
        if let Err(e) = synced {
            self.view_dirty
                .store(true, std::sync::atomic::Ordering::Release);
            return Err(Error::io("syncing", path, e));
        }
        fsio::sync_dir(&self.dir, self.durability)
    }

    pub(super) fn mark(&self, seq: u64, offset: u64) {
        if seq % MARK_EVERY == 1 {
            let mut marks = lock(&self.marks);
            if marks.last().is_none_or(|&(s, _)| s < seq) {
                marks.push((seq, offset));
            }
        }
    }

    /// Where to start reading to reach line `seq`: the byte offset and seq
    /// of the nearest indexed line at or before it.
    pub fn seek(&self, seq: u64) -> (u64, u64) {
        let marks = lock(&self.marks);
        let i = marks.partition_point(|&(s, _)| s <= seq);
        match i {
            0 => (0, 1),
            _ => {
                let (s, o) = marks[i - 1];
                (o, s)
            }
        }
    }

    /// The summary to keep instead of this transaction, if it is finished
    /// and settled: DONE or FAIL, its log closed, its view synced, no sync
    /// running. The caller makes sure nobody else holds it.
    pub fn settled_summary(&self) -> Option<Summary> {
        use std::sync::atomic::Ordering;
        if self.is_removed() || self.view_dirty.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.inner.try_lock().ok()?;
        let writing = self.queue.try_lock().ok().is_none_or(|q| q.is_busy());
        if writing || inner.log.is_some() || !inner.state.is_terminal() {
            return None;
        }
        Some(Summary::of(&inner.state))
    }
}
