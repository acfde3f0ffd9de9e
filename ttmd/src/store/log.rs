//! `events.ndjson`: reading it as lines numbered from 1 (the line number is
//! the event's `seq`, whatever the line itself claims), and appending whole
//! lines. Lines other programs appended are read like the daemon's own; a
//! line that is not a JSON object is reported and stands in the log as a
//! gap in meaning only, never in numbering.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};

use crate::core::event::Logged;
use crate::core::{Error, Result};
use crate::store::fsio::Durability;

/// One complete line of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number.
    pub seq: u64,
    /// The parsed object, or `None` for a malformed line.
    pub object: Option<Map<String, Value>>,
    /// The raw text, without the newline.
    pub text: String,
    /// Bytes the line takes in the file, newline included.
    pub bytes: u64,
}

impl Line {
    /// The line as a typed event, read from its parsed object.
    pub fn logged(&self) -> Logged {
        Logged::read(self.object.as_ref())
    }
}

/// The complete lines in `bytes` (a log, or a tail of one starting at a line
/// boundary), numbered from `first_seq`, and how many bytes they span. A
/// final fragment without its newline is not a line yet.
pub fn parse_lines(bytes: &[u8], first_seq: u64) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut seq = first_seq;
    while let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') {
        let raw = &bytes[start..start + nl];
        let text = String::from_utf8_lossy(raw).into_owned();
        let object = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        };
        lines.push(Line {
            seq,
            object,
            text,
            bytes: nl as u64 + 1,
        });
        seq += 1;
        start += nl + 1;
    }
    (lines, start)
}

/// Appends `line` (which ends in `\n`) to `file`, whose length is `len`,
/// and syncs it when durability asks. On failure the file is cut back to
/// `len`, so a failed append never leaves part of a line behind.
pub fn append(
    file: &mut File,
    len: u64,
    line: &str,
    durability: Durability,
    path: &Path,
) -> Result<()> {
    let write = || file.write_all(line.as_bytes());
    let result = crate::metrics::WRITE.append.time(write).and_then(|()| {
        if durability.syncs() {
            file.sync_data()
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        let _ = file.set_len(len);
        return Err(Error::io("appending to", path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_fragments_wait() {
        let log = b"{\"event\":\"a\"}\nnot json\n[1]\n{\"event\":\"b\"}\n{\"event\":";
        let (lines, used) = parse_lines(log, 1);
        assert_eq!(lines.len(), 4);
        assert_eq!(used, log.len() - "{\"event\":".len());
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert!(lines[0].object.is_some() && lines[3].object.is_some());
        assert!(lines[1].object.is_none() && lines[2].object.is_none());
        let (tail, _) = parse_lines(b"{}\n", 7);
        assert_eq!(tail[0].seq, 7);
    }

    #[test]
    fn invalid_utf8_is_a_malformed_line_not_a_crash() {
        let (lines, _) = parse_lines(b"\xff\xfe\x00\n", 1);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].object.is_none());
    }
}
