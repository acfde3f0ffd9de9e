//! One module namespace: `<root>/<module>/txns/`, its FSM, its transactions
//! and its `active` symlink.
//!
//! - `create.rs`: creating a transaction;
//! - `staging.rs`: what lets creations overlap (reservations, shared syncs);
//! - `active.rs`: the `active` symlink and activation;
//! - `feed.rs`: the change feed for `Watch`;
//! - `migrate.rs`: moving transactions older versions left stuck;
//! - `reconcile.rs`: transaction directories added or removed by hand.

mod active;
mod create;
mod feed;
mod listing;
mod migrate;
mod order;
mod probe;
mod reconcile;
mod staging;

pub use create::{NewTxn, validate_new};
pub use feed::{Change, ChangeKind, Durable};

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::core::fsm::Fsm;
use crate::core::id;
use crate::core::state;
use crate::core::summary::Summary;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::txn::{STATE_FILE, Txn};

/// The symlink naming the module's active transaction.
pub const ACTIVE_LINK: &str = "active";
/// The optional per-module FSM definition.
pub const FSM_FILE: &str = "fsm.json";

/// One transaction of [`Module::list`]: what a listing shows of it, and the
/// transaction itself when it is loaded.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its directory's name (the id requests use).
    pub id: String,
    pub summary: Summary,
    /// `None` for a finished transaction kept as its summary only.
    pub txn: Option<Arc<Txn>>,
}

/// A loaded module.
#[derive(Debug)]
pub struct Module {
    /// The module's name.
    pub name: String,
    /// `<root>/<module>/txns`.
    pub txns_dir: PathBuf,
    /// The module's stages and edges; replaced by a reload.
    fsm: RwLock<Arc<Fsm>>,
    /// `<module dir>`, where `fsm.json` is read from.
    dir: PathBuf,
    durability: Durability,
    /// Loaded transactions by id. Entries are added, never replaced.
    txns: RwLock<BTreeMap<String, Arc<Txn>>>,
    /// Finished transactions that are not loaded, kept as their summaries
    /// (see [`crate::store::txn::probe_finished`]); loaded on first use. An id is in
    /// `txns` or here, never both. Lock order: `txns`, then this.
    finished: RwLock<BTreeMap<Box<str>, Summary>>,
    /// Every served id (in `txns` or `finished`) by its listing key, kept
    /// sorted so a `List` page walks only its rows. Lock order: `txns`,
    /// `finished`, then this.
    order: RwLock<order::Order>,
    /// Serialises creation, activation and reconciling of `txns/`, which
    /// touch the shared directory and `active` symlink.
    module_lock: Mutex<()>,
    /// Serialises loading, so a directory is opened (and recovered) once.
    load_lock: Mutex<()>,
    /// Transactions that cannot be loaded: id → why. Listed, not served.
    quarantined: Mutex<BTreeMap<String, String>>,
    /// Create request ids → the transaction they created.
    create_requests: Mutex<HashMap<String, String>>,
    /// Feed of changes for `Watch`.
    changes: broadcast::Sender<Change>,
    /// The store's feed of durable events (hooks, metrics), once set.
    events: std::sync::OnceLock<broadcast::Sender<Durable>>,
    /// The last `active` target reported as unusable, so it is reported once.
    active_noted: Mutex<Option<PathBuf>>,
    /// Syncing `txns/` after a creation failed; the checkpoint retries.
    txns_dirty: std::sync::atomic::AtomicBool,
    /// What concurrent creations share: reservations, the `txns/` sync,
    /// the files left for the checkpoint.
    creations: staging::Creations,
    /// The tree is mounted read-only: loading repairs nothing, and the
    /// repairs it would make are kept here ("txn: what"), for status.
    read_only: Option<Mutex<Vec<String>>>,
}

impl Module {
    /// Opens (and with `create`, makes) the module `name` kept in `dir`
    /// (usually `<root>/<name>`) and loads its transactions. A malformed
    /// `fsm.json` refuses the whole module with a message naming the file.
    /// Watchers' changes go to `changes`, which the store keeps per module
    /// name so a watch can begin before the module exists.
    pub fn open(
        dir: &Path,
        name: &str,
        durability: Durability,
        create: bool,
        read_only: bool,
        changes: broadcast::Sender<Change>,
    ) -> Result<Module> {
        id::validate_module(name)?;
        let dir = dir.to_path_buf();
        let txns_dir = dir.join("txns");
        // The FSM first: a module refused for a bad fsm.json gets nothing
        // created in it.
        let fsm = load_fsm(&dir, name)?;
        if create && !read_only {
            fsio::ensure_dir(&txns_dir)?;
        } else {
            fsio::require_real_dir(&txns_dir, &format!("module {name}")).map_err(|e| match e {
                Error::Unknown(_) => Error::Unknown(format!(
                    "unknown module {name}: no {} (create a transaction in it first)",
                    txns_dir.display()
                )),
                other => other,
            })?;
        }
        let removed = (!read_only).then(|| fsio::remove_temp_files(&txns_dir));
        if let Some(removed @ 1..) = removed {
            tracing::warn!(
                module = name,
                removed,
                "removed leftovers of interrupted creations"
            );
        }
        let module = Module {
            name: name.to_string(),
            txns_dir,
            fsm: RwLock::new(Arc::new(fsm)),
            dir,
            durability,
            txns: RwLock::new(BTreeMap::new()),
            finished: RwLock::new(BTreeMap::new()),
            order: RwLock::new(order::Order::default()),
            module_lock: Mutex::new(()),
            load_lock: Mutex::new(()),
            quarantined: Mutex::new(BTreeMap::new()),
            create_requests: Mutex::new(HashMap::new()),
            changes,
            events: std::sync::OnceLock::new(),
            active_noted: Mutex::new(None),
            txns_dirty: std::sync::atomic::AtomicBool::new(false),
            creations: Default::default(),
            read_only: read_only.then(|| Mutex::new(Vec::new())),
        };
        module.load_all()?;
        // Adopts (or reports) an `active` link the bash version left.
        if let Err(e) = module.active_id() {
            tracing::warn!(module = name, "{e}");
        }
        Ok(module)
    }

    /// Loads every transaction directory, except finished ones whose files
    /// agree: those are kept as summaries and loaded on first use, so
    /// start-up and memory do not grow with the history. One that cannot be
    /// loaded is reported and skipped, never fatal to the rest.
    fn load_all(&self) -> Result<()> {
        let list =
            fs::read_dir(&self.txns_dir).map_err(|e| Error::io("listing", &self.txns_dir, e))?;
        let dirs: Vec<(String, bool)> = list
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let valid = name != ACTIVE_LINK && id::validate_txn_id(&name).is_ok();
                // A symlink or file goes the long way, to be quarantined.
                valid.then(|| (name, entry.file_type().is_ok_and(|t| t.is_dir())))
            })
            .collect();
        for (name, probed) in probe::probe_all(&self.txns_dir, &dirs) {
            match probed {
                Some((summary, create_request)) => {
                    if let Some(rid) = create_request {
                        lock(&self.create_requests).insert(rid, name.clone());
                    }
                    let mut finished = write(&self.finished);
                    write(&self.order).insert(summary.created(), &name);
                    finished.insert(name.into_boxed_str(), summary);
                }
                None => {
                    let _ = self.load(&name);
                }
            }
        }
        Ok(())
    }

    /// Loads (recovering) the transaction directory `id` once; a directory
    /// that cannot be loaded is quarantined: reported, listed, not served,
    /// left as it is for a person to look at.
    fn load(&self, id: &str) -> Result<Arc<Txn>> {
        self.load_new(id).map(|(t, _)| t)
    }

    /// Like [`Module::load`]; also says whether this call loaded it.
    fn load_new(&self, id: &str) -> Result<(Arc<Txn>, bool)> {
        let _loading = lock(&self.load_lock);
        if let Some(t) = read(&self.txns).get(id) {
            return Ok((t.clone(), false));
        }
        let fsm = self.fsm();
        let dir = self.txns_dir.join(id);
        let read_only = self.read_only.is_some();
        let opened = Txn::open_as(&dir, &self.name, &fsm, self.durability, read_only);
        let (txn, repairs) = match opened {
            Ok(v) => {
                lock(&self.quarantined).remove(id);
                v
            }
            Err(e) => {
                tracing::error!(module = %self.name, txn = %id, error = %e,
                    "quarantined: cannot load this transaction; it is listed as quarantined, \
                     not served, and left as it is");
                lock(&self.quarantined).insert(id.to_string(), e.to_string());
                // Not served any more, not even as a summary.
                self.drop_finished(id);
                return Err(Error::Refused(format!(
                    "transaction {id} is quarantined: {e}"
                )));
            }
        };
        for r in &repairs {
            tracing::warn!(module = %self.name, txn = %id, "recovery: {r}");
        }
        if let Some(pending) = &self.read_only {
            lock(pending).extend(repairs.iter().map(|r| format!("{id}: {r}")));
        }
        if let Some(rid) = &txn.create_request {
            lock(&self.create_requests).insert(rid.clone(), id.to_string());
        }
        Ok(self.insert_loaded(id, txn))
    }

    /// Serves `txn` as `id`, unless one is loaded already (then that one);
    /// says whether `txn` was taken.
    fn insert_loaded(&self, id: &str, txn: Txn) -> (Arc<Txn>, bool) {
        let mut txns = write(&self.txns);
        if let Some(t) = txns.get(id) {
            return (t.clone(), false);
        }
        let txn = txn.share();
        txns.insert(id.to_string(), txn.clone());
        // Its summary's key (from state.json) may differ from the log's.
        self.drop_finished(id);
        write(&self.order).insert(&txn.state().created, id);
        (txn, true)
    }

    /// The start-up repairs a read-only tree kept from being made, one
    /// line each ("txn: what"); empty on a writable tree.
    pub fn pending_repairs(&self) -> Vec<String> {
        self.read_only
            .as_ref()
            .map(|p| lock(p).clone())
            .unwrap_or_default()
    }

    /// Transactions that could not be loaded, with the reason.
    pub fn quarantined(&self) -> BTreeMap<String, String> {
        lock(&self.quarantined).clone()
    }

    /// The ids of the transaction directories on disk now.
    pub fn ids_on_disk(&self) -> Vec<String> {
        fs::read_dir(&self.txns_dir)
            .map(|list| {
                list.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ACTIVE_LINK && id::validate_txn_id(n).is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The loaded transactions' ids.
    pub fn loaded_ids(&self) -> Vec<String> {
        read(&self.txns).keys().cloned().collect()
    }

    /// The ids served: loaded, or finished and kept as summaries.
    pub fn served_ids(&self) -> Vec<String> {
        let txns = read(&self.txns);
        let finished = read(&self.finished);
        txns.keys()
            .cloned()
            .chain(finished.keys().map(|k| k.to_string()))
            .collect()
    }

    /// Whether `id` is loaded.
    pub fn is_loaded(&self, id: &str) -> bool {
        read(&self.txns).contains_key(id)
    }

    /// Whether `id` is served: loaded, or finished and kept as a summary.
    pub fn knows(&self, id: &str) -> bool {
        self.is_loaded(id) || read(&self.finished).contains_key(id)
    }

    /// Syncs the views writes left unsynced, then lets go of finished
    /// transactions nobody uses, keeping their summaries. Run by the
    /// checkpoint.
    pub fn checkpoint(&self) {
        use std::sync::atomic::Ordering;
        if self.txns_dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = fsio::sync_dir(&self.txns_dir, self.durability)
        {
            tracing::warn!(module = %self.name, error = %e, "cannot sync txns/; will retry");
            self.txns_dirty.store(true, Ordering::Release);
        }
        // Creations' files: one syncfs for all of a round's.
        self.creations.unsynced.sync(&self.txns_dir);
        let loaded: Vec<Arc<Txn>> = read(&self.txns).values().cloned().collect();
        for t in &loaded {
            if let Err(e) = t.sync_view() {
                tracing::warn!(txn = %t.id, error = %e, "cannot sync state.json; will retry");
            }
        }
        drop(loaded);
        let _loading = lock(&self.load_lock);
        let mut txns = write(&self.txns);
        // Holding the map's write lock, a count of one means no request,
        // follower or watcher has this transaction, and none can get it.
        let settled: Vec<(String, Summary)> = txns
            .iter()
            .filter(|(_, t)| Arc::strong_count(t) == 1)
            .filter_map(|(id, t)| Some((id.clone(), t.settled_summary()?)))
            .collect();
        let mut finished = write(&self.finished);
        let mut order = write(&self.order);
        for (id, summary) in settled {
            if let Some(t) = txns.remove(&id) {
                order.remove(&t.state().created, &id);
            }
            order.insert(summary.created(), &id);
            finished.insert(id.into_boxed_str(), summary);
        }
    }

    /// Holds the module lock (creation, activation, reconciling, retention).
    pub(super) fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.module_lock)
    }

    /// Stops serving `id` (moved or deleted by the caller) and ends its
    /// followers; returns it if it was loaded.
    pub(super) fn unload(&self, id: &str) -> Option<Arc<Txn>> {
        let mut txns = write(&self.txns);
        self.drop_finished(id);
        let txn = txns.remove(id)?;
        write(&self.order).remove(&txn.state().created, id);
        txn.mark_removed();
        Some(txn)
    }

    /// Stops keeping `id`'s summary (and its listing key); returns it.
    fn drop_finished(&self, id: &str) -> Option<Summary> {
        let gone = write(&self.finished).remove(id)?;
        write(&self.order).remove(gone.created(), id);
        Some(gone)
    }

    /// The module's directory (holding `txns/`, `fsm.json`, `archive/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module's durability setting.
    pub(super) fn durability(&self) -> Durability {
        self.durability
    }

    /// The module's current FSM.
    pub fn fsm(&self) -> Arc<Fsm> {
        read(&self.fsm).clone()
    }

    /// Re-reads `fsm.json`: a valid file (or its removal) replaces the FSM;
    /// a malformed one is refused and the old FSM kept. Says what happened.
    pub fn reload_fsm(&self) -> Result<String> {
        let fresh = load_fsm(&self.dir, &self.name)?;
        let mut current = write(&self.fsm);
        if **current == fresh {
            return Ok(format!("module {}: FSM unchanged", self.name));
        }
        *current = Arc::new(fresh);
        Ok(format!("module {}: FSM reloaded", self.name))
    }

    /// How many transactions are served (loaded or kept as summaries).
    pub fn count(&self) -> usize {
        let txns = read(&self.txns);
        txns.len() + read(&self.finished).len()
    }

    /// Transaction `id` if it is loaded: no disk access, so an async
    /// caller may ask. (`id` is a map key here; nothing is validated.)
    pub fn loaded_txn(&self, id: &str) -> Option<Arc<Txn>> {
        read(&self.txns).get(id).cloned()
    }

    /// The transaction `id`, or the active one when `id` is empty.
    pub fn txn(&self, id: &str) -> Result<Arc<Txn>> {
        let id = if id.is_empty() {
            self.active_id()?.ok_or_else(|| {
                Error::Refused(format!(
                    "no active transaction in module {}; create one or pass --txn ID",
                    self.name
                ))
            })?
        } else {
            id::validate_txn_id(id)?;
            if id == ACTIVE_LINK {
                return Err(Error::invalid(
                    "`active` names the symlink, not a transaction; pass the id it points to",
                ));
            }
            id.to_string()
        };
        if let Some(t) = read(&self.txns).get(&id) {
            return Ok(t.clone());
        }
        if let Some(why) = lock(&self.quarantined).get(&id) {
            return Err(Error::Refused(format!(
                "transaction {id} is quarantined: {why}; fix or move the directory away"
            )));
        }
        // Not loaded: perhaps copied in by hand since.
        let dir = self.txns_dir.join(&id);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Unknown(format!(
                "unknown transaction {id} in module {}",
                self.name
            ))),
            _ => self.load(&id),
        }
    }

    /// The whole state of a listed transaction. A finished one kept as a
    /// summary is read from its `state.json` when that still matches the
    /// summary, so listing a big history does not load it; otherwise it is
    /// loaded (and so recovered).
    pub fn listed_state(&self, listed: &Listed) -> Result<Arc<state::State>> {
        if let Some(t) = &listed.txn {
            return Ok(t.state());
        }
        let id = &listed.id;
        let path = self.txns_dir.join(id).join(STATE_FILE);
        let on_disk = fsio::read_file(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<state::State>(&b).ok())
            .filter(|s| Summary::of(s) == listed.summary);
        match on_disk {
            Some(s) => Ok(Arc::new(s)),
            None => Ok(self.txn(id)?.state()),
        }
    }
}

/// Reads and validates `<module dir>/fsm.json`; without one, the FSM the
/// product ships for the module `name` (e.g. `rag`), else the default.
pub fn load_fsm(module_dir: &Path, name: &str) -> Result<Fsm> {
    let path = module_dir.join(FSM_FILE);
    match fsio::read_file(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            Fsm::from_json(&text).map_err(|message| Error::Corrupt {
                path: path.clone(),
                message: format!(
                    "invalid FSM definition ({message}); fix the file, the module is not \
                     served until then"
                ),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(crate::core::fsm::builtin(name).unwrap_or_default())
        }
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
