//! Retention (issue #6): finished, inactive transactions move whole into
//! `<module>/archive/`; archived ones past a limit are deleted. Both are
//! dry runs unless asked to apply, and never touch an active or live
//! transaction.

use std::fs;
use std::io;
use std::path::PathBuf;

use chrono::Utc;
use serde_json::Value;

use super::fsio;
use super::module::{Change, ChangeKind, Listed, Module};
use super::txn::{self, STATE_FILE};
use crate::core::{Error, Result, fsm, id, state};

/// The directory, beside `txns/`, holding archived transactions.
pub const ARCHIVE_DIR: &str = "archive";

/// Seconds between an RFC 3339 time and `now`; `None` if unreadable.
fn age_secs(ts: &str, now: chrono::DateTime<Utc>) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| (now - t.with_timezone(&Utc)).num_seconds().max(0) as u64)
}

impl Module {
    /// `<module dir>/archive`.
    pub fn archive_dir(&self) -> PathBuf {
        self.dir().join(ARCHIVE_DIR)
    }

    /// Finished, inactive transactions at least `older_than` seconds past
    /// their last change, optionally of one terminal `stage`; with `apply`,
    /// moves each into the archive (renamed whole: nothing inside changes)
    /// and stops serving it. Active and live transactions are never
    /// touched. Returns the ids.
    pub fn archive(
        &self,
        older_than: u64,
        stage: Option<&str>,
        apply: bool,
    ) -> Result<Vec<String>> {
        let _guard = self.exclusive();
        let now = Utc::now();
        let active = self.active_id_or_none()?;
        let chosen: Vec<Listed> = self
            .list(stage)
            .into_iter()
            .filter(|l| {
                fsm::is_terminal(l.summary.stage())
                    && active.as_deref() != Some(l.id.as_str())
                    && age_secs(l.summary.last_checkpoint(), now).is_some_and(|a| a >= older_than)
            })
            .collect();
        if !apply {
            return Ok(chosen.into_iter().map(|l| l.id).collect());
        }
        let archive = self.archive_dir();
        fsio::ensure_dir(&archive)?;
        let mut moved = Vec::new();
        for l in chosen {
            let from = self.txns_dir.join(&l.id);
            let to = archive.join(&l.id);
            let rename =
                || txn::rename_noreplace(&from, &to).map_err(|e| Error::io("archiving", &from, e));
            match &l.txn {
                // A retry may have brought it back since it was chosen: move
                // it only while its lock shows it still finished (a retry
                // waiting on that lock then finds its log gone and refuses).
                Some(t) => match t.while_final(rename) {
                    Some(done) => done?,
                    None => continue,
                },
                // Not loaded: a retry has to load it first, and then finds
                // its directory gone.
                None => rename()?,
            }
            self.unload(&l.id);
            tracing::info!(module = %self.name, txn = %l.id, to = %to.display(), "archived");
            self.tell(Change {
                kind: ChangeKind::Archived,
                lease: None,
                txn_id: l.id.clone(),
                from: l.summary.stage().to_string(),
                to: String::new(),
                seq: l.summary.seq,
                ts: state::timestamp(now),
                warning: String::new(),
            });
            moved.push(l.id);
        }
        fsio::sync_dir(&self.txns_dir, self.durability())?;
        fsio::sync_dir(&archive, self.durability())?;
        Ok(moved)
    }

    /// Archived transactions to delete: those at least `older_than` seconds
    /// past their last change, except the newest `keep`; with `older_than`
    /// 0, all but the newest `keep`. With `apply`, deletes them. Returns
    /// the ids.
    pub fn gc(&self, older_than: u64, keep: usize, apply: bool) -> Result<Vec<String>> {
        let _guard = self.exclusive();
        let now = Utc::now();
        let archive = self.archive_dir();
        let mut entries: Vec<(String, String)> = match fs::read_dir(&archive) {
            Ok(list) => list
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| id::validate_txn_id(n).is_ok())
                .map(|n| {
                    let last = fsio::read_file(&archive.join(&n).join(STATE_FILE))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .and_then(|v| v.get("last_checkpoint")?.as_str().map(String::from))
                        .unwrap_or_default();
                    (n, last)
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("listing", archive, e)),
        };
        // Newest first; the first `keep` stay.
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let doomed: Vec<String> = entries
            .into_iter()
            .skip(keep)
            .filter(|(_, last)| {
                older_than == 0 || age_secs(last, now).is_some_and(|a| a >= older_than)
            })
            .map(|(id, _)| id)
            .collect();
        // Nothing to delete is a success, also when nothing was ever
        // archived (no archive/ to sync).
        if apply && !doomed.is_empty() {
            for id in &doomed {
                let dir = archive.join(id);
                // remove_dir_all does not follow symlinks inside.
                fs::remove_dir_all(&dir).map_err(|e| Error::io("deleting", &dir, e))?;
                tracing::info!(module = %self.name, txn = %id, "deleted from the archive");
            }
            fsio::sync_dir(&archive, self.durability())?;
        }
        Ok(doomed)
    }
}
