//! The module's `active` symlink: which transaction commands without an
//! id mean.

use std::fs;
use std::io;

use chrono::Utc;

use super::{ACTIVE_LINK, Change, ChangeKind, Module, lock};
use crate::core::event::Body;
use crate::core::id;
use crate::core::state;
use crate::core::{Error, Result};
use crate::store::fsio;
use crate::store::txn::{Client, Guards, Outcome};

impl Module {
    /// The id `active` points to, if it points at a valid sibling.
    pub fn active_id(&self) -> Result<Option<String>> {
        let link = self.txns_dir.join(ACTIVE_LINK);
        match fs::read_link(&link) {
            Ok(target) => {
                let name = target.to_string_lossy().into_owned();
                let name = name.trim_end_matches('/');
                if id::validate_txn_id(name).is_ok() && self.txns_dir.join(name).is_dir() {
                    Ok(Some(name.to_string()))
                } else {
                    tracing::warn!(module = %self.name, target = %target.display(),
                        "ignoring `active`: it does not point at a transaction of this module");
                    Ok(None)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", link, e)),
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
            });
        }
        Ok(outcome)
    }

    /// Replaces `active` with a relative symlink to `id`, atomically.
    pub(super) fn point_active(&self, id: &str) -> Result<()> {
        let tmp = fsio::temp_path(&self.txns_dir, ACTIVE_LINK);
        let link = self.txns_dir.join(ACTIVE_LINK);
        std::os::unix::fs::symlink(id, &tmp)
            .and_then(|()| fs::rename(&tmp, &link))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("replacing", &link, e)
            })?;
        fsio::sync_dir(&self.txns_dir, self.durability)
    }
}
