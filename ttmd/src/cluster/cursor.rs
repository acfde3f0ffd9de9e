//! The mirror's persisted pushed-seq cursors: `<root>/run/mirror.json`,
//! `{"<module>/<txn>": <last seq pushed>}`, private to the daemon (like
//! `run/ttmd.lock`; SPEC §1's layout is unchanged).
//!
//! A hint, not the truth: every push compares against etcd's own record
//! (the state key's revision and its `mirror_seq`), so a lost or stale
//! file costs one read per transaction, never a gap or a duplicate. What
//! it saves: at start, only transactions whose log is past their cursor
//! are looked at in etcd.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::store::fsio::{self, Durability};

/// The file's name under `<root>/run/`.
pub const FILE: &str = "mirror.json";

/// The cursors, in memory and in their file.
#[derive(Debug)]
pub struct Cursors {
    dir: PathBuf,
    map: Mutex<(BTreeMap<String, u64>, bool)>,
}

impl Cursors {
    /// Reads `<root>/run/mirror.json` (a missing or unreadable file is an
    /// empty one: etcd has the truth).
    pub fn open(root: &std::path::Path) -> Cursors {
        let dir = root.join("run");
        let map = fsio::read_file(&dir.join(FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Cursors {
            dir,
            map: Mutex::new((map, false)),
        }
    }

    fn key(module: &str, txn: &str) -> String {
        format!("{module}/{txn}")
    }

    /// The last seq pushed of `module/txn` (0: none known).
    pub fn get(&self, module: &str, txn: &str) -> u64 {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.0.get(&Cursors::key(module, txn)).copied().unwrap_or(0)
    }

    /// Records that `module/txn` is pushed up to `seq`.
    pub fn set(&self, module: &str, txn: &str, seq: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let old = map.0.insert(Cursors::key(module, txn), seq);
        map.1 |= old != Some(seq);
    }

    /// The cursors of `module`'s transactions, as (txn, seq).
    pub fn of_module(&self, module: &str) -> Vec<(String, u64)> {
        let prefix = Cursors::key(module, "");
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.0
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), *v)))
            .collect()
    }

    /// Forgets `module/txn` (archived or removed).
    pub fn forget(&self, module: &str, txn: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.1 |= map.0.remove(&Cursors::key(module, txn)).is_some();
    }

    /// Writes the file if anything changed since the last write. Not
    /// synced: a cursor lost in a crash costs a read from etcd.
    pub fn save(&self) {
        let text = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if !map.1 {
                return;
            }
            map.1 = false;
            serde_json::to_vec(&map.0).unwrap_or_default()
        };
        if let Err(e) = fsio::atomic_write(&self.dir, FILE, &text, Durability::None) {
            tracing::debug!("mirror cursors not saved: {e}");
        }
    }
}
