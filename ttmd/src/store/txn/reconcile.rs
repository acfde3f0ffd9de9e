//! Changes made behind the daemon's back: lines other programs appended
//! (folded and streamed like the daemon's own), a hand-edited `state.json`
//! (rebuilt from the log), a log removed or replaced (never appended to).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use chrono::Utc;

use super::{EVENTS_FILE, Guards, Inner, Outcome, Recorded, STATE_FILE, Txn, file_id, lock};
use crate::core::event::Body;
use crate::core::fsm::Fsm;
use crate::core::state::{RESERVED_FIELDS, State};
use crate::core::{Error, Result};
use crate::store::fsio::{self, Durability};
use crate::store::log::{self, Line};

impl Txn {
    /// Whether the log at its path is no longer the one loaded (removed,
    /// replaced, or a symlink now).
    pub fn log_replaced(&self) -> bool {
        let path = self.dir.join(EVENTS_FILE);
        file_id(&path) != lock(&self.inner).log_id
    }

    /// Picks up lines another program appended to the log (complete lines
    /// only; a fragment waits for its writer), folds them and publishes them
    /// to followers. Our own appends are already counted and change nothing.
    /// Returns what watchers should hear: stage changes the FSM allows,
    /// and the reports of refused ones.
    pub fn reconcile_log(&self, fsm: &Fsm) -> Result<Vec<Outcome>> {
        if self.is_removed() {
            return Ok(Vec::new());
        }
        if self.nothing_foreign() {
            return Ok(Vec::new());
        }
        // The writer's turn: no round is staging lines meanwhile.
        self.with_turn(|| {
            let (changes, behind) = {
                let mut inner = lock(&self.inner);
                let changes = self.catch_up(&mut inner, false, fsm)?;
                (changes, self.committed().len < inner.len)
            };
            if behind {
                self.sync_and_publish()?;
            }
            Ok(changes)
        })
    }

    /// Whether the log is exactly what ttmd wrote and published: the
    /// watcher hears of each of our own appends, and must not queue for
    /// the writer's turn behind a burst of them to learn that.
    fn nothing_foreign(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join(EVENTS_FILE);
        let inner = lock(&self.inner);
        // One stat: the size and the identity of the file at the path.
        let on_disk = fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.len(), (m.dev(), m.ino())));
        on_disk.is_some_and(|(len, id)| len == inner.len && Some(id) == inner.log_id)
            && self.committed().len == inner.len
    }

    /// Takes in a hand-edited `state.json` (RAG's `jq` scripts, the bash
    /// `txn_update`): changed user fields become a logged `state_updated`
    /// (followers, watchers and restarts see them); a changed reserved
    /// field (`stage`, `seq`, …) is refused loudly: a `state_edit_refused`
    /// event and a warning, never applied. Then the view is rebuilt from
    /// the log. A finished transaction takes no edit: refused with a
    /// warning. Returns the events it logged.
    pub fn reconcile_state(&self, fsm: &Fsm) -> Result<Vec<Outcome>> {
        if self.is_removed() {
            return Ok(Vec::new());
        }
        let edit = {
            let _view = lock(&self.view);
            if !self.dir.is_dir() {
                return Ok(Vec::new()); // being removed; the directory watch handles it
            }
            let want = self.state();
            // A missing file is left to the next write or start-up:
            // recreating it at once would fight an `rm -r` of the directory.
            let Ok(have) = fsio::read_file(&self.dir.join(STATE_FILE)) else {
                return Ok(Vec::new());
            };
            if have == want.to_pretty_json().as_bytes() {
                return Ok(Vec::new());
            }
            if serde_json::from_slice::<Map<String, Value>>(&have).is_err() {
                // Empty or half-written (a script writing in place): its
                // writer's next notification brings it back here; the next
                // write or start-up rebuilds one left broken.
                tracing::debug!(txn = %self.id, "state.json is not a JSON object (yet)");
                return Ok(Vec::new());
            }
            (diff_edit(&want, &have), want.is_terminal())
        };
        let mut logged = Vec::new();
        match edit {
            (Some((patch, reserved)), false) => {
                if !patch.is_empty() {
                    tracing::info!(txn = %self.id, fields = ?patch.keys().collect::<Vec<_>>(),
                        "state.json was edited by hand; logged the user fields as an update");
                    logged.push(self.log_edit(fsm, Body::Updated { patch })?);
                }
                if !reserved.is_empty() {
                    logged.push(self.refuse_edit(fsm, reserved)?);
                }
            }
            (Some((patch, reserved)), true) if !patch.is_empty() || !reserved.is_empty() => {
                tracing::warn!(txn = %self.id, "state.json of a finished transaction was edited by hand; refused (a DONE or FAIL transaction takes no change), rebuilt it from the log");
            }
            _ => {
                tracing::warn!(txn = %self.id, "state.json was changed behind ttmd's back and no longer matches the log; rebuilt it from the log");
            }
        }
        self.restore_view()?;
        Ok(logged)
    }

    /// Logs what a hand edit of state.json did, through the one mutation
    /// path (so a finished transaction refuses it).
    fn log_edit(&self, fsm: &Fsm, body: Body) -> Result<Outcome> {
        let client = Some(serde_json::json!({ "agent": "ttmd", "source": STATE_FILE }));
        self.mutate(fsm, &Guards::default(), &client, |_, _| Ok(body))
    }

    fn refuse_edit(&self, fsm: &Fsm, fields: Map<String, Value>) -> Result<Outcome> {
        let names: Vec<&String> = fields.keys().collect();
        let reason = format!(
            "{names:?} of {STATE_FILE} are maintained by ttmd (the log is the truth); the edit \
             was refused and the view rebuilt. Change the stage with `ttmctl transition` (or \
             txn_transition), user fields with `ttmctl update`"
        );
        tracing::warn!(txn = %self.id, "state.json edited by hand: {reason}");
        let mut data = Map::new();
        data.insert("file".into(), STATE_FILE.into());
        data.insert("fields".into(), Value::Object(fields));
        data.insert("reason".into(), reason.into());
        let body = Body::User {
            event: EDIT_REFUSED.into(),
            data,
        };
        self.log_edit(fsm, body)
    }

    /// Rewrites `state.json` from the state if it still differs.
    fn restore_view(&self) -> Result<()> {
        let _view = lock(&self.view);
        let want = self.state().to_pretty_json();
        let path = self.dir.join(STATE_FILE);
        match fsio::read_file(&path) {
            Ok(have) if have != want.as_bytes() => {
                fsio::atomic_write(&self.dir, STATE_FILE, want.as_bytes(), self.durability)
            }
            _ => Ok(()),
        }
    }

    /// Whether the log (now `size` bytes) still begins with what ttmd
    /// counted and has lines to fold. A log cut by exactly its last newline
    /// gets it back (nothing else was lost); one shorter than that, or whose
    /// byte before the old end is no longer a newline (overwritten in
    /// place), marks the transaction damaged: nothing is appended to it
    /// again, and the watcher reloads it from disk, which quarantines it.
    fn log_still_ours(&self, inner: &mut Inner, size: u64) -> Result<bool> {
        let path = self.dir.join(EVENTS_FILE);
        if let Some(why) = &inner.damaged {
            return Err(Error::Refused(why.clone()));
        }
        if size == inner.len {
            return Ok(false);
        }
        let boundary = inner.len.checked_sub(1).map(|at| self.byte_at(at));
        match boundary {
            Some(Ok(Some(b'\n'))) | None => return Ok(size > inner.len),
            Some(Ok(Some(_))) | Some(Ok(None)) | Some(Err(_)) => {}
        }
        if size + 1 == inner.len && matches!(boundary, Some(Ok(None))) {
            // Only the final newline is missing: restore it.
            let len = inner.len - 1;
            let log = inner.log_file(&path)?;
            log::append(log, len, "\n", Durability::None, &path)?;
            tracing::warn!(txn = %self.id, "the last line of {EVENTS_FILE} lost its newline behind ttmd's back; restored it");
            return Ok(false);
        }
        let err = if size < inner.len {
            shrank(&path, size, inner.len)
        } else {
            Error::Corrupt {
                path: path.clone(),
                message: "was overwritten behind ttmd's back (its lines no longer end where ttmd \
                          wrote them); nothing was written, and the transaction is reloaded \
                          from disk"
                    .into(),
            }
        };
        tracing::error!(txn = %self.id, error = %err, "the log changed under what ttmd wrote");
        inner.damaged = Some(err.to_string());
        inner.log = None;
        Err(err)
    }

    /// The byte at `offset` of the log, `None` past its end.
    fn byte_at(&self, offset: u64) -> Result<Option<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.dir.join(EVENTS_FILE);
        let mut f = fsio::open_read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let mut b = [0u8; 1];
        let n = f
            .seek(SeekFrom::Start(offset))
            .and_then(|_| f.read(&mut b))
            .map_err(|e| Error::io("reading", &path, e))?;
        Ok((n == 1).then_some(b[0]))
    }

    /// Whether the log changed under what ttmd wrote (see
    /// [`Txn::log_still_ours`]): such a transaction is reloaded from disk.
    pub fn log_damaged(&self) -> bool {
        lock(&self.inner).damaged.is_some()
    }

    /// Folds lines other programs appended since our last write, so the
    /// next seq is the next line number; a line that breaks the FSM is kept
    /// but folded as refused, and reported ([`FOREIGN_REFUSED`]).
    /// With `end_fragment`, a final foreign fragment without its newline is
    /// ended (a mutation is about to append); without, it is left for its
    /// writer to finish. Returns the stage changes and reports it folded.
    pub(super) fn catch_up(
        &self,
        inner: &mut Inner,
        end_fragment: bool,
        fsm: &Fsm,
    ) -> Result<Vec<Outcome>> {
        let path = self.dir.join(EVENTS_FILE);
        let size = match &inner.log {
            Some(f) => f.metadata(),
            None => fs::symlink_metadata(&path),
        }
        .map_err(|e| Error::io("inspecting", &path, e))?
        .len();
        if !self.log_still_ours(inner, size)? {
            return Ok(Vec::new());
        }
        let (mut lines, end) = self.read_lines(inner.len, size, inner.state.seq + 1)?;
        let mut offset = inner.len;
        for l in &lines {
            self.mark(l.seq, offset);
            offset += l.bytes;
        }
        inner.len = end;
        if end < size && end_fragment {
            // A foreign line without its newline: end it, or our line would
            // be glued onto it. Ending it makes it a line like any other,
            // folded as such (the sync comes with the mutation's own).
            let log = inner.log_file(&path)?;
            log::append(log, size, "\n", Durability::None, &path)?;
            let next = lines.last().map_or(inner.state.seq, |l| l.seq) + 1;
            let (ended, _) = self.read_lines(end, size + 1, next)?;
            self.mark(next, end);
            lines.extend(ended);
            inner.len = size + 1;
        }
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        tracing::info!(txn = %self.id, lines = lines.len(), "folded lines appended by another program");
        self.fold_foreign(inner, &lines, fsm)
    }

    /// Folds lines another program wrote; see [`Txn::catch_up`].
    fn fold_foreign(&self, inner: &mut Inner, lines: &[Line], fsm: &Fsm) -> Result<Vec<Outcome>> {
        let mut changes = Vec::new();
        let mut refused = Vec::new();
        for l in lines {
            if l.object.is_none() {
                tracing::warn!(txn = %self.id, seq = l.seq,
                    "line {} of {EVENTS_FILE} is not a JSON object; it keeps its seq and is skipped by the fold", l.seq);
            }
            let logged = l.logged();
            let before = inner.state.stage.clone();
            let checked = Some(fsm).filter(|_| super::fold::by_others(l));
            match Arc::make_mut(&mut inner.state).apply_checked(l.seq, &logged, checked) {
                Some(why) => refused.push((l.seq, logged.event.kind().to_string(), why)),
                None if inner.state.stage != before => changes.push(Outcome {
                    state: inner.state.clone(),
                    event: Some(Arc::new(Recorded {
                        seq: l.seq,
                        line: logged,
                    })),
                    replayed: false,
                }),
                None => {}
            }
        }
        for (seq, kind, why) in refused {
            tracing::warn!(txn = %self.id, seq, "line {seq} of {EVENTS_FILE} ({kind}) was written by another program and breaks the FSM: {why}; it stays in the log, folded as refused");
            let client = Some(serde_json::json!({ "agent": "ttmd" }));
            let report = refused_report(seq, &kind, &why);
            let outcome =
                self.append_now(inner, report, Utc::now(), &Guards::default(), &client)?;
            changes.push(outcome);
        }
        Ok(changes)
    }
}

/// The event type that reports a line another program wrote whose change
/// of stage the fold refused (SPEC §8).
pub const FOREIGN_REFUSED: &str = "foreign_line_refused";

/// The report of a refused foreign line: its seq, its event type, why.
pub(super) fn refused_report(seq: u64, kind: &str, why: &str) -> Body {
    let mut data = Map::new();
    data.insert("seq".into(), seq.into());
    data.insert("event".into(), kind.into());
    data.insert("reason".into(), why.into());
    Body::User {
        event: FOREIGN_REFUSED.into(),
        data,
    }
}

/// The refusal for a log shorter than what ttmd wrote and acknowledged.
pub(super) fn shrank(path: &Path, now: u64, was: u64) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message: format!(
            "is {now} bytes, shorter than the {was} bytes ttmd wrote: lines were removed or \
             cut behind ttmd's back, so acknowledged events are missing; nothing was written, \
             and the transaction is quarantined until the log is restored (from a backup) or \
             the directory is moved away"
        ),
    }
}

/// The event type that records a refused hand edit of `state.json`.
pub const EDIT_REFUSED: &str = "state_edit_refused";

/// What a hand-written `state.json` changed, compared with `want`: user
/// fields (a removed one becomes `null`) and reserved fields (refused).
/// `None` when the file is not a JSON object, or is a stale view (a lower
/// `seq`).
fn diff_edit(want: &State, have: &[u8]) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let Ok(Value::Object(have)) = serde_json::from_slice::<Value>(have) else {
        return None;
    };
    let Ok(Value::Object(want)) = serde_json::to_value(want) else {
        return None;
    };
    let seq_of = |m: &Map<String, Value>| m.get("seq").and_then(Value::as_u64);
    if seq_of(&have) < seq_of(&want) {
        // A view the daemon failed to replace (a full disk), not an edit:
        // its older fields must not be logged back over newer ones.
        return None;
    }
    let (mut patch, mut reserved) = (Map::new(), Map::new());
    for (k, v) in &have {
        if want.get(k) == Some(v) {
            continue;
        }
        let text_field = matches!(k.as_str(), "description" | "target" | "agent");
        if RESERVED_FIELDS.contains(&k.as_str()) || (text_field && !v.is_string()) {
            reserved.insert(k.clone(), v.clone());
        } else {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in want.keys().filter(|k| !have.contains_key(*k)) {
        let user = !RESERVED_FIELDS.contains(&k.as_str())
            && !matches!(k.as_str(), "description" | "target" | "agent");
        if user {
            patch.insert(k.clone(), Value::Null);
        } else {
            reserved.insert(k.clone(), Value::Null);
        }
    }
    Some((patch, reserved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> State {
        let start: Map<String, Value> = serde_json::from_str(
            r#"{"ts":"2025-10-17T14:30:22.000Z","event":"txn_start","seq":1,"txn_id":"t-20251017T143022",
                "description":"d","target":"@local","agent":"human","module":"rag","stage":"NEW"}"#,
        )
        .unwrap();
        let mut s = State::start(&start, "rag").unwrap();
        s.extra.insert("owner".into(), "ops".into());
        s
    }

    #[test]
    fn an_edit_splits_into_user_fields_and_refused_reserved_ones() {
        let want = view();
        let mut have = serde_json::to_value(&want).unwrap();
        have["qa_id"] = "qa-1".into();
        have["stage"] = "APPLY".into();
        have["agent"] = 5.into();
        have.as_object_mut().unwrap().remove("owner");
        let (patch, reserved) = diff_edit(&want, have.to_string().as_bytes()).unwrap();
        assert_eq!(patch["qa_id"], "qa-1");
        assert_eq!(patch["owner"], Value::Null);
        assert_eq!(patch.len(), 2, "{patch:?}");
        assert_eq!(reserved["stage"], "APPLY");
        assert_eq!(reserved["agent"], 5);
    }

    #[test]
    fn a_stale_view_or_a_non_object_is_no_edit() {
        let mut want = view();
        let mut stale = serde_json::to_value(&want).unwrap();
        stale["owner"] = "old".into();
        want.seq = 5;
        assert!(diff_edit(&want, stale.to_string().as_bytes()).is_none());
        assert!(diff_edit(&want, b"[1]").is_none());
    }
}
