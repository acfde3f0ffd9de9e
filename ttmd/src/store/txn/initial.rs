//! The files a creation derives from `txn_start` — the initial ctx files
//! (templates filled with id, description, target) and `state.json` — are
//! not synced before a creation is acknowledged (only the log and the
//! directories are): the checkpoint syncs them within a second, and after a
//! crash recovery rebuilds any of them the crash lost from the durable log,
//! before anything can read them. This file holds both halves: the
//! transaction a creation builds in memory (so nothing just written is read
//! back), and the rebuild.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use super::open::{RecoveredLog, assemble};
use super::{CTX_DIR, Txn};
use crate::core::ctx::{self, Entry};
use crate::core::event::{Body, Event};
use crate::core::state::State;
use crate::core::templates;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log::{self, Line};

impl Txn {
    /// The transaction a creation just wrote, assembled from what it wrote
    /// (`lines`, the log's bytes; `folded`, their fold) instead of reading
    /// its files back. `log` is the open log file. Its `state.json` and
    /// initial ctx files are the module's to have synced (the checkpoint
    /// syncs a round of creations at once), not [`Txn::sync_view`]'s.
    pub fn created(dir: &Path, log: File, lines: &[u8], folded: State, d: Durability) -> Txn {
        let path = dir.join(super::EVENTS_FILE);
        let (parsed, len) = log::parse_lines(lines, 1);
        let recovered = RecoveredLog {
            path,
            file: log,
            lines: parsed,
            len: len as u64,
        };
        assemble(dir, recovered, folded, d, false)
    }

    /// Syncs what a creation left unsynced — the initial ctx files
    /// `names`, `ctx/`, `state.json` and the directory — one by one: the
    /// checkpoint's fallback when it cannot sync the file system at once.
    /// A file gone meanwhile (the transaction moved away) is skipped.
    pub fn sync_created(&self, names: &[String]) -> Result<()> {
        if self.is_removed() || !self.durability.syncs() {
            return Ok(());
        }
        let ctx_dir = self.dir.join(CTX_DIR);
        let files = names.iter().map(|n| ctx_dir.join(n));
        let view = self.dir.join(super::STATE_FILE);
        let all = files.chain([ctx_dir.clone(), view, self.dir.clone()]);
        for path in all {
            match File::open(&path).and_then(|f| f.sync_all()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound && !self.is_removed() => {
                    return Err(Error::io("syncing", path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The initial ctx files the log's `txn_start` (its first line) derives,
/// with their content, but for those a later `evidence_added` replaced.
/// `None` when the first line is no `txn_start`, or when the templates
/// filled today do not give the digest it recorded (another version made
/// them): then nothing can be rebuilt.
pub fn expected_initial(lines: &[Line]) -> Option<Vec<(&'static str, String)>> {
    let (files, recorded) = filled(lines.first()?)?;
    if ctx::digest(&entries(&files)) != recorded {
        return None;
    }
    let replaced: HashSet<String> = lines[1..]
        .iter()
        .filter_map(|l| match l.logged().event {
            Event::Body(Body::EvidenceAdded { file, .. }) => Some(file),
            _ => None,
        })
        .collect();
    Some(
        files
            .into_iter()
            .filter(|(name, _)| !replaced.contains(*name))
            .collect(),
    )
}

/// The templates filled as the `txn_start` line `first` says, and the
/// ctx digest it recorded.
fn filled(first: &Line) -> Option<(Vec<(&'static str, String)>, String)> {
    let Event::Body(Body::Start {
        txn_id,
        description,
        target,
        module,
        ctx_digest,
        ..
    }) = first.logged().event
    else {
        return None;
    };
    let files = templates::initial_ctx(&module, &txn_id, &description, &target);
    Some((files, ctx_digest))
}

/// The ctx entries (name, size, sha256) of `files`.
pub fn entries(files: &[(&'static str, String)]) -> Vec<Entry> {
    files
        .iter()
        .map(|(name, text)| Entry {
            name: name.to_string(),
            bytes: text.len() as u64,
            sha256: ctx::sha256_hex(text.as_bytes()),
        })
        .collect()
}

/// Whether `found` is what a crash leaves of a new file whose content was
/// `expected` but never synced: nothing, a prefix, or zeros where the data
/// did not reach the disk. Anything else (an edit by hand) is left alone.
fn lost_by_a_crash(found: &[u8], expected: &[u8]) -> bool {
    found != expected && (expected.starts_with(found) || found.contains(&0))
}

/// Rewrites (synced) each initial ctx file a crash lost — missing, empty,
/// cut short or zero-filled — from the log's `txn_start`. Read-only: says
/// what it would do. Returns one line per file.
pub(super) fn rebuild_initial_ctx(
    ctx_dir: &Path,
    lines: &[Line],
    durability: Durability,
    read_only: bool,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (name, text) in expected_initial(lines).unwrap_or_default() {
        let found = match fsio::read_file(&ctx_dir.join(name)) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // Unreadable (a symlink, a directory): left for ctx to report.
            Err(_) => continue,
        };
        if found
            .as_deref()
            .is_some_and(|f| !lost_by_a_crash(f, text.as_bytes()))
        {
            continue;
        }
        if !read_only {
            fsio::ensure_dir(ctx_dir)?;
            let synced = match durability {
                Durability::None => Durability::None,
                _ => Durability::Fsync,
            };
            fsio::atomic_write(ctx_dir, name, text.as_bytes(), synced)?;
        }
        done.push(format!(
            "rebuilt initial ctx file {name} from the log's txn_start: a crash lost it before \
             it was synced"
        ));
    }
    Ok(done)
}

/// Whether the initial ctx files of the log whose first line is `first`
/// look whole on disk by their sizes alone (a missing or cut-short file
/// does not): a finished transaction whose files pass is trusted without a
/// full load. Only when a size differs is the recorded digest checked
/// (hashing every start would cost start-up), so files other templates
/// made, or later evidence replaced, do not force a full load.
pub fn initial_sizes_match(ctx_dir: &Path, first: &[u8]) -> bool {
    let (lines, _) = log::parse_lines(&[first, b"\n"].concat(), 1);
    let Some((files, _)) = lines.first().and_then(filled) else {
        return true;
    };
    let whole = |(name, text): &(&str, String)| {
        std::fs::symlink_metadata(ctx_dir.join(name)).is_ok_and(|m| m.len() == text.len() as u64)
    };
    if files.iter().all(whole) {
        return true;
    }
    // Rebuildable, and short: only a full load can tell (it reads the log).
    expected_initial(&lines).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Meta;

    fn start_line(module: &str) -> (String, Vec<(&'static str, String)>) {
        let files = templates::initial_ctx(module, "t-1", "fix the thing", "main");
        let start = Body::Start {
            txn_id: "t-1".into(),
            description: "fix the thing".into(),
            target: "main".into(),
            agent: "me".into(),
            module: module.into(),
            stage: "PLAN".into(),
            ctx_digest: ctx::digest(&entries(&files)),
            time: Default::default(),
        };
        let meta = Meta {
            ts: "2026-12-02T00:00:00.000Z".into(),
            seq: 1,
            request_id: None,
            client: None,
        };
        (start.to_line(&meta), files)
    }

    fn parsed(text: &str) -> Vec<Line> {
        log::parse_lines(text.as_bytes(), 1).0
    }

    #[test]
    fn rebuilds_missing_empty_and_torn_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let ctx_dir = dir.path().join(CTX_DIR);
        std::fs::create_dir(&ctx_dir).unwrap();
        let (line, files) = start_line("rag");
        assert_eq!(files.len(), 3);
        let lines = parsed(&line);
        // One missing, one empty, one zero-filled.
        std::fs::write(ctx_dir.join(files[1].0), "").unwrap();
        std::fs::write(ctx_dir.join(files[2].0), vec![0u8; files[2].1.len()]).unwrap();
        let done = rebuild_initial_ctx(&ctx_dir, &lines, Durability::Fsync, false).unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        for (name, text) in &files {
            assert_eq!(std::fs::read_to_string(ctx_dir.join(name)).unwrap(), *text);
        }
        // Whole files, and an edit by hand, are left alone.
        std::fs::write(ctx_dir.join(files[0].0), "edited by hand").unwrap();
        let done = rebuild_initial_ctx(&ctx_dir, &lines, Durability::Fsync, false).unwrap();
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(
            std::fs::read_to_string(ctx_dir.join(files[0].0)).unwrap(),
            "edited by hand"
        );
    }

    #[test]
    fn a_cut_short_file_is_rebuilt_and_read_only_only_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let ctx_dir = dir.path().join(CTX_DIR);
        std::fs::create_dir(&ctx_dir).unwrap();
        let (line, files) = start_line("ttm");
        let lines = parsed(&line);
        let (name, text) = &files[0];
        std::fs::write(ctx_dir.join(name), &text[..text.len() / 2]).unwrap();
        std::fs::write(ctx_dir.join(files[1].0), &files[1].1).unwrap();
        let done = rebuild_initial_ctx(&ctx_dir, &lines, Durability::Fsync, true).unwrap();
        assert_eq!(done.len(), 1);
        assert_ne!(std::fs::read_to_string(ctx_dir.join(name)).unwrap(), *text);
        assert!(!initial_sizes_match(&ctx_dir, line.trim_end().as_bytes()));
        let done = rebuild_initial_ctx(&ctx_dir, &lines, Durability::None, false).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(std::fs::read_to_string(ctx_dir.join(name)).unwrap(), *text);
        assert!(initial_sizes_match(&ctx_dir, line.trim_end().as_bytes()));
    }

    #[test]
    fn files_replaced_later_or_made_by_other_templates_are_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        let ctx_dir = dir.path().join(CTX_DIR);
        std::fs::create_dir(&ctx_dir).unwrap();
        let (line, files) = start_line("ttm");
        let added = Body::EvidenceAdded {
            file: files[0].0.into(),
            description: String::new(),
            bytes: 0,
            sha256: "x".into(),
            ctx_digest: "y".into(),
        }
        .to_line(&Meta {
            ts: "2026-12-02T00:00:01.000Z".into(),
            seq: 2,
            request_id: None,
            client: None,
        });
        let expected = expected_initial(&parsed(&(line.clone() + &added))).unwrap();
        assert_eq!(expected.len(), 1);
        assert_eq!(expected[0].0, files[1].0);
        // Another digest: other templates made these files.
        let other = line.replace("\"ctx_digest\":\"", "\"ctx_digest\":\"0");
        assert!(expected_initial(&parsed(&other)).is_none());
        let done = rebuild_initial_ctx(&ctx_dir, &parsed(&other), Durability::None, false);
        assert!(done.unwrap().is_empty());
    }
}
