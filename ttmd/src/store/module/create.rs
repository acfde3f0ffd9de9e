//! Creating a transaction: built whole under a temporary name, renamed
//! into place without replacing anything.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Change, ChangeKind, Module, lock};
use crate::core::ctx::{self, Entry};
use crate::core::event::{Body, Event, Logged, Meta};
use crate::core::id::{self, quote};
use crate::core::state::{self, State};
use crate::core::templates;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::txn::{
    self, ARTIFACTS_DIR, BUILD_DIR, CTX_DIR, Client, EVENTS_FILE, STATE_FILE, Txn,
};

/// What a new transaction is made of.
#[derive(Debug, Clone)]
pub struct NewTxn {
    pub description: String,
    pub target: String,
    pub agent: String,
    pub activate: bool,
    pub request_id: Option<String>,
    /// Deadline (resolved to RFC 3339 UTC) and heartbeat (SPEC §14).
    pub time: crate::core::timing::Settings,
}

impl Module {
    /// Creates a transaction: the whole directory is built under a temporary
    /// name and renamed into place, so a crash never leaves half of one, and
    /// two creations never share an id.
    pub fn create(&self, new: &NewTxn, client: &Client) -> Result<Arc<Txn>> {
        let _guard = lock(&self.module_lock);
        let created = new
            .request_id
            .as_ref()
            .and_then(|rid| lock(&self.create_requests).get(rid).cloned());
        if let Some(id) = created {
            // Loading it (if it is kept as a summary) records its request
            // id again, so the map's lock must be free here.
            return self.txn(&id);
        }
        let now = Utc::now();
        let ts = state::timestamp(now);
        let build = fsio::temp_path(&self.txns_dir, "create");
        let result = self.build_and_place(&build, new, client, now, &ts);
        if result.is_err() {
            let _ = fs::remove_dir_all(&build);
        }
        let id = result?;
        // In place and visible: from here on nothing fails the call (a
        // retry without a request id would create a second one).
        if let Err(e) = fsio::sync_dir(&self.txns_dir, self.durability) {
            tracing::warn!(module = %self.name, error = %e, "cannot sync txns/ yet; the checkpoint retries");
            self.txns_dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Some(rid) = &new.request_id {
            lock(&self.create_requests).insert(rid.clone(), id.clone());
        }
        let txn = self.load(&id)?;
        let state = txn.state();
        self.tell_started(&id, &state.stage, &ts, new.activate);
        self.tell(Change {
            kind: ChangeKind::Created,
            lease: None,
            txn_id: id.clone(),
            from: String::new(),
            to: state.stage.clone(),
            seq: state.seq,
            ts: ts.clone(),
            warning: String::new(),
        });
        if new.activate {
            self.point_active(&id)?;
            self.tell(Change {
                kind: ChangeKind::Activated,
                lease: None,
                txn_id: id,
                from: String::new(),
                to: state.stage.clone(),
                seq: state.seq,
                ts,
                warning: String::new(),
            });
        }
        Ok(txn)
    }

    /// Builds the transaction in `build` and renames it into place under
    /// the first free id. Returns the id.
    fn build_and_place(
        &self,
        build: &Path,
        new: &NewTxn,
        client: &Client,
        now: DateTime<Utc>,
        ts: &str,
    ) -> Result<String> {
        for sub in [CTX_DIR, BUILD_DIR, ARTIFACTS_DIR] {
            fsio::ensure_dir(&build.join(sub))?;
        }
        let mut n = 1;
        loop {
            let id = id::txn_id(&new.description, now, n);
            // Ids are unique among archived transactions too: archiving
            // this one later must not find its name taken.
            if fs::symlink_metadata(self.archive_dir().join(&id)).is_ok() {
                n += 1;
                continue;
            }
            // RAG's prompt names the id, so the files follow each attempt.
            let entries = self.write_ctx_files(&build.join(CTX_DIR), &id, new)?;
            self.write_log_and_view(build, &id, new, client, ts, &entries)?;
            let target = self.txns_dir.join(&id);
            match txn::rename_noreplace(build, &target) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    n += 1;
                    if n > 10_000 {
                        return Err(Error::io("creating", target, e));
                    }
                }
                Err(e) => return Err(Error::io("creating", target, e)),
            }
        }
    }

    /// The ctx files transaction `id` starts with ([`templates`]).
    fn write_ctx_files(&self, ctx_dir: &Path, id: &str, new: &NewTxn) -> Result<Vec<Entry>> {
        let files = templates::initial_ctx(&self.name, id, &new.description, &new.target);
        let mut entries = Vec::new();
        for (name, text) in files {
            fsio::atomic_write(ctx_dir, name, text.as_bytes(), Durability::None)?;
            entries.push(Entry {
                name: name.to_string(),
                bytes: text.len() as u64,
                sha256: ctx::sha256_hex(text.as_bytes()),
            });
        }
        Ok(entries)
    }

    /// `txn_start` (and `activated`), and the view folded from them.
    /// Written unsynced in the private build directory, then synced all at
    /// once before the rename publishes them: one sync per file and
    /// directory instead of one round per file.
    fn write_log_and_view(
        &self,
        build: &Path,
        id: &str,
        new: &NewTxn,
        client: &Client,
        ts: &str,
        entries: &[Entry],
    ) -> Result<()> {
        let start = Body::Start {
            txn_id: id.to_string(),
            description: new.description.clone(),
            target: new.target.clone(),
            agent: new.agent.clone(),
            module: self.name.clone(),
            stage: self.fsm().initial().to_string(),
            ctx_digest: ctx::digest(entries),
            time: new.time.clone(),
        };
        let mut meta = Meta {
            ts: ts.to_string(),
            seq: 1,
            request_id: new.request_id.clone(),
            client: client.clone(),
        };
        let mut lines = start.to_line(&meta);
        let first = logged(&meta, start);
        let mut folded =
            State::start_logged(&first, &self.name).map_err(|e| Error::invalid(e.to_string()))?;
        if new.activate {
            meta.seq = 2;
            meta.request_id = None;
            lines.push_str(&Body::Activated.to_line(&meta));
            folded.apply_logged(2, &logged(&meta, Body::Activated));
        }
        fsio::atomic_write(build, EVENTS_FILE, lines.as_bytes(), Durability::None)?;
        let view = folded.to_pretty_json();
        fsio::atomic_write(build, STATE_FILE, view.as_bytes(), Durability::None)?;
        let ctx_dir = build.join(CTX_DIR);
        let mut paths = vec![build.join(EVENTS_FILE), build.join(STATE_FILE)];
        paths.extend(entries.iter().map(|e| ctx_dir.join(&e.name)));
        paths.extend([ctx_dir, build.to_path_buf()]);
        fsio::sync_all(&paths, self.durability)
    }
}

/// `body` as the line `meta` frames reads back.
fn logged(meta: &Meta, body: Body) -> Logged {
    Logged {
        ts: Some(meta.ts.clone()),
        request_id: meta.request_id.clone(),
        event: Event::Body(body),
    }
}

/// Checks a description's size and a target/agent before creating.
pub fn validate_new(new: &NewTxn, max_description: usize) -> Result<()> {
    if new.description.len() > max_description {
        return Err(Error::OverLimit(format!(
            "description is {} bytes; the limit is {max_description} (limits.description)",
            new.description.len()
        )));
    }
    crate::core::topology::validate_target(&new.target)?;
    let agent_ok = !new.agent.is_empty()
        && new.agent.len() <= 64
        && new.agent.chars().all(|c| !c.is_control());
    if !agent_ok {
        return Err(Error::invalid(format!(
            "invalid agent {}: 1-64 printable characters",
            quote(&new.agent)
        )));
    }
    Ok(())
}
