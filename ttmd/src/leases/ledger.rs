//! The fencing-token high-water marks of a tree: per lease name, the last
//! number handed out (token or queue ticket). Tokens must increase for the
//! life of the tree, also after the transactions that held them are
//! archived or deleted, so the marks live in a file of their own,
//! `<root>/ttm/leases.json`, replaced atomically and synced before a
//! grant is acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};

/// The ledger's file name, beside `topology.json`.
pub const LEDGER_FILE: &str = "leases.json";

/// A source of fencing tokens: strictly increasing per name. The local
/// backend keeps them in [`Ledger`]; a cluster backend would use the lease
/// key's create-revision.
pub trait TokenSource: std::fmt::Debug + Send {
    /// The next number for `name`, durable before it is returned.
    fn next(&mut self, name: &str) -> Result<u64>;
    /// The last number handed out for `name` (0 when none).
    fn last(&self, name: &str) -> u64;
    /// Makes sure later numbers for `name` exceed `seen` (a token found in
    /// a log at start-up).
    fn raise(&mut self, name: &str, seen: u64);
}

/// The file-backed token source.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    durability: Durability,
    marks: BTreeMap<String, u64>,
}

impl Ledger {
    /// Reads the ledger of the tree at `root` (empty when there is none).
    pub fn open(root: &Path, durability: Durability) -> Result<Ledger> {
        let dir = root.join(crate::core::DEFAULT_MODULE);
        let path = dir.join(LEDGER_FILE);
        let marks = match fsio::read_file(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.clone(),
                message: format!(
                    "is not the lease ledger ttmd writes ({e}); restore it from a backup, or \
                     remove it after checking no old fencing token is still in use"
                ),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        Ok(Ledger {
            dir,
            durability,
            marks,
        })
    }

    fn save(&self) -> Result<()> {
        fsio::ensure_dir(&self.dir)?;
        let mut text = serde_json::to_vec_pretty(&self.marks).unwrap_or_default();
        text.push(b'\n');
        fsio::atomic_write(&self.dir, LEDGER_FILE, &text, self.durability)
    }
}

impl TokenSource for Ledger {
    fn next(&mut self, name: &str) -> Result<u64> {
        let n = self.last(name).saturating_add(1);
        let before = self.marks.insert(name.to_string(), n);
        if let Err(e) = self.save() {
            // Not durable: not handed out, and the mark stays where it was.
            match before {
                Some(b) => self.marks.insert(name.to_string(), b),
                None => self.marks.remove(name),
            };
            return Err(e);
        }
        Ok(n)
    }

    fn last(&self, name: &str) -> u64 {
        self.marks.get(name).copied().unwrap_or(0)
    }

    fn raise(&mut self, name: &str, seen: u64) {
        if seen > self.last(name) {
            self.marks.insert(name.to_string(), seen);
        }
    }
}
