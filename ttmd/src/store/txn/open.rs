//! Loading a transaction directory, and recovery: leftovers of interrupted
//! writes removed, a torn final log line dropped, pending evidence
//! finished or removed, a state.json the bash version wrote adopted, a view
//! that disagrees with the log rebuilt. Each step is one function and
//! reports what it repaired. (Just over 500 lines on purpose: every step
//! of recovery in one place, in the order `Txn::open` runs them.)

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{
    CTX_DIR, Committed, EVENTS_FILE, Inner, MARK_EVERY, PENDING_PREFIX, Recorded, STATE_FILE, Txn,
    file_id, fold_lines, rename_noreplace,
};
use crate::core::ctx;
use crate::core::event::{self, Body, Event, Logged, Meta};
use crate::core::fsm::Fsm;
use crate::core::fsm::{DONE, FAIL};
use crate::core::state::{self, State};
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log::{self, Line};

/// A log as recovery read it: its complete lines, and the file opened for
/// appending (adoption writes to it).
pub(super) struct RecoveredLog {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) lines: Vec<Line>,
    /// Bytes of complete lines.
    pub(super) len: u64,
}

impl RecoveredLog {
    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            message,
        }
    }
}

impl Txn {
    /// Loads a transaction directory: drops a torn final log line, rebuilds
    /// `state.json` if it is missing or disagrees with the log, and adopts a
    /// state.json the bash version wrote. Returns what it had to repair.
    pub fn open(
        dir: &Path,
        module: &str,
        fsm: &Fsm,
        durability: Durability,
    ) -> Result<(Txn, Vec<String>)> {
        Txn::open_as(dir, module, fsm, durability, false)
    }

    /// Like [`Txn::open`]; with `read_only` (the tree is mounted
    /// read-only) the log is opened for reading and nothing is repaired:
    /// each repair comes back prefixed with [`REPAIR_PENDING`], and the
    /// transaction is served as its complete lines fold.
    pub fn open_as(
        dir: &Path,
        module: &str,
        fsm: &Fsm,
        durability: Durability,
        read_only: bool,
    ) -> Result<(Txn, Vec<String>)> {
        fsio::require_real_dir(dir, "transaction directory")?;
        let mut repairs = Vec::new();
        if !read_only {
            remove_leftovers(dir, &mut repairs);
        }
        let (mut log, torn) = read_log(dir, &mut repairs, read_only)?;
        // Lines cut from the log (`: >` leaves none to fold) are named
        // as such before the fold's own complaint.
        refuse_view_ahead(dir, &log, durability)?;
        let (mut folded, refused) =
            fold_lines(&log.lines, module, Some(fsm)).map_err(|e| log.corrupt(e.to_string()))?;
        drop_torn(&log, torn, &mut repairs, read_only)?;
        let ctx_dir = dir.join(CTX_DIR);
        repairs.extend(finish_pending_evidence(&ctx_dir, &log.lines, read_only));
        let rebuilt =
            super::initial::rebuild_initial_ctx(&ctx_dir, &log.lines, durability, read_only);
        repairs.extend(rebuilt?);
        let ro = read_only;
        adopt_copy(dir, &mut log, &mut folded, durability, &mut repairs, ro)?;
        let stale = check_view(dir, &mut log, &mut folded, durability, &mut repairs, ro)?;
        // After check_view: a report line would hide a bash log from it.
        let (log_ref, d) = (&mut log, durability);
        let stale =
            super::fold::report_refused(log_ref, &mut folded, refused, d, &mut repairs, ro)?
                || stale;
        if read_only {
            for r in &mut repairs {
                *r = format!("{REPAIR_PENDING}{r}");
            }
            report_malformed(&log.lines, &mut repairs);
            return Ok((assemble(dir, log, folded, durability, false), repairs));
        }
        report_malformed(&log.lines, &mut repairs);
        if stale {
            // Like any view a write replaces (unsynced unless strict): the
            // checkpoint syncs it, a crash before then rebuilds it. A first
            // start on a tree without views (a bash tree, a generated one)
            // then costs no fsync per transaction.
            let view = folded.to_pretty_json();
            fsio::atomic_write(dir, STATE_FILE, view.as_bytes(), durability.for_view())?;
        }
        let view_dirty = stale && durability.defers_view_sync();
        Ok((assemble(dir, log, folded, durability, view_dirty), repairs))
    }
}

/// What a repair a read-only tree kept from being made starts with.
pub const REPAIR_PENDING: &str = "not done, the tree is read-only: ";

/// Temporary files of writes a crash interrupted.
fn remove_leftovers(dir: &Path, repairs: &mut Vec<String>) {
    let cleaned = fsio::remove_temp_files(dir) + fsio::remove_temp_files(&dir.join(CTX_DIR));
    if cleaned > 0 {
        repairs.push(format!("removed {cleaned} leftover temporary file(s)"));
    }
}

/// Reads the log's complete lines, and what recovery will cut from its
/// end once the log is known to be no shorter than its view ([`drop_torn`]):
/// a torn final line (a fragment without its newline, what a crash
/// mid-append leaves), and the first half of a commit or failure whose
/// second line a crash lost (see [`half_of_a_pair`]). Those are the only
/// changes recovery ever makes to a log's existing bytes, both to an append
/// that was never acknowledged.
fn read_log(dir: &Path, repairs: &mut Vec<String>, read_only: bool) -> Result<(RecoveredLog, Cut)> {
    let path = dir.join(EVENTS_FILE);
    let bytes = fsio::read_file(&path).map_err(|e| fsio::nofollow_error("reading", &path, e))?;
    let file = if read_only {
        fsio::open_read(&path)
    } else {
        fsio::open_append(&path, false)
    }
    .map_err(|e| Error::io("opening", &path, e))?;
    let (mut lines, mut used) = log::parse_lines(&bytes, 1);
    let seq = lines.len() as u64 + 1;
    if read_only && whole_line(&bytes[used..], seq) {
        // Served once the newline is restored: the log's bytes are what
        // reads return.
        repairs.push(format!(
            "restore the newline the last line of {EVENTS_FILE} lost (that line is not served \
             until then)"
        ));
    }
    // A whole event that lost only its newline (by hand: a crash never
    // acknowledged it, so keeping it is as right as dropping it). The
    // newline is written by `drop_torn`, once the log is known not to be
    // quarantined: a quarantined log is left exactly as it was found.
    let newline = !read_only && whole_line(&bytes[used..], seq);
    if newline {
        lines.extend(log::parse_lines(&[&bytes[used..], b"\n"].concat(), seq).0);
        used = bytes.len() + 1;
    }
    let torn = bytes.len().saturating_sub(used);
    let mut half = 0;
    if lines.len() > 1 && lines.last().is_some_and(half_of_a_pair) {
        half = lines.pop().map_or(0, |l| l.bytes) as usize;
        used -= half;
    }
    let log = RecoveredLog {
        path,
        file,
        lines,
        len: used as u64,
    };
    Ok((
        log,
        Cut {
            newline,
            torn,
            half,
        },
    ))
}

/// Bytes recovery cuts from the end of a log (see [`read_log`]).
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// A whole final line without its newline, which gets it back.
    newline: bool,
    /// A final fragment without its newline.
    torn: usize,
    /// A final `stage_transition` into DONE/FAIL without its second line.
    half: usize,
}

fn drop_torn(
    log: &RecoveredLog,
    cut: Cut,
    repairs: &mut Vec<String>,
    read_only: bool,
) -> Result<()> {
    if cut.newline && !read_only {
        use std::io::Write;
        (&log.file)
            .write_all(b"\n")
            .and_then(|()| log.file.sync_data())
            .map_err(|e| Error::io("ending the last line of", &log.path, e))?;
        repairs.push(format!(
            "restored the newline the last line of {EVENTS_FILE} lost"
        ));
    }
    if cut.torn + cut.half == 0 {
        return Ok(());
    }
    // Read-only: the cut bytes stay, but reads stop before them.
    if !read_only {
        log.file
            .set_len(log.len)
            .and_then(|()| log.file.sync_data())
            .map_err(|e| Error::io("truncating the unacknowledged end of", &log.path, e))?;
    }
    if cut.torn > 0 {
        let torn = cut.torn;
        repairs.push(format!(
            "dropped a torn final line of {torn} bytes from {EVENTS_FILE}"
        ));
    }
    if cut.half > 0 {
        let half = cut.half;
        repairs.push(format!(
            "dropped a final stage_transition into DONE/FAIL whose txn_commit/txn_fail a \
             crash lost ({half} bytes): that commit or failure was never acknowledged"
        ));
    }
    Ok(())
}

/// Refuses a log shorter than its view: the view is written only after its
/// line is durable, so a view ahead of the log means lines were cut from
/// the log by hand, not by a crash (unless nothing is synced at all). The
/// transaction is quarantined, its files left as they are.
fn refuse_view_ahead(dir: &Path, log: &RecoveredLog, durability: Durability) -> Result<()> {
    let lines = log.lines.len() as u64;
    let view_seq = fsio::read_file(&dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .and_then(|v| v.get("seq")?.as_u64());
    match view_seq {
        Some(seq) if seq > lines && durability != Durability::None => Err(log.corrupt(format!(
            "has {lines} line(s) but {STATE_FILE} shows seq {seq}: lines were removed from the \
             log behind ttmd's back, so acknowledged events are missing; restore the log (from \
             a backup) or move the directory away"
        ))),
        _ => Ok(()),
    }
}

/// Whether `tail` is one whole event line numbered `seq` but its newline.
fn whole_line(tail: &[u8], seq: u64) -> bool {
    !tail.is_empty()
        && serde_json::from_slice::<Map<String, Value>>(tail)
            .is_ok_and(|o| o.get("seq").and_then(Value::as_u64) == Some(seq))
}

/// Whether `line` is a `stage_transition` into DONE or FAIL that ttmd
/// wrote (it carries its own line number as `seq`): ttmd writes one only
/// right before the `txn_commit` or `txn_fail` of the same append, so as a
/// log's last line it is half of an append a crash cut short. Lines the
/// bash version or a person wrote carry no matching `seq` and stay.
fn half_of_a_pair(line: &Line) -> bool {
    let Some(o) = &line.object else {
        return false;
    };
    let text = |k: &str| o.get(k).and_then(Value::as_str);
    text("event") == Some("stage_transition")
        && matches!(text("to"), Some(DONE | FAIL))
        && o.get("seq").and_then(Value::as_u64) == Some(line.seq)
}

fn report_malformed(lines: &[Line], repairs: &mut Vec<String>) {
    let malformed = lines.iter().filter(|l| l.object.is_none()).count();
    if malformed > 0 {
        repairs.push(format!(
            "{malformed} line(s) of {EVENTS_FILE} are not JSON objects; they keep their seq \
             and are ignored by the fold"
        ));
    }
}

/// Compares `state.json` with the fold of the log; adopts one the bash
/// version wrote. Returns whether the view must be (re)written.
fn check_view(
    dir: &Path,
    log: &mut RecoveredLog,
    folded: &mut State,
    durability: Durability,
    repairs: &mut Vec<String>,
    read_only: bool,
) -> Result<bool> {
    let on_disk: Option<Value> = fsio::read_file(&dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let log_is_legacy = log
        .lines
        .iter()
        .filter_map(|l| l.object.as_ref())
        .all(|o| !o.contains_key("seq"));
    match on_disk {
        Some(Value::Object(mut legacy)) if log_is_legacy && !legacy.contains_key("seq") => {
            // The id is the directory's name, never the file's say.
            legacy.remove("txn_id");
            if read_only {
                repairs.push(
                    "adopt the state.json the bash version wrote (its fields are not served \
                     until then)"
                        .into(),
                );
                return Ok(false);
            }
            adopt(log, folded, legacy, durability)?;
            repairs.push("adopted a state.json written by the bash version".into());
        }
        Some(v) => match serde_json::from_value::<State>(v) {
            Ok(s) if s == *folded => return Ok(false),
            Ok(s) if s.seq < folded.seq => repairs.push(format!(
                "rebuilt {STATE_FILE}: it was at seq {} but the log is at {}",
                s.seq, folded.seq
            )),
            _ => repairs.push(format!("rebuilt {STATE_FILE}: it contradicted the log")),
        },
        None => repairs.push(format!(
            "rebuilt {STATE_FILE}: it was missing or unreadable"
        )),
    }
    Ok(true)
}

/// A directory whose log names another transaction (`cp -r txns/A
/// txns/B`) is that transaction's copy: the directory name is the id (SPEC
/// §8), so a `state_adopted` line gives it that id and records
/// `copied_from`; it is never served under the original's id.
fn adopt_copy(
    dir: &Path,
    log: &mut RecoveredLog,
    folded: &mut State,
    durability: Durability,
    repairs: &mut Vec<String>,
    read_only: bool,
) -> Result<()> {
    let name = dir_name(dir);
    if folded.txn_id == name {
        return Ok(());
    }
    let original = folded.txn_id.clone();
    if read_only {
        // The id is the directory's name, even before the log says so.
        folded.txn_id = name.clone();
        repairs.push(format!(
            "adopt a copy of transaction {original} under its directory name {name}"
        ));
        return Ok(());
    }
    let mut adopted = Map::new();
    adopted.insert("txn_id".into(), name.as_str().into());
    adopted.insert("copied_from".into(), original.as_str().into());
    adopt(log, folded, adopted, durability)?;
    repairs.push(format!(
        "adopted a copy of transaction {original} under its directory name {name}"
    ));
    Ok(())
}

pub(super) fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Takes over a state.json the bash version wrote: its fields (user updates
/// lived only there) are logged as `state_adopted`, so the fold reproduces
/// them from now on.
fn adopt(
    log: &mut RecoveredLog,
    folded: &mut State,
    legacy: Map<String, Value>,
    durability: Durability,
) -> Result<()> {
    append_line(log, folded, Body::Adopted { state: legacy }, durability)
}

/// Appends one line recovery writes, and folds it.
pub(super) fn append_line(
    log: &mut RecoveredLog,
    folded: &mut State,
    body: Body,
    durability: Durability,
) -> Result<()> {
    let meta = Meta {
        ts: state::timestamp(Utc::now()),
        seq: folded.seq + 1,
        request_id: None,
        client: None,
    };
    let line = body.to_line(&meta);
    log::append(&mut log.file, log.len, &line, durability, &log.path)?;
    log.len += line.len() as u64;
    let object = body.to_object(&meta);
    folded.apply_logged(meta.seq, &Logged::read(Some(&object)));
    log.lines.push(Line {
        seq: meta.seq,
        object: Some(object),
        text: line.trim_end().to_string(),
        bytes: line.len() as u64,
    });
    Ok(())
}

/// The request ids the log records: the event each produced and the
/// request's digest, if its line has one.
fn request_ids(lines: &[Line], logged: Vec<Logged>) -> super::Requests {
    lines
        .iter()
        .zip(logged)
        .filter_map(|(l, line)| {
            let id = line.request_id.clone()?;
            let digest = l
                .object
                .as_ref()
                .and_then(|o| o.get(event::REQUEST_DIGEST)?.as_str().map(str::to_string));
            Some((id, (Arc::new(Recorded { seq: l.seq, line }), digest)))
        })
        .collect()
}

/// The loaded transaction: recovered log and state, its request ids and
/// the seq → offset index.
pub(super) fn assemble(
    dir: &Path,
    log: RecoveredLog,
    folded: State,
    durability: Durability,
    view_dirty: bool,
) -> Txn {
    let logged: Vec<Logged> = log.lines.iter().map(Line::logged).collect();
    // A copy's creation request belongs to the original.
    let create_request = logged
        .first()
        .and_then(|l| l.request_id.clone())
        .filter(|_| folded.extra.get("copied_from").is_none());
    let requests = request_ids(&log.lines, logged);
    let mut marks = Vec::with_capacity(log.lines.len() / MARK_EVERY as usize + 1);
    let mut offset = 0u64;
    for l in &log.lines {
        if l.seq % MARK_EVERY == 1 {
            marks.push((l.seq, offset));
        }
        offset += l.bytes;
    }
    let committed = Committed {
        seq: folded.seq,
        len: log.len,
    };
    let folded = Arc::new(folded);
    Txn {
        id: dir_name(dir),
        dir: dir.to_path_buf(),
        create_request,
        durability,
        inner: Mutex::new(Inner {
            state: folded.clone(),
            log: None,
            log_id: file_id(&log.path),
            len: log.len,
            ctx: None,
            requests,
            damaged: None,
        }),
        snapshot: Mutex::new(folded),
        committed: watch::Sender::new(committed),
        queue: Mutex::default(),
        me: std::sync::OnceLock::new(),
        view: Mutex::new(()),
        removed: AtomicBool::new(false),
        view_dirty: AtomicBool::new(view_dirty),
        ctx_dirty: AtomicBool::new(false),
        marks: Mutex::new(marks),
    }
}

/// Evidence files a crash left between storing and naming
/// (`.ttmd-pending-<name>`): renamed to `<name>` if the log has its
/// `evidence_added`, deleted if not. Returns what it did.
fn finish_pending_evidence(ctx_dir: &Path, lines: &[Line], read_only: bool) -> Vec<String> {
    let Ok(list) = fs::read_dir(ctx_dir) else {
        return Vec::new();
    };
    let logged: HashSet<String> = lines
        .iter()
        .filter_map(|l| {
            let Event::Body(Body::EvidenceAdded { file, .. }) = l.logged().event else {
                return None;
            };
            Some(file)
        })
        .collect();
    let mut done = Vec::new();
    for entry in list.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_prefix(PENDING_PREFIX) else {
            continue;
        };
        let path = entry.path();
        let target = ctx_dir.join(name);
        // Read-only: said as if done; the caller marks it pending.
        let finish = logged.contains(name) && ctx::is_ctx_name(name);
        if finish && (read_only || rename_noreplace(&path, &target).is_ok()) {
            done.push(format!(
                "finished storing evidence {name}, which the log names"
            ));
        } else if read_only || fs::remove_file(&path).is_ok() {
            done.push(format!("removed evidence {name}, stored but never logged"));
        }
    }
    done
}
