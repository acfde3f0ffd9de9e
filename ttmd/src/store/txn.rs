//! One transaction on disk and in memory. All its mutations go through
//! [`Txn::mutate`], under its own lock, in one order: check guards, build the
//! event, append it and sync (the log is the truth), then replace
//! `state.json` (the view). Different transactions never share a lock.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::core::ctx::{self, Entry};
use crate::core::event::{Body, Meta};
use crate::core::fsm::{DONE, FAIL};
use crate::core::state::{self, State};
use crate::core::summary::Summary;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log::{self, Line};

/// File names inside a transaction directory.
pub const STATE_FILE: &str = "state.json";
pub const EVENTS_FILE: &str = "events.ndjson";
pub const CTX_DIR: &str = "ctx";
pub const BUILD_DIR: &str = "build";
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Lines between two entries of the seq → offset index.
pub const MARK_EVERY: u64 = 256;

/// Prefix of an evidence file stored but not yet named by the log.
pub const PENDING_PREFIX: &str = ".ttmd-pending-";

/// Compare-and-set guards and the idempotency key of one mutation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guards {
    /// Refuse unless the transaction is in this stage.
    pub expect_stage: Option<String>,
    /// Refuse unless the last event has this seq.
    pub expect_seq: Option<u64>,
    /// Return the first answer if this key was already used.
    pub request_id: Option<String>,
}

/// How far the log is durably written; followers read up to here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Seq of the last complete line.
    pub seq: u64,
    /// Bytes of complete lines.
    pub len: u64,
}

/// What a mutation produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state after the mutation.
    pub state: Arc<State>,
    /// The event that recorded it (for a replayed request: the first one).
    pub event: Arc<Map<String, Value>>,
    /// True when a request id matched an earlier mutation and nothing was
    /// written.
    pub replayed: bool,
}

/// Who asked for a mutation, recorded as the event's `client`.
pub type Client = Option<Value>;

/// A loaded transaction.
#[derive(Debug)]
pub struct Txn {
    /// The transaction id (its directory name).
    pub id: String,
    /// `<module>/txns/<id>`.
    pub dir: PathBuf,
    /// The request id its creation carried (in `txn_start`), so a retried
    /// create finds it.
    pub create_request: Option<String>,
    durability: Durability,
    /// The writer side. A std mutex: it is held across file I/O on blocking
    /// threads only, never across an `.await`.
    inner: Mutex<Inner>,
    /// The latest state, for readers that must not wait behind a sync.
    snapshot: Mutex<Arc<State>>,
    /// Where the durable log ends, for followers.
    committed: watch::Sender<Committed>,
    /// Group commit: whether a sync is running. Writers that appended while
    /// one runs wait on `synced` and are covered by the next sync together.
    syncing: Mutex<bool>,
    synced: Condvar,
    /// Held while `state.json` and the snapshot are brought into line, so a
    /// reconcile never compares a new file with an old snapshot.
    view: Mutex<()>,
    /// Set when the directory was removed from the tree behind our back.
    removed: std::sync::atomic::AtomicBool,
    /// `state.json` was replaced without a sync; the checkpoint syncs it.
    view_dirty: std::sync::atomic::AtomicBool,
    /// (seq, byte offset) of every [`MARK_EVERY`]-th line, so a follower
    /// starting near the end of a long log seeks instead of scanning it.
    marks: Mutex<Vec<(u64, u64)>>,
}

#[derive(Debug)]
struct Inner {
    /// Shared with the snapshot until the next change (copy on write), so
    /// an idle transaction holds one copy of its state, not two.
    state: Arc<State>,
    /// The log opened for appending, while the transaction is live: opened
    /// on the first write, closed when it ends, so a tree of many finished
    /// transactions does not hold a descriptor for each.
    log: Option<File>,
    /// (device, inode) of the log when loaded: a log removed or replaced
    /// behind the daemon's back is never appended to.
    log_id: Option<(u64, u64)>,
    /// Bytes of complete lines in the log.
    len: u64,
    /// ctx/ entries with their hashes, computed on first need.
    ctx: Option<Vec<Entry>>,
    /// request id → the event it produced.
    requests: HashMap<String, Arc<Map<String, Value>>>,
}

impl Inner {
    /// The log opened for appending, opening it if needed; refused if the
    /// file at `path` is no longer the log this transaction was loaded
    /// from (deleted, replaced, or a symlink planted in its place).
    fn log_file(&mut self, path: &Path) -> Result<&mut File> {
        if file_id(path) != self.log_id || self.log_id.is_none() {
            self.log = None;
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: "was removed or replaced behind ttmd's back; nothing was written, \
                          and ttmd reloads the transaction from what is on disk"
                    .into(),
            });
        }
        let file = match self.log.take() {
            Some(f) => f,
            None => fsio::open_append(path, false).map_err(|e| Error::io("opening", path, e))?,
        };
        Ok(self.log.insert(file))
    }
}

/// (device, inode) of a regular file at `path`, not following a symlink.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (every field is
    // updated only after its file write succeeded), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn empty() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// Folds parsed lines from the start of a log.
fn fold_lines(lines: &[Line], module: &str) -> Result<State, state::FoldError> {
    state::fold(
        lines
            .iter()
            .map(|l| (l.seq, l.object.as_ref().unwrap_or(empty()))),
        module,
    )
}

/// A finished transaction read without loading it: its summary and the
/// request id its creation carried. Only a transaction whose files agree is
/// trusted this way: `state.json` parses and is DONE or FAIL, the log ends in
/// a newline, has exactly `seq` lines, and its last line is the commit or
/// failure that made that stage. Anything else (live, torn, stale, edited,
/// foreign lines last) gives `None`, and the caller loads it fully, which
/// recovers it.
pub fn probe_finished(dir: &Path) -> Option<(Summary, Option<String>)> {
    let state: State =
        serde_json::from_slice(&fsio::read_file(&dir.join(STATE_FILE)).ok()?).ok()?;
    let made_by = match state.stage.as_str() {
        DONE => "txn_commit",
        FAIL => "txn_fail",
        _ => return None,
    };
    let log = fsio::read_file(&dir.join(EVENTS_FILE)).ok()?;
    let body = log.strip_suffix(b"\n")?;
    let lines = log.iter().filter(|&&b| b == b'\n').count() as u64;
    if lines != state.seq {
        return None;
    }
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last: Map<String, Value> = serde_json::from_slice(&body[last_start..]).ok()?;
    if last.get("event").and_then(Value::as_str) != Some(made_by)
        || last.get("seq").and_then(Value::as_u64) != Some(state.seq)
    {
        return None;
    }
    let first = &body[..body.iter().position(|&b| b == b'\n').unwrap_or(body.len())];
    // Most creations carry no request id: parse the first line only if it
    // can hold one.
    let create_request = if first.windows(12).any(|w| w == b"\"request_id\"") {
        serde_json::from_slice::<Map<String, Value>>(first)
            .ok()?
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    Some((Summary::of(&state), create_request))
}

impl Txn {
    /// Loads a transaction directory: drops a torn final log line, rebuilds
    /// `state.json` if it is missing or disagrees with the log, and adopts a
    /// state.json the bash version wrote. Returns what it had to repair.
    pub fn open(dir: &Path, module: &str, durability: Durability) -> Result<(Txn, Vec<String>)> {
        let mut repairs = Vec::new();
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fsio::require_real_dir(dir, "transaction directory")?;
        let cleaned = fsio::remove_temp_files(dir) + fsio::remove_temp_files(&dir.join(CTX_DIR));
        if cleaned > 0 {
            repairs.push(format!("removed {cleaned} leftover temporary file(s)"));
        }
        let log_path = dir.join(EVENTS_FILE);
        let bytes = fsio::read_file(&log_path)
            .map_err(|e| fsio::nofollow_error("reading", &log_path, e))?;
        let mut log_file =
            fsio::open_append(&log_path, false).map_err(|e| Error::io("opening", &log_path, e))?;
        let (mut lines, used) = log::parse_lines(&bytes, 1);
        if used < bytes.len() {
            log_file
                .set_len(used as u64)
                .and_then(|()| log_file.sync_data())
                .map_err(|e| Error::io("truncating torn line of", &log_path, e))?;
            repairs.push(format!(
                "dropped a torn final line of {} bytes from {EVENTS_FILE}",
                bytes.len() - used
            ));
        }
        let finished = finish_pending_evidence(&dir.join(CTX_DIR), &lines);
        repairs.extend(finished);
        let malformed = lines.iter().filter(|l| l.object.is_none()).count();
        if malformed > 0 {
            repairs.push(format!(
                "{malformed} line(s) of {EVENTS_FILE} are not JSON objects; they keep their seq \
                 and are ignored by the fold"
            ));
        }
        let corrupt = |message: String| Error::Corrupt {
            path: log_path.clone(),
            message,
        };
        let mut folded = fold_lines(&lines, module).map_err(|e| corrupt(e.to_string()))?;
        let mut len = used as u64;

        let state_path = dir.join(STATE_FILE);
        let on_disk: Option<Value> = fsio::read_file(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let log_is_legacy = lines
            .iter()
            .filter_map(|l| l.object.as_ref())
            .all(|o| !o.contains_key("seq"));
        let mut write_state = true;
        match on_disk {
            Some(Value::Object(legacy)) if log_is_legacy && !legacy.contains_key("seq") => {
                // Written by the bash version: keep its fields (user updates
                // live only there) by logging them, so the fold reproduces
                // them from now on.
                let meta = Meta {
                    ts: state::timestamp(Utc::now()),
                    seq: folded.seq + 1,
                    request_id: None,
                    client: None,
                };
                let body = Body::Adopted { state: legacy };
                let line = body.to_line(&meta);
                log::append(&mut log_file, len, &line, durability, &log_path)?;
                len += line.len() as u64;
                folded.apply(meta.seq, &body.to_object(&meta));
                lines.push(Line {
                    seq: meta.seq,
                    object: Some(body.to_object(&meta)),
                    text: line.trim_end().to_string(),
                    bytes: line.len() as u64,
                });
                repairs.push("adopted a state.json written by the bash version".into());
            }
            Some(v) => match serde_json::from_value::<State>(v) {
                Ok(s) if s == folded => write_state = false,
                Ok(s) if s.seq < folded.seq => {
                    repairs.push(format!(
                        "rebuilt {STATE_FILE}: it was at seq {} but the log is at {}",
                        s.seq, folded.seq
                    ));
                }
                _ => repairs.push(format!("rebuilt {STATE_FILE}: it contradicted the log")),
            },
            None => repairs.push(format!(
                "rebuilt {STATE_FILE}: it was missing or unreadable"
            )),
        }
        if write_state {
            // Like any view a write replaces (unsynced unless strict): the
            // checkpoint syncs it, a crash before then rebuilds it. A first start
            // on a tree without views (a bash tree, a generated one) then
            // costs no fsync per transaction.
            fsio::atomic_write(
                dir,
                STATE_FILE,
                folded.to_pretty_json().as_bytes(),
                durability.for_view(),
            )?;
        }
        let view_dirty = write_state && durability.defers_view_sync();

        let create_request = lines
            .first()
            .and_then(|l| l.object.as_ref())
            .and_then(|o| o.get("request_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let requests = lines
            .iter()
            .filter_map(|l| l.object.as_ref())
            .filter_map(|o| {
                let id = o.get("request_id")?.as_str()?.to_string();
                Some((id, Arc::new(o.clone())))
            })
            .collect();
        let mut marks = Vec::with_capacity(lines.len() / MARK_EVERY as usize + 1);
        let mut offset = 0u64;
        for l in &lines {
            if l.seq % MARK_EVERY == 1 {
                marks.push((l.seq, offset));
            }
            offset += l.bytes;
        }
        let committed = Committed {
            seq: folded.seq,
            len,
        };
        let folded = Arc::new(folded);
        let snapshot = folded.clone();
        let txn = Txn {
            id,
            dir: dir.to_path_buf(),
            create_request,
            durability,
            inner: Mutex::new(Inner {
                state: folded,
                log: None,
                log_id: file_id(&log_path),
                len,
                ctx: None,
                requests,
            }),
            snapshot: Mutex::new(snapshot),
            committed: watch::Sender::new(committed),
            syncing: Mutex::new(false),
            synced: Condvar::new(),
            view: Mutex::new(()),
            removed: std::sync::atomic::AtomicBool::new(false),
            view_dirty: std::sync::atomic::AtomicBool::new(view_dirty),
            marks: Mutex::new(marks),
        };
        Ok((txn, repairs))
    }

    /// The latest state.
    pub fn state(&self) -> Arc<State> {
        lock(&self.snapshot).clone()
    }

    /// Subscribes to the end of the durable log.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The end of the durable log now.
    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// The log's complete lines between byte `from` (a line boundary whose
    /// line is `first_seq`) and `to`, read from the file: the file is the
    /// truth followers see, including lines other programs appended.
    pub fn read_lines(&self, from: u64, to: u64, first_seq: u64) -> Result<(Vec<Line>, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        if to <= from {
            return Ok((Vec::new(), from));
        }
        let path = self.dir.join(EVENTS_FILE);
        let mut f = fsio::open_read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let mut buf = Vec::with_capacity((to - from) as usize);
        f.seek(SeekFrom::Start(from))
            .and_then(|_| f.take(to - from).read_to_end(&mut buf))
            .map_err(|e| Error::io("reading", &path, e))?;
        let (lines, used) = log::parse_lines(&buf, first_seq);
        Ok((lines, from + used as u64))
    }

    /// Applies one mutation. `make` sees the current state and returns the
    /// event to log (or a refusal); nothing is written when it refuses or a
    /// guard fails.
    pub fn mutate(
        &self,
        guards: &Guards,
        client: &Client,
        make: impl FnOnce(&State, DateTime<Utc>) -> Result<Body>,
    ) -> Result<Outcome> {
        self.refuse_if_removed()?;
        let (outcome, end) = {
            let mut inner = lock(&self.inner);
            self.catch_up(&mut inner, true)?;
            if let Some(done) = self.replay(&inner, guards) {
                (done, inner.len)
            } else {
                check_guards(&inner.state, guards)?;
                let now = Utc::now();
                let body = make(&inner.state, now)?;
                self.append(&mut inner, body, now, guards, client)?
            }
        };
        self.make_durable(end)?;
        Ok(outcome)
    }

    /// Stores an evidence file already written to `temp` (a path from
    /// [`Txn::temp_path`]) under its ctx number, and logs it.
    #[allow(clippy::too_many_arguments)]
    pub fn add_evidence(
        &self,
        max_files: usize,
        temp: &Path,
        bytes: u64,
        sha256: &str,
        description: &str,
        file_name: &str,
        guards: &Guards,
        client: &Client,
    ) -> Result<Outcome> {
        self.refuse_if_removed()?;
        let mut inner = lock(&self.inner);
        self.catch_up(&mut inner, true)?;
        if let Some(done) = self.replay(&inner, guards) {
            let end = inner.len;
            drop(inner);
            let _ = fs::remove_file(temp);
            self.make_durable(end)?;
            return Ok(done);
        }
        check_guards(&inner.state, guards)?;
        refuse_if_terminal(&inner.state)?;
        let ctx_dir = self.dir.join(CTX_DIR);
        let mut entries = match inner.ctx.take() {
            Some(e) => e,
            None => scan_ctx(&ctx_dir)?,
        };
        if entries.len() >= max_files {
            inner.ctx = Some(entries);
            let _ = fs::remove_file(temp);
            return Err(Error::OverLimit(format!(
                "transaction {} already has {max_files} ctx files, the limit \
                 (limits.ctx_files); archive them into one file instead",
                self.id
            )));
        }
        let number = ctx::next_number(entries.iter().map(|e| e.name.as_str()));
        let name = number
            .ok_or_else(|| {
                Error::OverLimit(format!(
                    "ctx/ of {} holds a file numbered so high that no number is left above it; \
                     move that file away",
                    self.id
                ))
            })
            .and_then(|n| ctx::evidence_name(n, description, file_name));
        let name = match name {
            Ok(n) => n,
            Err(e) => {
                inner.ctx = Some(entries);
                return Err(e);
            }
        };
        // The file becomes `.ttmd-pending-<name>` (durably) before its event
        // is appended, and `<name>` after: a crash in between leaves a
        // pending file that recovery finishes if the log names it and
        // deletes if not, so ctx/ never holds evidence the log lacks.
        let pending = ctx_dir.join(format!("{PENDING_PREFIX}{name}"));
        let target = ctx_dir.join(&name);
        let staged = rename_noreplace(temp, &pending)
            .map_err(|e| Error::io("storing", &pending, e))
            .and_then(|()| fsio::sync_dir(&ctx_dir, self.durability));
        if let Err(e) = staged {
            inner.ctx = Some(entries);
            let _ = fs::remove_file(temp);
            let _ = fs::remove_file(&pending);
            return Err(e);
        }
        entries.push(Entry {
            name: name.clone(),
            bytes,
            sha256: sha256.to_string(),
        });
        let digest = ctx::digest(&entries);
        inner.ctx = Some(entries);
        let body = Body::EvidenceAdded {
            file: name,
            description: description.to_string(),
            bytes,
            sha256: sha256.to_string(),
            ctx_digest: digest,
        };
        match self.append(&mut inner, body, Utc::now(), guards, client) {
            Ok((outcome, end)) => {
                // Logged: the file takes its name whatever happens next
                // (recovery would finish this rename).
                let placed = rename_noreplace(&pending, &target);
                drop(inner);
                placed.map_err(|e| Error::io("storing", &target, e))?;
                self.make_durable(end)?;
                fsio::sync_dir(&ctx_dir, self.durability)?;
                Ok(outcome)
            }
            Err(e) => {
                // The event is not logged, so the file must not stay either.
                inner.ctx = None;
                let _ = fs::remove_file(&pending);
                Err(e)
            }
        }
    }

    /// Syncs `state.json` and its directory if a replacement was left
    /// unsynced (see [`Durability::Fsync`]). Called by the checkpoint.
    pub fn sync_view(&self) -> Result<()> {
        if !self
            .view_dirty
            .swap(false, std::sync::atomic::Ordering::AcqRel)
            || self.is_removed()
        {
            return Ok(());
        }
        let _view = lock(&self.view);
        let path = self.dir.join(STATE_FILE);
        let synced = fsio::open_read(&path).and_then(|f| f.sync_all());
        if let Err(e) = synced {
            self.view_dirty
                .store(true, std::sync::atomic::Ordering::Release);
            return Err(Error::io("syncing", path, e));
        }
        fsio::sync_dir(&self.dir, self.durability)
    }

    fn mark(&self, seq: u64, offset: u64) {
        if seq % MARK_EVERY == 1 {
            let mut marks = lock(&self.marks);
            if marks.last().is_none_or(|&(s, _)| s < seq) {
                marks.push((seq, offset));
            }
        }
    }

    /// Where to start reading to reach line `seq`: the byte offset and seq
    /// of the nearest indexed line at or before it.
    pub fn seek(&self, seq: u64) -> (u64, u64) {
        let marks = lock(&self.marks);
        let i = marks.partition_point(|&(s, _)| s <= seq);
        match i {
            0 => (0, 1),
            _ => {
                let (s, o) = marks[i - 1];
                (o, s)
            }
        }
    }

    /// The summary to keep instead of this transaction, if it is finished
    /// and settled: DONE or FAIL, its log closed, its view synced, no sync
    /// running. The caller makes sure nobody else holds it.
    pub fn settled_summary(&self) -> Option<Summary> {
        use std::sync::atomic::Ordering;
        if self.is_removed() || self.view_dirty.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.inner.try_lock().ok()?;
        let syncing = self.syncing.try_lock().ok().is_none_or(|s| *s);
        if syncing || inner.log.is_some() || !inner.state.is_terminal() {
            return None;
        }
        Some(Summary::of(&inner.state))
    }

    /// Runs `f` while holding the transaction's lock, if it is DONE or FAIL
    /// under that lock; `None` (and `f` not run) if it is live.
    pub fn while_final<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let inner = lock(&self.inner);
        inner.state.is_terminal().then(f)
    }

    /// Whether the directory was removed from the tree while loaded.
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the transaction gone (its directory was deleted or moved away)
    /// and wakes its followers so they can end.
    pub fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Release);
        self.committed.send_modify(|_| {});
    }

    fn refuse_if_removed(&self) -> Result<()> {
        if self.is_removed() {
            return Err(Error::Unknown(format!(
                "transaction {} was removed from the tree",
                self.id
            )));
        }
        Ok(())
    }

    /// Whether the log at its path is no longer the one loaded (removed,
    /// replaced, or a symlink now).
    pub fn log_replaced(&self) -> bool {
        let path = self.dir.join(EVENTS_FILE);
        file_id(&path) != lock(&self.inner).log_id
    }

    /// Picks up lines another program appended to the log (complete lines
    /// only; a fragment waits for its writer), folds them and publishes them
    /// to followers. Our own appends are already counted and change nothing.
    pub fn reconcile_log(&self) -> Result<()> {
        if self.is_removed() {
            return Ok(());
        }
        let end = {
            let mut inner = lock(&self.inner);
            self.catch_up(&mut inner, false)?;
            inner.len
        };
        self.make_durable(end)
    }

    /// Brings a hand-edited `state.json` back in line with the log: if the
    /// file differs from the state folded from the log, it is rewritten,
    /// with a warning. Returns whether it had to.
    pub fn reconcile_state(&self) -> Result<bool> {
        if self.is_removed() {
            return Ok(false);
        }
        let _view = lock(&self.view);
        if !self.dir.is_dir() {
            return Ok(false); // being removed; the directory watch handles it
        }
        let want = self.state().to_pretty_json();
        let path = self.dir.join(STATE_FILE);
        // A missing file is left to the next write or start-up: recreating
        // it at once would fight an `rm -r` of the whole directory.
        let Ok(have) = fsio::read_file(&path) else {
            return Ok(false);
        };
        if have == want.as_bytes() {
            return Ok(false);
        }
        tracing::warn!(txn = %self.id, "state.json was changed behind ttmd's back and no longer matches the log; rebuilt it from the log");
        fsio::atomic_write(&self.dir, STATE_FILE, want.as_bytes(), self.durability)?;
        Ok(true)
    }

    /// Creates the temporary file an incoming evidence file is streamed
    /// into: inside ctx/ (so storing it is a rename within one directory),
    /// refusing a symlink planted as ctx/.
    pub fn create_temp_evidence(&self) -> Result<(PathBuf, File)> {
        let ctx_dir = self.dir.join(CTX_DIR);
        let name = fsio::temp_name("evidence");
        let file = fsio::create_in(&ctx_dir, &name)?;
        Ok((ctx_dir.join(name), file))
    }

    /// The ctx/ files with their hashes, in name order.
    pub fn ctx_entries(&self) -> Result<Vec<Entry>> {
        let mut inner = lock(&self.inner);
        if inner.ctx.is_none() {
            inner.ctx = Some(scan_ctx(&self.dir.join(CTX_DIR))?);
        }
        Ok(inner.ctx.clone().unwrap_or_default())
    }

    /// Answers a repeated request id with its first outcome: the event it
    /// wrote and the state right after it (refolded from the log, so later
    /// events do not leak into the answer; retries are rare).
    fn replay(&self, inner: &Inner, guards: &Guards) -> Option<Outcome> {
        let id = guards.request_id.as_ref()?;
        let event = inner.requests.get(id)?.clone();
        let at = event.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let state = self
            .read_lines(0, inner.len, 1)
            .ok()
            .and_then(|(lines, _)| {
                let upto: Vec<Line> = lines.into_iter().filter(|l| l.seq <= at).collect();
                fold_lines(&upto, &inner.state.module).ok()
            })
            .unwrap_or_else(|| (*inner.state).clone());
        Some(Outcome {
            state: Arc::new(state),
            event,
            replayed: true,
        })
    }

    /// Folds lines other programs appended since our last write, so the
    /// next seq is the next line number.
    /// With `end_fragment`, a final foreign fragment without its newline is
    /// ended (a mutation is about to append); without, it is left for its
    /// writer to finish.
    fn catch_up(&self, inner: &mut Inner, end_fragment: bool) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let size = match &inner.log {
            Some(f) => f.metadata(),
            None => fs::symlink_metadata(&path),
        }
        .map_err(|e| Error::io("inspecting", &path, e))?
        .len();
        if size <= inner.len {
            return Ok(());
        }
        let (lines, end) = self.read_lines(inner.len, size, inner.state.seq + 1)?;
        let mut offset = inner.len;
        for l in &lines {
            self.mark(l.seq, offset);
            offset += l.bytes;
        }
        for l in &lines {
            if l.object.is_none() {
                tracing::warn!(txn = %self.id, seq = l.seq,
                    "line {} of {EVENTS_FILE} is not a JSON object; it keeps its seq and is skipped by the fold", l.seq);
            }
            Arc::make_mut(&mut inner.state).apply(l.seq, l.object.as_ref().unwrap_or(empty()));
        }
        if end < size && end_fragment {
            // A foreign line without its newline: end it, or our line would
            // be glued onto it.
            // Ending it makes it a line like any other, folded as such (the
            // sync comes with the mutation's own).
            let log = inner.log_file(&path)?;
            log::append(log, size, "\n", Durability::None, &path)?;
            let next = inner.state.seq + 1;
            let (ended, _) = self.read_lines(end, size + 1, next)?;
            self.mark(next, end);
            let object = ended.first().and_then(|l| l.object.as_ref());
            Arc::make_mut(&mut inner.state).apply(next, object.unwrap_or(empty()));
            inner.len = size + 1;
        } else {
            inner.len = end;
        }
        if lines.is_empty() && !end_fragment {
            return Ok(());
        }
        tracing::info!(txn = %self.id, lines = lines.len(), "folded lines appended by another program");
        Ok(())
    }

    /// Appends one event (without syncing) and advances the in-memory
    /// state. Returns the outcome and where the log ends after the line; the
    /// caller waits for [`Txn::make_durable`] before answering.
    fn append(
        &self,
        inner: &mut Inner,
        body: Body,
        now: DateTime<Utc>,
        guards: &Guards,
        client: &Client,
    ) -> Result<(Outcome, u64)> {
        let meta = Meta {
            ts: state::timestamp(now),
            seq: inner.state.seq + 1,
            request_id: guards.request_id.clone(),
            client: client.clone(),
        };
        let object = body.to_object(&meta);
        let line = crate::core::event::line(&object);
        let path = self.dir.join(EVENTS_FILE);
        let len = inner.len;
        let log = inner.log_file(&path)?;
        log::append(log, len, &line, Durability::None, &path)?;
        self.mark(meta.seq, len);
        inner.len += line.len() as u64;
        Arc::make_mut(&mut inner.state).apply(meta.seq, &object);
        let event = Arc::new(object);
        if let Some(id) = &guards.request_id {
            inner.requests.insert(id.clone(), event.clone());
        }
        let outcome = Outcome {
            state: inner.state.clone(),
            event,
            replayed: false,
        };
        Ok((outcome, inner.len))
    }

    /// Returns once the log is durable up to byte `end` (group commit): the
    /// first writer to arrive syncs everything appended so far, writers that
    /// arrive meanwhile wait and are usually covered by that one sync or the
    /// next. After each sync the view (`state.json`, the snapshot, the
    /// followers' end mark) moves to the synced point, never past it.
    fn make_durable(&self, end: u64) -> Result<()> {
        let mut syncing = lock(&self.syncing);
        loop {
            if self.committed().len >= end {
                return Ok(());
            }
            if !*syncing {
                break;
            }
            syncing = self.synced.wait(syncing).unwrap_or_else(|p| p.into_inner());
        }
        *syncing = true;
        drop(syncing);
        let result = self.sync_and_publish();
        *lock(&self.syncing) = false;
        self.synced.notify_all();
        result?;
        // Our line was appended before the sync began, so it is covered.
        debug_assert!(self.committed().len >= end);
        Ok(())
    }

    /// One group-commit round, run by one thread at a time.
    fn sync_and_publish(&self) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let (file, len, state) = {
            let mut inner = lock(&self.inner);
            let file = match &inner.log {
                Some(f) => f.try_clone(),
                // Syncing any descriptor of the file flushes its data.
                None => fsio::open_read(&path),
            }
            .map_err(|e| Error::io("syncing", &path, e))?;
            if inner.state.is_terminal() {
                // Finished: nothing more will be appended (retry reopens).
                inner.log = None;
            }
            (file, inner.len, inner.state.clone())
        };
        if self.durability != Durability::None {
            file.sync_data()
                .map_err(|e| Error::io("syncing", self.dir.join(EVENTS_FILE), e))?;
        }
        // The events are durable: the mutations have happened. If the view
        // cannot be replaced now, the next round rewrites it and start-up
        // rebuilds it, so the answer stays "done" rather than inviting a
        // duplicate retry.
        let _view = lock(&self.view);
        let view = self.durability.for_view();
        if self.durability.defers_view_sync() {
            self.view_dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if let Err(e) = fsio::atomic_write(
            &self.dir,
            STATE_FILE,
            state.to_pretty_json().as_bytes(),
            view,
        ) {
            tracing::warn!(txn = %self.id, error = %e, "state.json is behind the log until the next write");
        }
        let seq = state.seq;
        *lock(&self.snapshot) = state;
        self.committed.send_replace(Committed { seq, len });
        Ok(())
    }
}

/// Refuses any change to a DONE or FAIL transaction.
pub fn refuse_if_terminal(state: &State) -> Result<()> {
    if state.is_terminal() {
        return Err(Error::Refused(format!(
            "transaction {} is {}, which is final; no further change is allowed{}",
            state.txn_id,
            state.stage,
            if state.stage == crate::core::fsm::FAIL {
                " (except `retry`)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

pub(crate) fn check_guards(state: &State, guards: &Guards) -> Result<()> {
    if let Some(want) = &guards.expect_stage
        && *want != state.stage
    {
        return Err(Error::Conflict(format!(
            "expected transaction {} to be in stage {want}, but it is in {} (seq {}); nothing \
             was changed",
            state.txn_id, state.stage, state.seq
        )));
    }
    if let Some(want) = guards.expect_seq
        && want != state.seq
    {
        return Err(Error::Conflict(format!(
            "expected transaction {} to be at seq {want}, but it is at seq {} (stage {}); \
             nothing was changed",
            state.txn_id, state.seq, state.stage
        )));
    }
    Ok(())
}

/// Evidence files a crash left between storing and naming
/// (`.ttmd-pending-<name>`): renamed to `<name>` if the log has its
/// `evidence_added`, deleted if not. Returns what it did.
fn finish_pending_evidence(ctx_dir: &Path, lines: &[Line]) -> Vec<String> {
    let Ok(list) = fs::read_dir(ctx_dir) else {
        return Vec::new();
    };
    let logged: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.object.as_ref())
        .filter(|o| o.get("event").and_then(Value::as_str) == Some("evidence_added"))
        .filter_map(|o| o.get("file").and_then(Value::as_str))
        .collect();
    let mut done = Vec::new();
    for entry in list.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_prefix(PENDING_PREFIX) else {
            continue;
        };
        let path = entry.path();
        let target = ctx_dir.join(name);
        if logged.contains(name)
            && ctx::is_ctx_name(name)
            && rename_noreplace(&path, &target).is_ok()
        {
            done.push(format!(
                "finished storing evidence {name}, which the log names"
            ));
        } else if fs::remove_file(&path).is_ok() {
            done.push(format!("removed evidence {name}, stored but never logged"));
        }
    }
    done
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

/// Renames without replacing anything already at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(std::io::Error::from)
}
