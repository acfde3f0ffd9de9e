//! The tree on disk (SPEC §1): synchronous file code, no gRPC. The service
//! calls into it from blocking threads.

pub mod fsio;
pub mod lock;
pub mod log;
pub mod module;
pub mod reconcile;
pub mod retention;
pub mod txn;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::core::topology::Topology;
use crate::core::{Error, Result, id};

pub use fsio::Durability;
pub use module::Module;
pub use txn::Txn;

/// The topology file, relative to the root.
pub const TOPOLOGY_FILE: &str = "ttm/topology.json";

/// Durable events kept for a slow subscriber of [`Store::durable_events`]
/// before it starts missing some (it is told how many).
pub const EVENT_FEED: usize = 16 * 1024;

/// A whole `$TETRA_DIR`.
#[derive(Debug)]
pub struct Store {
    /// The tree's root.
    pub root: PathBuf,
    durability: Durability,
    /// Modules kept outside the root: name → directory.
    module_dirs: BTreeMap<String, PathBuf>,
    /// Loaded modules by name; entries are added, never replaced.
    modules: RwLock<BTreeMap<String, Arc<Module>>>,
    /// The topology as last loaded (at start and on reload), or why the
    /// file could not be used.
    topology: RwLock<Result<Arc<Topology>, String>>,
    /// Change feeds by module name, made on first use by a watcher or the
    /// module, so watching a module that does not exist yet works.
    changes: std::sync::Mutex<BTreeMap<String, broadcast::Sender<module::Change>>>,
    /// Why the tree cannot be written (its file system is mounted
    /// read-only), found at open: then the daemon serves reads only.
    read_only: Option<String>,
    /// Every module's durable events, for hooks and metrics.
    events: broadcast::Sender<module::Durable>,
}

impl Store {
    /// Opens a tree, creating the root if needed, and loads (recovers) every
    /// module in it. A module that cannot be loaded is reported and retried
    /// on its next request.
    pub fn open(
        root: &Path,
        durability: Durability,
        module_dirs: BTreeMap<String, PathBuf>,
    ) -> Result<Store> {
        let read_only = fsio::read_only(root);
        if read_only.is_none() {
            fsio::ensure_dir(root)?;
        }
        let topology = load_topology(root);
        if let Err(e) = &topology {
            tracing::error!("{e}");
        }
        let store = Store {
            root: root.to_path_buf(),
            durability,
            module_dirs,
            modules: RwLock::new(BTreeMap::new()),
            topology: RwLock::new(topology),
            changes: std::sync::Mutex::new(BTreeMap::new()),
            read_only,
            events: broadcast::channel(EVENT_FEED).0,
        };
        let mut names = store.module_names_on_disk()?;
        names.extend(store.module_dirs.keys().cloned());
        for name in names {
            if let Err(e) = store.module(&name, false) {
                tracing::error!(module = %name, error = %e, "module not served");
            }
        }
        // The default module exists from the start, as the bash version's
        // `ttm_init` made `$TETRA_DIR/ttm/txns`: scripts that look there (or
        // list it) before their first create find an empty module.
        let missing = !root.join(id::DEFAULT_MODULE).join("txns").is_dir();
        if store.read_only.is_some() && missing {
            // Made by the first write, once the tree is writable again.
        } else if let Err(e) = store.module(id::DEFAULT_MODULE, true) {
            tracing::error!(module = id::DEFAULT_MODULE, error = %e, "module not served");
        }
        Ok(store)
    }

    /// Follows every event made durable from now on, in every module
    /// (hooks and metrics subscribe; nothing waits for them).
    pub fn durable_events(&self) -> broadcast::Receiver<module::Durable> {
        self.events.subscribe()
    }

    /// Why the tree cannot be written, when it is mounted read-only: the
    /// daemon then serves reads and refuses writes ([`Store::writable`]).
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    /// Refuses a write on a read-only tree, saying what to do.
    pub fn writable(&self) -> Result<()> {
        match &self.read_only {
            None => Ok(()),
            Some(why) => Err(Error::ReadOnlyTree(format!(
                "ttmd serves {} read-only ({why}), so it refuses writes; remount the tree \
                 read-write, then restart ttmd (`ttmctl daemon stop`, then start it again, \
                 or `systemctl restart ttmd`): `ttmctl daemon reload` does not leave \
                 read-only mode",
                self.root.display()
            ))),
        }
    }

    /// The start-up repairs the read-only tree kept from being made, one
    /// line each ("module/txn: what").
    pub fn pending_repairs(&self) -> Vec<String> {
        self.modules()
            .iter()
            .flat_map(|m| {
                let name = m.name.clone();
                m.pending_repairs()
                    .into_iter()
                    .map(move |r| format!("{name}/{r}"))
            })
            .collect()
    }

    /// How this tree's files are synced.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The modules in the root now: valid names with a `txns/` directory.
    pub fn module_names_on_disk(&self) -> Result<Vec<String>> {
        let list = fs::read_dir(&self.root).map_err(|e| Error::io("listing", &self.root, e))?;
        Ok(list
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| id::validate_module(n).is_ok() && self.root.join(n).join("txns").is_dir())
            .collect())
    }

    /// Subscribes to the changes of module `name` (empty: `ttm`), whether
    /// or not it exists yet.
    pub fn watch(&self, name: &str) -> Result<broadcast::Receiver<module::Change>> {
        let name = if name.is_empty() {
            id::DEFAULT_MODULE
        } else {
            name
        };
        id::validate_module(name)?;
        Ok(self.changes_of(name).subscribe())
    }

    fn changes_of(&self, name: &str) -> broadcast::Sender<module::Change> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    /// Syncs every view a write left unsynced (the background half of
    /// [`Durability::Fsync`]) and lets go of finished transactions nobody
    /// uses (see [`Module::checkpoint`]).
    pub fn checkpoint(&self) {
        for m in self.modules() {
            m.checkpoint();
        }
    }

    /// The loaded modules.
    pub fn modules(&self) -> Vec<Arc<Module>> {
        self.modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The module `name` (empty: `ttm`) if it is loaded: no disk access.
    pub fn loaded_module(&self, name: &str) -> Option<Arc<Module>> {
        let name = if name.is_empty() {
            id::DEFAULT_MODULE
        } else {
            name
        };
        let modules = self.modules.read().unwrap_or_else(|p| p.into_inner());
        modules.get(name).cloned()
    }

    /// The module `name` (empty: `ttm`), loading it on first use; with
    /// `create`, making it if it does not exist.
    pub fn module(&self, name: &str, create: bool) -> Result<Arc<Module>> {
        let name = if name.is_empty() {
            id::DEFAULT_MODULE
        } else {
            name
        };
        id::validate_module(name)?;
        if let Some(m) = self
            .modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(m.clone());
        }
        let mut map = self.modules.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(name) {
            return Ok(m.clone());
        }
        let dir = self
            .module_dirs
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.root.join(name));
        let module = Arc::new(Module::open(
            &dir,
            name,
            self.durability,
            create,
            self.read_only.is_some(),
            self.changes_of(name),
        )?);
        module.feed_events(self.events.clone());
        map.insert(name.to_string(), module.clone());
        Ok(module)
    }

    /// The topology loaded at start or by the last reload. Without a good
    /// one (a malformed file at start), the error names the file.
    pub fn topology(&self) -> Result<Arc<Topology>> {
        match &*self.topology.read().unwrap_or_else(|p| p.into_inner()) {
            Ok(t) => Ok(t.clone()),
            Err(message) => Err(Error::Refused(message.clone())),
        }
    }

    /// Re-reads the topology file. A malformed file is refused and the
    /// topology in use kept; says what happened.
    pub fn reload_topology(&self) -> Result<String, String> {
        let fresh = load_topology(&self.root);
        let mut current = self.topology.write().unwrap_or_else(|p| p.into_inner());
        match fresh {
            Ok(t) => {
                *current = Ok(t);
                Ok("topology reloaded".into())
            }
            Err(e) if current.is_ok() => Err(format!("{e}; keeping the topology in use")),
            Err(e) => {
                *current = Err(e.clone());
                Err(e)
            }
        }
    }
}

/// Reads `<root>/ttm/topology.json`, or the built-in topology without one.
fn load_topology(root: &Path) -> Result<Arc<Topology>, String> {
    let path = root.join(TOPOLOGY_FILE);
    match fsio::read_file(&path) {
        Ok(bytes) => Topology::from_json(&String::from_utf8_lossy(&bytes), &path.to_string_lossy())
            .map(Arc::new)
            .map_err(|m| {
                format!(
                    "{m}; fix the file (then reload ttmd) or remove it for the built-in topology"
                )
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Arc::new(Topology::builtin())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_audit;
