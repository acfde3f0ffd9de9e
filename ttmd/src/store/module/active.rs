//! The module's `active` symlink: which transaction commands without an
//! id mean.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chrono::Utc;

use super::{ACTIVE_LINK, Change, ChangeKind, Module, lock};
use crate::core::event::Body;
use crate::core::id;
use crate::core::state;
use crate::core::{Error, Result};
use crate::store::fsio;
use crate::store::txn::{Client, Guards, Outcome};

impl Module {
    /// The id `active` points to, if it points at a valid sibling. An
    /// absolute link into this module's `txns/` (the bash version wrote
    /// `ln -sf "$TTM_TXNS_DIR/<id>" active`) is adopted: it names the same
    /// sibling, and is rewritten relative (SPEC §1) when the module lock is
    /// free. An absolute link anywhere else is refused, never followed.
    pub fn active_id(&self) -> Result<Option<String>> {
        let link = self.txns_dir.join(ACTIVE_LINK);
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", link, e)),
        };
        if target.is_absolute() {
            return self.absolute_active(&target).map(Some);
        }
        let name = target.to_string_lossy();
        let name = name.trim_end_matches('/');
        if id::validate_txn_id(name).is_ok() && self.txns_dir.join(name).is_dir() {
            return Ok(Some(name.to_string()));
        }
        self.note_active(&target, || {
            tracing::warn!(module = %self.name, target = %target.display(),
                "ignoring `active`: it does not point at a transaction of this module");
        });
        Ok(None)
    }

    /// Like [`Module::active_id`], but an `active` link pointing outside
    /// the module counts as no active transaction: for listings and
    /// retention, which must work whatever the link says.
    pub fn active_id_or_none(&self) -> Result<Option<String>> {
        match self.active_id() {
            Err(Error::UnsafeLink(_)) => Ok(None),
            other => other,
        }
    }

    /// An absolute `active` target: the sibling it names when it points
    /// into this module's `txns/`, adopted (rewritten relative); else the
    /// refusal.
    fn absolute_active(&self, target: &Path) -> Result<String> {
        let sibling = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| id::validate_txn_id(n).is_ok() && n != ACTIVE_LINK)
            .filter(|_| target.parent().is_some_and(|p| same_dir(p, &self.txns_dir)))
            .filter(|n| {
                fs::symlink_metadata(self.txns_dir.join(n)).is_ok_and(|m| m.file_type().is_dir())
            });
        let Some(id) = sibling else {
            return Err(Error::UnsafeLink(format!(
                "`active` in {} is an absolute link to {}, outside this module's transactions; \
                 ttmd does not follow it. Make a transaction of module {} active with `ttmctl \
                 activate ID` (or remove the link)",
                self.txns_dir.display(),
                target.display(),
                self.name
            )));
        };
        // The module lock serialises the link's writers; when someone holds
        // it (an activation, or the caller itself), the link is adopted later.
        if let Ok(_guard) = self.module_lock.try_lock() {
            let unchanged = fs::read_link(self.txns_dir.join(ACTIVE_LINK))
                .is_ok_and(|now| now.as_path() == target);
            if unchanged {
                self.point_active(&id)?;
                tracing::info!(module = %self.name, from = %target.display(), to = %id,
                    "adopted the bash version's absolute `active` link: rewritten relative");
            }
        }
        Ok(id)
    }

    /// Runs `warn` once per distinct bad `active` target, so a link ttmd
    /// cannot use is reported once, not on every request.
    fn note_active(&self, target: &Path, warn: impl FnOnce()) {
        let mut noted = lock(&self.active_noted);
        if noted.as_deref() != Some(target) {
            *noted = Some(target.to_path_buf());
            warn();
        }
    }

    /// Makes `id` the active transaction: logs `activated`, then swaps the
    /// symlink atomically. Whether it is finished is decided under the
    /// transaction's lock, where a commit still waiting for its sync is
    /// already seen: a finished one may be made active to look at it (a RAG
    /// flow_resume of a finished flow), and as its log is final, only the
    /// pointer moves.
    pub fn activate(&self, id: &str, guards: &Guards, client: &Client) -> Result<Outcome> {
        let txn = self.txn(id)?;
        let _guard = lock(&self.module_lock);
        let outcome = txn.mutate(&self.fsm(), guards, client, |_, _| Ok(Body::Activated))?;
        if outcome.replayed {
            return Ok(outcome);
        }
        self.point_active(&txn.id)?;
        if outcome.event.is_some() {
            self.announce(&outcome);
        } else {
            self.tell(Change {
                kind: ChangeKind::Activated,
                lease: None,
                txn_id: txn.id.clone(),
                from: String::new(),
                to: outcome.state.stage.clone(),
                seq: outcome.state.seq,
                ts: state::timestamp(Utc::now()),
                warning: String::new(),
            });
        }
        Ok(outcome)
    }

    /// Replaces `active` with a relative symlink to `id`, atomically.
    pub(super) fn point_active(&self, id: &str) -> Result<()> {
        self.replace_active(id)?;
        fsio::sync_dir(&self.txns_dir, self.durability)
    }

    /// [`Module::point_active`] without the sync of `txns/`, for a caller
    /// that syncs `txns/` itself before answering (a creation).
    pub(super) fn replace_active(&self, id: &str) -> Result<()> {
        let tmp = fsio::temp_path(&self.txns_dir, ACTIVE_LINK);
        let link = self.txns_dir.join(ACTIVE_LINK);
        std::os::unix::fs::symlink(id, &tmp)
            .and_then(|()| fs::rename(&tmp, &link))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("replacing", &link, e)
            })
    }
}

/// Whether `a` and `b` name the same directory (by device and inode, so any
/// spelling of the path counts). Only metadata is read.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_dir() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
