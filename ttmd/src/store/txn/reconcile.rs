//! Changes made behind the daemon's back: lines other programs appended
//! (folded and streamed like the daemon's own), a hand-edited `state.json`
//! (rebuilt from the log), a log removed or replaced (never appended to).

use std::fs;
use std::sync::Arc;

use super::{EVENTS_FILE, Inner, STATE_FILE, Txn, file_id, lock};
use crate::core::event::Logged;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log;

impl Txn {
    /// Whether the log at its path is no longer the one loaded (removed,
    /// replaced, or a symlink now).
    pub fn log_replaced(&self) -> bool {
        let path = self.dir.join(EVENTS_FILE);
        file_id(&path) != lock(&self.inner).log_id
    }

    /// Picks up lines another program appended to the log (complete lines
    /// only; a fragment waits for its writer), folds them and publishes them
    /// to followers. Our own appends are already counted and change nothing.
    pub fn reconcile_log(&self) -> Result<()> {
        if self.is_removed() {
            return Ok(());
        }
        let end = {
            let mut inner = lock(&self.inner);
            self.catch_up(&mut inner, false)?;
            inner.len
        };
        self.make_durable(end)
    }

    /// Brings a hand-edited `state.json` back in line with the log: if the
    /// file differs from the state folded from the log, it is rewritten,
    /// with a warning. Returns whether it had to.
    pub fn reconcile_state(&self) -> Result<bool> {
        if self.is_removed() {
            return Ok(false);
        }
        let _view = lock(&self.view);
        if !self.dir.is_dir() {
            return Ok(false); // being removed; the directory watch handles it
        }
        let want = self.state().to_pretty_json();
        let path = self.dir.join(STATE_FILE);
        // A missing file is left to the next write or start-up: recreating
        // it at once would fight an `rm -r` of the whole directory.
        let Ok(have) = fsio::read_file(&path) else {
            return Ok(false);
        };
        if have == want.as_bytes() {
            return Ok(false);
        }
        tracing::warn!(txn = %self.id, "state.json was changed behind ttmd's back and no longer matches the log; rebuilt it from the log");
        fsio::atomic_write(&self.dir, STATE_FILE, want.as_bytes(), self.durability)?;
        Ok(true)
    }

    /// Folds lines other programs appended since our last write, so the
    /// next seq is the next line number.
    /// With `end_fragment`, a final foreign fragment without its newline is
    /// ended (a mutation is about to append); without, it is left for its
    /// writer to finish.
    pub(super) fn catch_up(&self, inner: &mut Inner, end_fragment: bool) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let size = match &inner.log {
            Some(f) => f.metadata(),
            None => fs::symlink_metadata(&path),
        }
        .map_err(|e| Error::io("inspecting", &path, e))?
        .len();
        if size <= inner.len {
            return Ok(());
        }
        let (lines, end) = self.read_lines(inner.len, size, inner.state.seq + 1)?;
        let mut offset = inner.len;
        for l in &lines {
            self.mark(l.seq, offset);
            offset += l.bytes;
        }
        for l in &lines {
            if l.object.is_none() {
                tracing::warn!(txn = %self.id, seq = l.seq,
                    "line {} of {EVENTS_FILE} is not a JSON object; it keeps its seq and is skipped by the fold", l.seq);
            }
            Arc::make_mut(&mut inner.state).apply_logged(l.seq, &l.logged());
        }
        if end < size && end_fragment {
            // A foreign line without its newline: end it, or our line would
            // be glued onto it.
            // Ending it makes it a line like any other, folded as such (the
            // sync comes with the mutation's own).
            let log = inner.log_file(&path)?;
            log::append(log, size, "\n", Durability::None, &path)?;
            let next = inner.state.seq + 1;
            let (ended, _) = self.read_lines(end, size + 1, next)?;
            self.mark(next, end);
            let ended = ended
                .first()
                .map_or_else(|| Logged::read(None), |l| l.logged());
            Arc::make_mut(&mut inner.state).apply_logged(next, &ended);
            inner.len = size + 1;
        } else {
            inner.len = end;
        }
        if lines.is_empty() && !end_fragment {
            return Ok(());
        }
        tracing::info!(txn = %self.id, lines = lines.len(), "folded lines appended by another program");
        Ok(())
    }
}
