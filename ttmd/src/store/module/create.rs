//! Creating a transaction: built whole under a temporary name, renamed
//! into place without replacing anything.

use std::fs::{self, File};
use std::io::{self, Write};
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

/// A creation written in its staging directory, not yet in place.
struct Staged {
    /// The log, open (the transaction keeps it).
    log: File,
    lines: String,
    folded: State,
    /// The initial ctx files' names.
    ctx: Vec<String>,
}

impl Module {
    /// Creates a transaction: the whole directory is built under a temporary
    /// name (outside the module lock, so creations overlap their writes)
    /// and renamed into place, so a crash never leaves half of one, and
    /// two creations never share an id. Only the log and the directories
    /// are synced before the answer; the files derived from `txn_start`
    /// (initial ctx files, `state.json`) are synced by the checkpoint and
    /// rebuilt from the log if a crash lost them (see `txn/initial.rs`).
    pub fn create(&self, new: &NewTxn, client: &Client) -> Result<Arc<Txn>> {
        let now = Utc::now();
        let ts = state::timestamp(now);
        let (txn, held) = match self.stage_and_place(new, client, now, &ts)? {
            Ok(placed) => placed,
            // A retry of a creation: answered once the first is durable in
            // txns/. Loading it (if it is kept as a summary) records its
            // request id again, so the map's lock must be free here.
            Err(created) => {
                self.sync_txns();
                return self.txn(&created);
            }
        };
        // In place and visible: from here on nothing fails the call (a
        // retry without a request id would create a second one).
        self.sync_txns();
        if held {
            // Writes to it waited for the rename to be durable: a write
            // acknowledged before would be lost with the directory.
            txn.release_writes();
        }
        self.announce_created(&txn, ts, new.activate);
        Ok(txn)
    }

    /// Makes the renames into `txns/` durable (one sync shared by the
    /// creations waiting for it).
    fn sync_txns(&self) {
        if let Err(e) = self
            .creations
            .txns_sync
            .sync(&self.txns_dir, self.durability)
        {
            tracing::warn!(module = %self.name, error = %e, "cannot sync txns/ yet; the checkpoint retries");
            self.txns_dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Reserves an id, writes the transaction under a temporary name and
    /// renames it into place: the transaction, served, and whether its
    /// writes are held (see [`Module::adopt_created`]). `Err` holds the
    /// id an earlier creation with the same request id made.
    fn stage_and_place(
        &self,
        new: &NewTxn,
        client: &Client,
        now: DateTime<Utc>,
        ts: &str,
    ) -> Result<std::result::Result<(Arc<Txn>, bool), String>> {
        let rid = new.request_id.as_deref();
        loop {
            let reserved = self.creations.ids.reserve(
                rid,
                || lock(&self.create_requests).get(rid?).cloned(),
                |n| self.free_id(&new.description, now, n),
            );
            let reservation = match reserved {
                Ok(r) => r,
                Err(created) => return Ok(Err(created)),
            };
            let id = reservation.id.clone();
            let build = fsio::temp_path(&self.txns_dir, "create");
            let staged = self.stage(&build, &id, new, client, ts);
            match staged.and_then(|s| self.place(&build, &id, new, s)) {
                Ok(Some(txn)) => {
                    if let Some(rid) = rid {
                        lock(&self.create_requests).insert(rid.to_string(), id.clone());
                    }
                    return Ok(Ok(txn));
                }
                // Taken meanwhile behind our back: the files name the id,
                // so they are written again under the next one.
                Ok(None) => {
                    let _ = fs::remove_dir_all(&build);
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&build);
                    return Err(e);
                }
            }
        }
    }

    /// Tells hooks, metrics and watchers about a creation.
    fn announce_created(&self, txn: &Txn, ts: String, activated: bool) {
        let state = txn.state();
        let id = &txn.id;
        self.tell_started(id, &state.stage, &ts, activated);
        let change = |kind| Change {
            kind,
            lease: None,
            txn_id: id.clone(),
            from: String::new(),
            to: state.stage.clone(),
            seq: state.seq,
            ts: ts.clone(),
            warning: String::new(),
        };
        self.tell(change(ChangeKind::Created));
        if activated {
            self.tell(change(ChangeKind::Activated));
        }
    }

    /// The `n`-th candidate id, unless a transaction (live or archived:
    /// archiving this one later must not find its name taken) has it.
    fn free_id(&self, description: &str, now: DateTime<Utc>, n: u32) -> Option<String> {
        let id = id::txn_id(description, now, n);
        let taken = |dir: &Path| fs::symlink_metadata(dir.join(&id)).is_ok();
        (!taken(&self.archive_dir()) && !taken(&self.txns_dir)).then_some(id)
    }

    /// Renames `build` into place as `id`, serves it and, if asked,
    /// points `active` at it, under the module lock; the rename and the
    /// pointer are made durable by the `txns/` sync that follows. `None`
    /// when something took the name meanwhile.
    fn place(
        &self,
        build: &Path,
        id: &str,
        new: &NewTxn,
        staged: Staged,
    ) -> Result<Option<(Arc<Txn>, bool)>> {
        let target = self.txns_dir.join(id);
        let _guard = lock(&self.module_lock);
        match txn::rename_noreplace(build, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(Error::io("creating", target, e)),
        }
        // Served before the lock is let go: the reconciler, which takes
        // it, then finds it loaded, and does not announce it a second time.
        let (txn, held) = self.adopt_created(id, staged);
        if new.activate
            && let Err(e) = self.replace_active(id)
        {
            // It exists all the same: a retry with the request id must
            // find it rather than create a second one.
            if let Some(rid) = &new.request_id {
                lock(&self.create_requests).insert(rid.clone(), id.to_string());
            }
            if held {
                txn.release_writes();
            }
            return Err(e);
        }
        Ok(Some((txn, held)))
    }

    /// The transaction just placed, built from what was written, with its
    /// writes held until `txns/` is synced (true); one a request loaded
    /// from disk meanwhile is kept instead, not held (its derived files
    /// are synced all the same).
    fn adopt_created(&self, id: &str, staged: Staged) -> (Arc<Txn>, bool) {
        let dir = self.txns_dir.join(id);
        let Staged {
            log,
            lines,
            folded,
            ctx,
        } = staged;
        let made = Txn::created(&dir, log, lines.as_bytes(), folded, self.durability);
        // Not shared yet: the turn is free and taken at once.
        made.hold_writes();
        let (txn, held) = self.insert_loaded(id, made);
        if self.durability.defers_view_sync() {
            self.creations.unsynced.push(txn.clone(), ctx);
        }
        (txn, held)
    }

    /// Writes the transaction `id` in `build`: its directories, initial
    /// ctx files, log (synced) and view. Each file is new in a private
    /// directory, so it is written in place; only the log and the
    /// directory are synced (`strict` syncs everything).
    fn stage(
        &self,
        build: &Path,
        id: &str,
        new: &NewTxn,
        client: &Client,
        ts: &str,
    ) -> Result<Staged> {
        for sub in [CTX_DIR, BUILD_DIR, ARTIFACTS_DIR] {
            fsio::ensure_dir(&build.join(sub))?;
        }
        // RAG's prompt names the id.
        let files = templates::initial_ctx(&self.name, id, &new.description, &new.target);
        let ctx_dir = build.join(CTX_DIR);
        for (name, text) in &files {
            write_new(&ctx_dir, name, text.as_bytes(), false)?;
        }
        let entries = txn::initial_entries(&files);
        let (lines, folded) = self.start_lines(id, new, client, ts, &entries)?;
        let syncs = self.durability.syncs();
        let log = write_new(build, EVENTS_FILE, lines.as_bytes(), syncs)?;
        let view = folded.to_pretty_json();
        write_new(build, STATE_FILE, view.as_bytes(), false)?;
        let mut paths = Vec::new();
        if self.durability == Durability::Strict {
            paths.push(build.join(STATE_FILE));
            paths.extend(entries.iter().map(|e| ctx_dir.join(&e.name)));
            paths.push(ctx_dir);
        }
        fsio::sync_all(&paths, self.durability)?;
        crate::metrics::WRITE
            .fsync
            .time(|| fsio::sync_dir(build, self.durability))?;
        let ctx = entries.into_iter().map(|e| e.name).collect();
        Ok(Staged {
            log,
            lines,
            folded,
            ctx,
        })
    }

    /// `txn_start` (and `activated`) as log lines, and their fold.
    fn start_lines(
        &self,
        id: &str,
        new: &NewTxn,
        client: &Client,
        ts: &str,
        entries: &[Entry],
    ) -> Result<(String, State)> {
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
        Ok((lines, folded))
    }
}

/// Creates the new file `dir/name` with `content` (fdatasync'ed with
/// `sync`) and returns it open.
fn write_new(dir: &Path, name: &str, content: &[u8], sync: bool) -> Result<File> {
    let mut f = fsio::create_in(dir, name)?;
    f.write_all(content)
        .map_err(|e| Error::io("writing", dir.join(name), e))?;
    if sync {
        crate::metrics::WRITE
            .fsync
            .time(|| f.sync_data())
            .map_err(|e| Error::io("syncing", dir.join(name), e))?;
    }
    Ok(f)
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
