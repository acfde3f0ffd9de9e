//! Loading a transaction directory, and recovery: leftovers of interrupted
//! writes removed, a torn final log line dropped, pending evidence
//! finished or removed, a state.json the bash version wrote adopted, a view
//! that disagrees with the log rebuilt. Each step is one function and
//! reports what it repaired.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{
    CTX_DIR, Committed, EVENTS_FILE, Inner, MARK_EVERY, PENDING_PREFIX, Recorded, STATE_FILE, Txn,
    file_id, fold_lines, rename_noreplace,
};
use crate::core::ctx;
use crate::core::event::{Body, Event, Logged, Meta};
use crate::core::fsm::{DONE, FAIL};
use crate::core::state::{self, State};
use crate::core::summary::Summary;
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log::{self, Line};

/// A log as recovery read it: its complete lines, and the file opened for
/// appending (adoption writes to it).
struct RecoveredLog {
    path: PathBuf,
    file: File,
    lines: Vec<Line>,
    /// Bytes of complete lines.
    len: u64,
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
    pub fn open(dir: &Path, module: &str, durability: Durability) -> Result<(Txn, Vec<String>)> {
        fsio::require_real_dir(dir, "transaction directory")?;
        let mut repairs = Vec::new();
        remove_leftovers(dir, &mut repairs);
        let mut log = read_log(dir, &mut repairs)?;
        repairs.extend(finish_pending_evidence(&dir.join(CTX_DIR), &log.lines));
        report_malformed(&log.lines, &mut repairs);
        let mut folded = fold_lines(&log.lines, module).map_err(|e| log.corrupt(e.to_string()))?;
        let stale = check_view(dir, &mut log, &mut folded, durability, &mut repairs)?;
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

/// Temporary files of writes a crash interrupted.
fn remove_leftovers(dir: &Path, repairs: &mut Vec<String>) {
    let cleaned = fsio::remove_temp_files(dir) + fsio::remove_temp_files(&dir.join(CTX_DIR));
    if cleaned > 0 {
        repairs.push(format!("removed {cleaned} leftover temporary file(s)"));
    }
}

/// Reads the log's complete lines; a torn final line (a fragment without
/// its newline, what a crash mid-append leaves) is cut off, the only change
/// recovery ever makes to a log's existing bytes.
fn read_log(dir: &Path, repairs: &mut Vec<String>) -> Result<RecoveredLog> {
    let path = dir.join(EVENTS_FILE);
    let bytes = fsio::read_file(&path).map_err(|e| fsio::nofollow_error("reading", &path, e))?;
    let file = fsio::open_append(&path, false).map_err(|e| Error::io("opening", &path, e))?;
    let (lines, used) = log::parse_lines(&bytes, 1);
    if used < bytes.len() {
        file.set_len(used as u64)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("truncating torn line of", &path, e))?;
        repairs.push(format!(
            "dropped a torn final line of {} bytes from {EVENTS_FILE}",
            bytes.len() - used
        ));
    }
    Ok(RecoveredLog {
        path,
        file,
        lines,
        len: used as u64,
    })
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
        Some(Value::Object(legacy)) if log_is_legacy && !legacy.contains_key("seq") => {
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

/// Takes over a state.json the bash version wrote: its fields (user updates
/// lived only there) are logged as `state_adopted`, so the fold reproduces
/// them from now on.
fn adopt(
    log: &mut RecoveredLog,
    folded: &mut State,
    legacy: Map<String, Value>,
    durability: Durability,
) -> Result<()> {
    let meta = Meta {
        ts: state::timestamp(Utc::now()),
        seq: folded.seq + 1,
        request_id: None,
        client: None,
    };
    let body = Body::Adopted { state: legacy };
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

/// The loaded transaction: recovered log and state, its request ids and
/// the seq → offset index.
fn assemble(
    dir: &Path,
    log: RecoveredLog,
    folded: State,
    durability: Durability,
    view_dirty: bool,
) -> Txn {
    let logged: Vec<Logged> = log.lines.iter().map(Line::logged).collect();
    let create_request = logged.first().and_then(|l| l.request_id.clone());
    let requests = log
        .lines
        .iter()
        .zip(logged)
        .filter_map(|(l, line)| {
            let id = line.request_id.clone()?;
            Some((id, Arc::new(Recorded { seq: l.seq, line })))
        })
        .collect();
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
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
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
        }),
        snapshot: Mutex::new(folded),
        committed: watch::Sender::new(committed),
        syncing: Mutex::new(false),
        synced: Condvar::new(),
        view: Mutex::new(()),
        removed: AtomicBool::new(false),
        view_dirty: AtomicBool::new(view_dirty),
        marks: Mutex::new(marks),
    }
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
    if !matches!(state.stage.as_str(), DONE | FAIL) {
        return None;
    }
    let log = fsio::read_file(&dir.join(EVENTS_FILE)).ok()?;
    let body = log.strip_suffix(b"\n")?;
    let lines = log.iter().filter(|&&b| b == b'\n').count() as u64;
    if lines != state.seq {
        return None;
    }
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last: Map<String, Value> = serde_json::from_slice(&body[last_start..]).ok()?;
    if !made_stage(&Logged::read(Some(&last)).event, &state.stage)
        || last.get("seq").and_then(Value::as_u64) != Some(state.seq)
    {
        return None;
    }
    let first = &body[..body.iter().position(|&b| b == b'\n').unwrap_or(body.len())];
    // Most creations carry no request id: parse the first line only if it
    // can hold one.
    let create_request = if first.windows(12).any(|w| w == b"\"request_id\"") {
        let first = Logged::parse(first);
        if first.event == Event::Malformed {
            return None;
        }
        first.request_id
    } else {
        None
    };
    Some((Summary::of(&state), create_request))
}

/// Whether `event` is the commit or failure that ends a log in `stage`.
fn made_stage(event: &Event, stage: &str) -> bool {
    match event {
        Event::Body(Body::Commit { .. }) => stage == DONE,
        Event::Body(Body::Fail { .. }) => stage == FAIL,
        // Anything else last (a transition into DONE by hand, a foreign
        // line): not trusted without a full load.
        Event::Body(
            Body::Start { .. }
            | Body::Transition { .. }
            | Body::Updated { .. }
            | Body::EvidenceAdded { .. }
            | Body::TesResolved { .. }
            | Body::Retry { .. }
            | Body::Activated
            | Body::Adopted { .. }
            | Body::LeaseRequested { .. }
            | Body::LeaseAcquired { .. }
            | Body::LeaseReleased { .. }
            | Body::LeaseExpired { .. }
            | Body::User { .. },
        )
        | Event::Foreign { .. }
        | Event::Malformed => false,
    }
}

/// Evidence files a crash left between storing and naming
/// (`.ttmd-pending-<name>`): renamed to `<name>` if the log has its
/// `evidence_added`, deleted if not. Returns what it did.
fn finish_pending_evidence(ctx_dir: &Path, lines: &[Line]) -> Vec<String> {
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
