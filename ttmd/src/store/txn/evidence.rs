//! Incoming evidence (ctx/ files): streamed into a temporary file that a
//! guard removes unless the file is stored, then stored through the one
//! mutation path. The file becomes `.ttmd-pending-<name>` (durably) before
//! its event is appended, and `<name>` after: a crash in between leaves a
//! pending file that recovery finishes if the log names it and deletes if
//! not, so ctx/ never holds evidence the log lacks.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::rename_noreplace;
use super::{CTX_DIR, Client, Effect, Guards, Inner, Outcome, PENDING_PREFIX, Txn, lock};
use crate::core::ctx::{self, Entry};
use crate::core::event::Body;
use crate::core::fsm::Fsm;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};

/// An incoming evidence file under a temporary name inside ctx/ (so storing
/// it is a rename within one directory). The file is removed when this is
/// dropped, unless it was stored: on an error, while a panic unwinds, and
/// when the client's upload stream goes away with the request holding it.
#[derive(Debug)]
pub struct TempEvidence {
    path: PathBuf,
}

impl TempEvidence {
    /// Where the upload is written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempEvidence {
    fn drop(&mut self) {
        // Once stored, the name is gone (renamed) and this finds nothing.
        let _ = fs::remove_file(&self.path);
    }
}

/// What the uploader says about an evidence file it sent.
#[derive(Debug, Clone)]
pub struct NewEvidence {
    pub bytes: u64,
    pub sha256: String,
    pub description: String,
    /// The name of the file the client read, for its extension.
    pub file_name: String,
}

/// A staged `.ttmd-pending-<name>`: removed when dropped until its event
/// is logged (then the log names it, and recovery would finish it).
struct Pending {
    path: PathBuf,
    logged: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.logged {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Storing one evidence file, as a mutation's effect on ctx/.
struct Store<'a> {
    ctx_dir: PathBuf,
    temp: &'a TempEvidence,
    durability: Durability,
    /// The entry the file becomes, decided with the event.
    entry: Option<Entry>,
    pending: Option<Pending>,
}

impl Effect for Store<'_> {
    // The rename names the file only once the log does.
    const WRITES_LINE_FIRST: bool = true;

    fn before_append(&mut self, _inner: &mut Inner) -> Result<()> {
        let Some(entry) = &self.entry else {
            return Ok(());
        };
        let path = self.ctx_dir.join(format!("{PENDING_PREFIX}{}", entry.name));
        rename_noreplace(&self.temp.path, &path).map_err(|e| Error::io("storing", &path, e))?;
        self.pending = Some(Pending {
            path,
            logged: false,
        });
        fsio::sync_dir(&self.ctx_dir, self.durability)
    }

    fn after_append(&mut self, inner: &mut Inner) -> Result<()> {
        let (Some(entry), Some(pending)) = (self.entry.take(), self.pending.as_mut()) else {
            return Ok(());
        };
        // Logged: the file takes its name whatever happens next (recovery
        // would finish this rename).
        pending.logged = true;
        let target = self.ctx_dir.join(&entry.name);
        if let Some(entries) = &mut inner.ctx {
            entries.push(entry);
        }
        // The line is appended: whatever fails now must not fail the call
        // (a retry without a request id would store the file twice).
        // Recovery finishes the rename, since the log names the file.
        if let Err(e) = rename_noreplace(&pending.path, &target) {
            tracing::warn!(file = %target.display(), error = %e,
                "evidence is logged but still under its pending name; the next start finishes it");
        }
        Ok(())
    }
}

impl Txn {
    /// Creates the temporary file an incoming evidence file is streamed
    /// into, refusing a symlink planted as ctx/. The guard removes it
    /// unless [`Txn::add_evidence`] stores it.
    pub fn create_temp_evidence(&self) -> Result<(TempEvidence, File)> {
        let ctx_dir = self.dir.join(CTX_DIR);
        let name = fsio::temp_name("evidence");
        let file = fsio::create_in(&ctx_dir, &name)?;
        let temp = TempEvidence {
            path: ctx_dir.join(name),
        };
        Ok((temp, file))
    }

    /// Stores an evidence file already written to `temp` under its ctx
    /// number, and logs it, through the one mutation path (so a finished
    /// transaction refuses it like any change). At most `max_files` files.
    pub fn add_evidence(
        &self,
        fsm: &Fsm,
        max_files: usize,
        temp: TempEvidence,
        file: &NewEvidence,
        guards: &Guards,
        client: &Client,
    ) -> Result<Outcome> {
        let ctx_dir = self.dir.join(CTX_DIR);
        let mut store = Store {
            ctx_dir: ctx_dir.clone(),
            temp: &temp,
            durability: self.durability,
            entry: None,
            pending: None,
        };
        let outcome = self.mutate_with(fsm, guards, client, &mut store, |inner, store, _| {
            let (entry, body) = self.evidence_event(inner, max_files, file)?;
            store.entry = Some(entry);
            Ok(body)
        })?;
        if !outcome.replayed
            && let Err(e) = fsio::sync_dir(&ctx_dir, self.durability)
        {
            // The log line is durable: the evidence is stored (recovery
            // finishes a rename the crash lost). The checkpoint retries.
            tracing::warn!(txn = %self.id, error = %e, "cannot sync ctx/ yet; the checkpoint retries");
            self.ctx_dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(outcome)
    }

    /// The name the file gets (numbers continue after the highest in use)
    /// and the event that records it with the new ctx digest. The cached
    /// listing changes only once the event is logged.
    fn evidence_event(
        &self,
        inner: &mut Inner,
        max_files: usize,
        file: &NewEvidence,
    ) -> Result<(Entry, Body)> {
        let entries = match &mut inner.ctx {
            Some(e) => e,
            none => none.insert(scan_ctx(&self.dir.join(CTX_DIR))?),
        };
        if entries.len() >= max_files {
            return Err(Error::OverLimit(format!(
                "transaction {} already has {max_files} ctx files, the limit \
                 (limits.ctx_files); archive them into one file instead",
                self.id
            )));
        }
        let number =
            ctx::next_number(entries.iter().map(|e| e.name.as_str())).ok_or_else(|| {
                Error::OverLimit(format!(
                    "ctx/ of {} holds a file numbered so high that no number is left above it; \
                 move that file away",
                    self.id
                ))
            })?;
        let entry = Entry {
            name: ctx::evidence_name(number, &file.description, &file.file_name)?,
            bytes: file.bytes,
            sha256: file.sha256.clone(),
        };
        let mut after = entries.clone();
        after.push(entry.clone());
        let body = Body::EvidenceAdded {
            file: entry.name.clone(),
            description: file.description.clone(),
            bytes: file.bytes,
            sha256: file.sha256.clone(),
            ctx_digest: ctx::digest(&after),
        };
        Ok((entry, body))
    }

    /// The ctx/ files with their hashes, in name order.
    pub fn ctx_entries(&self) -> Result<Vec<Entry>> {
        let mut inner = lock(&self.inner);
        if inner.ctx.is_none() {
            inner.ctx = Some(scan_ctx(&self.dir.join(CTX_DIR))?);
        }
        Ok(inner.ctx.clone().unwrap_or_default())
    }
}

/// Lists ctx/ and hashes each regular file; symlinks and other oddities are
/// skipped, never followed.
pub fn scan_ctx(dir: &Path) -> Result<Vec<Entry>> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    fsio::require_real_dir(dir, "ctx directory")?;
    let mut entries = Vec::new();
    let list = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in list.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || !ctx::is_ctx_name(&name) {
            continue;
        }
        let path = entry.path();
        let mut f = fsio::open_read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io("reading", &path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        entries.push(Entry {
            name,
            bytes,
            sha256: ctx::hex(&h.finalize()),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}
