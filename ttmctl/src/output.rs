//! Standard output: buffered, with write errors turned into exit codes (a
//! closed pipe is success), and the JSON helpers every command shares.

use std::io::{self, BufWriter, Stdout, Write};

use serde_json::Value;

use crate::exit::Failure;

/// Buffered stdout. Streams call `flush` after each item so a follower sees
/// it at once; one-shot commands flush once at the end.
#[derive(Debug)]
pub struct Out {
    writer: BufWriter<Stdout>,
}

impl Out {
    pub fn new() -> Self {
        Out {
            writer: BufWriter::new(io::stdout()),
        }
    }

    /// Writes `text` and a newline unless it already ends with one.
    pub fn line(&mut self, text: &str) -> Result<(), Failure> {
        self.writer
            .write_all(text.as_bytes())
            .map_err(Failure::stdout)?;
        if !text.ends_with('\n') {
            self.writer.write_all(b"\n").map_err(Failure::stdout)?;
        }
        Ok(())
    }

    /// One JSON document, pretty-printed.
    pub fn json(&mut self, value: &Value) -> Result<(), Failure> {
        self.line(&pretty(value))
    }

    /// One JSON object on one line (for streams).
    pub fn json_line(&mut self, value: &Value) -> Result<(), Failure> {
        self.line(&value.to_string())
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.writer.flush().map_err(Failure::stdout)
    }
}

pub fn pretty(value: &Value) -> String {
    // Serialising a `Value` cannot fail; compact output is the fallback of
    // last resort, not an error path.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Parses a JSON document the daemon sent (state, event, connector).
pub fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|err| Failure::other(format!("ttmd sent {what} that is not valid JSON: {err}")))
}
