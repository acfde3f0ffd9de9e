//! One push of the outbox (`mirror.rs`): the lines it carries, checked to
//! follow what etcd has without a gap, and the etcd transaction that puts
//! them.

use std::sync::Arc;

use serde_json::{Map, Value};
use ttm_etcd::{cmp, op};

use super::keys;
use crate::core::{Error, Result};
use crate::store::log::Line;
use crate::store::txn::{Committed, Txn};

/// Lines per push: etcd refuses a transaction of more than 128 operations
/// by default (`--max-txn-ops`), and each line may add an evidence key.
const LINES_PER_PUSH: usize = 60;
/// Bytes of lines per push, well under etcd's 1.5 MiB request limit.
const BYTES_PER_PUSH: usize = 512 * 1024;

/// What etcd holds of one transaction, as the last push or read left it.
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// Lines pushed (`mirror_seq`).
    pub pushed: u64,
    /// The state key's mod_revision (0: absent).
    pub revision: i64,
    /// The state object last pushed.
    pub state: Option<Map<String, Value>>,
}

/// One etcd transaction of the outbox.
pub(super) struct Batch {
    pub compare: Vec<ttm_etcd::pb::Compare>,
    pub ops: Vec<ttm_etcd::pb::RequestOp>,
    /// The last seq it carries.
    pub last: u64,
    /// The state object it puts.
    pub state: Map<String, Value>,
}

/// Why `lines` cannot follow `pushed` lines in etcd, if they cannot: the
/// mirror must be a prefix of the log, so a batch starts at `pushed + 1`
/// and goes on one seq at a time (a reader of the log that skipped or
/// repeated a line must not put a gap or a repeat into etcd).
pub(super) fn gap(pushed: u64, lines: &[Line]) -> Option<String> {
    (pushed + 1..).zip(lines).find_map(|(want, line)| {
        (line.seq != want).then(|| {
            format!(
                "the batch read from the log has seq {} where {want} should follow etcd's {pushed}",
                line.seq
            )
        })
    })
}

/// The push of `lines` (those after `known`) of `module/txn`, homed on
/// `host`.
pub(super) fn batch(module: &str, host: &str, txn: &Txn, known: &Record, lines: &[Line]) -> Batch {
    let first = lines.first().map_or(known.pushed + 1, |l| l.seq);
    let last = lines.last().map_or(known.pushed, |l| l.seq);
    let compare = vec![
        cmp::mod_revision(keys::state(module, &txn.id).as_bytes(), known.revision),
        cmp::version(keys::event(module, &txn.id, first).as_bytes(), 0),
    ];
    let mut ops = Vec::with_capacity(2 * lines.len() + 1);
    for line in lines {
        let key = keys::event(module, &txn.id, line.seq);
        ops.push(op::put(key.as_bytes(), line.text.as_bytes(), 0));
        if let Some((name, value)) = evidence(line) {
            let key = keys::ctx(module, &txn.id, &name);
            ops.push(op::put(key.as_bytes(), value.as_bytes(), 0));
        }
    }
    // The state is the home's only when the batch reaches its seq;
    // a batch of a longer backlog keeps the last one pushed.
    let snapshot = txn.state();
    let mut state = match (&known.state, snapshot.seq == last) {
        (Some(previous), false) => previous.clone(),
        _ => match serde_json::to_value(&*snapshot) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        },
    };
    state.insert("home".into(), Value::from(host));
    state.insert("mirror_seq".into(), Value::from(last));
    let value = Value::Object(state.clone()).to_string();
    ops.push(op::put(
        keys::state(module, &txn.id).as_bytes(),
        value.as_bytes(),
        0,
    ));
    Batch {
        compare,
        ops,
        last,
        state,
    }
}

/// The log's lines after `pushed`, up to `committed`, one batch at most;
/// `Err` says why the log could not be read.
pub(super) async fn read_after(
    txn: &Arc<Txn>,
    pushed: u64,
    committed: Committed,
) -> Result<Vec<Line>, String> {
    let txn = txn.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<Line>> {
        let (offset, first) = txn.seek(pushed + 1);
        let (lines, _) = txn.read_lines(offset, committed.len, first)?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for line in lines
            .into_iter()
            .filter(|l| l.seq > pushed && l.seq <= committed.seq)
        {
            bytes += line.text.len();
            if !batch.is_empty() && (batch.len() >= LINES_PER_PUSH || bytes > BYTES_PER_PUSH) {
                break;
            }
            batch.push(line);
        }
        Ok(batch)
    })
    .await
    .map_err(|e| Error::Bug(e.to_string()).to_string())?;
    read.map_err(|e| e.to_string())
}

/// The `ctx/<txn>/<name>` value an `evidence_added` line adds: size and
/// sha256 only, the file stays on its home host.
fn evidence(line: &Line) -> Option<(String, String)> {
    let object = line.object.as_ref()?;
    if object.get("event").and_then(Value::as_str) != Some("evidence_added") {
        return None;
    }
    let data = object
        .get("data")
        .and_then(Value::as_object)
        .unwrap_or(object);
    let name = data.get("file").and_then(Value::as_str)?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let value = serde_json::json!({
        "bytes": data.get("bytes").cloned().unwrap_or(Value::Null),
        "sha256": data.get("sha256").cloned().unwrap_or(Value::Null),
    });
    Some((name.to_owned(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> Line {
        let text = format!(r#"{{"seq":{seq}}}"#);
        Line {
            seq,
            object: serde_json::from_str(&text).ok(),
            bytes: text.len() as u64 + 1,
            text,
        }
    }

    fn lines(seqs: &[u64]) -> Vec<Line> {
        seqs.iter().copied().map(line).collect()
    }

    #[test]
    fn a_batch_must_start_right_after_what_etcd_has_and_go_on_without_a_gap() {
        assert_eq!(gap(0, &lines(&[1, 2, 3])), None);
        assert_eq!(gap(4, &lines(&[5])), None);
        assert_eq!(gap(4, &[]), None);
        let ahead = gap(4, &lines(&[6, 7])).expect("a batch past pushed + 1");
        assert!(ahead.contains("seq 6 where 5"), "{ahead}");
        assert!(
            gap(4, &lines(&[4, 5])).is_some(),
            "a repeat of a pushed line"
        );
        assert!(gap(4, &lines(&[5, 7])).is_some(), "a gap inside the batch");
        assert!(
            gap(4, &lines(&[5, 5])).is_some(),
            "a repeat inside the batch"
        );
    }
}
