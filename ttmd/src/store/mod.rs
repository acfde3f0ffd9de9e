//! The tree on disk (SPEC §1): synchronous file code, no gRPC. The service
//! calls into it from blocking threads.

pub mod fsio;
pub mod lock;
pub mod log;
pub mod module;
pub mod txn;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::core::topology::Topology;
use crate::core::{Error, Result, id};

pub use fsio::Durability;
pub use module::Module;
pub use txn::Txn;

/// The topology file, relative to the root.
pub const TOPOLOGY_FILE: &str = "ttm/topology.json";

/// A whole `$TETRA_DIR`.
#[derive(Debug)]
pub struct Store {
    /// The tree's root.
    pub root: PathBuf,
    durability: Durability,
    /// Loaded modules by name; entries are added, never replaced.
    modules: RwLock<BTreeMap<String, Arc<Module>>>,
}

impl Store {
    /// Opens a tree, creating the root if needed, and loads (recovers) every
    /// module in it. A module that cannot be loaded is reported and retried
    /// on its next request.
    pub fn open(root: &Path, durability: Durability) -> Result<Store> {
        fsio::ensure_dir(root)?;
        let store = Store {
            root: root.to_path_buf(),
            durability,
            modules: RwLock::new(BTreeMap::new()),
        };
        let list = fs::read_dir(root).map_err(|e| Error::io("listing", root, e))?;
        for entry in list.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if id::validate_module(&name).is_err() || !entry.path().join("txns").is_dir() {
                continue;
            }
            if let Err(e) = store.module(&name, false) {
                tracing::error!(module = %name, error = %e, "module not served");
            }
        }
        Ok(store)
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
        let module = Arc::new(Module::open(&self.root, name, self.durability, create)?);
        map.insert(name.to_string(), module.clone());
        Ok(module)
    }

    /// The current topology: the file if present (read on every call, so an
    /// edit takes effect at once), else the built-in one.
    pub fn topology(&self) -> Result<Topology> {
        let path = self.root.join(TOPOLOGY_FILE);
        match fsio::read_file(&path) {
            Ok(bytes) => {
                Topology::from_json(&String::from_utf8_lossy(&bytes), &path.to_string_lossy())
                    .map_err(|message| Error::Corrupt {
                        path: path.clone(),
                        message: format!(
                            "{message}; fix the file or remove it for the built-in topology"
                        ),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Topology::builtin()),
            Err(e) => Err(Error::io("reading", path, e)),
        }
    }
}

#[cfg(test)]
mod tests;
