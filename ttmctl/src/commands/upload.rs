//! The bytes of `ctx add` on their way to ttmd: a reading thread pumps
//! the source into the request stream in bounded chunks, ends it with
//! `AddContextEnd`, and the call is bounded by the time the reader waits
//! on the daemon (the request deadline), not by the file's length.

use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use ttm_proto::v1::add_context_request::Part;
use ttm_proto::v1::{AddContextEnd, AddContextRequest, AddContextResponse};

use crate::connect;
use crate::exit::Failure;
use crate::term::{self, ColorWhen};

/// Bytes per message: small enough for bounded memory, large enough that
/// per-message overhead does not matter.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight between the reading thread and the RPC.
pub(super) const QUEUE: usize = 4;

/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// A progress bar on stderr with bytes, rate and time left, for a file of
/// `len` bytes: only when it is large and stderr is a terminal (never in a
/// pipe or a log). Coloured under the same rules as stdout.
pub(super) fn progress_bar(len: Option<u64>, color: ColorWhen) -> Option<ProgressBar> {
    let len = len.filter(|&len| len >= PROGRESS_MIN_BYTES)?;
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = if term::color_from_env(color, true) {
        "{bar:30.cyan/blue}"
    } else {
        "{bar:30}"
    };
    let template = format!(
        "{{spinner}} {bar} {{bytes}}/{{total_bytes}}  {{binary_bytes_per_sec}}  {{eta}} left  {{msg}}"
    );
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let progress =
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style);
    progress.tick();
    Some(progress)
}

enum Finished {
    Call(Result<AddContextResponse, Failure>),
    Reader(Result<Result<(), ReadFailed>, tokio::task::JoinError>),
    /// The daemon took no bytes for this long.
    Stalled(Duration),
}

/// An upload under way: what the messages need to name.
pub(super) struct Upload<'a> {
    pub(super) shown: &'a str,
    pub(super) socket: &'a Path,
    pub(super) progress: Option<&'a ProgressBar>,
}

impl Upload<'_> {
    /// Waits for whichever ends first: the call (ttmd answered, maybe
    /// refusing), the reader (then the answer, within the deadline), or
    /// the daemon taking no bytes for longer than the deadline.
    pub(super) async fn settle(
        &self,
        call: impl Future<Output = Result<AddContextResponse, Failure>>,
        mut reader: tokio::task::JoinHandle<Result<(), ReadFailed>>,
        blocked: Blocked,
    ) -> Result<AddContextResponse, Failure> {
        let mut call = std::pin::pin!(call);
        let finished = tokio::select! {
            reply = &mut call => Finished::Call(reply),
            read = &mut reader => Finished::Reader(read),
            waited = blocked.stalled() => Finished::Stalled(waited),
        };
        match finished {
            Finished::Call(reply) => reply,
            Finished::Reader(Ok(Ok(()))) => {
                if let Some(bar) = self.progress {
                    bar.set_message("waiting for ttmd to store it");
                }
                match connect::deadline() {
                    Some(limit) => tokio::time::timeout(limit, call)
                        .await
                        .unwrap_or_else(|_| Err(connect::no_answer(self.socket, limit))),
                    None => call.await,
                }
            }
            Finished::Reader(Ok(Err(ReadFailed { error, sender }))) => {
                // The request stream must never end cleanly after a failed
                // read, or the daemon would store a truncated file. Leak
                // the sender so the stream stays open until the process
                // exits and the connection drops mid-stream (the call is
                // dropped, cancelled, when this returns).
                std::mem::forget(sender);
                let shown = self.shown;
                Err(Failure::other(format!("cannot read {shown}: {error}")))
            }
            Finished::Reader(Err(join)) => {
                let shown = self.shown;
                Err(Failure::other(format!("reading {shown} stopped: {join}")))
            }
            // The stream is left open (the reader still holds the sender),
            // so the daemon sees the connection drop mid-upload and stores
            // nothing.
            Finished::Stalled(waited) => Err(connect::no_answer(self.socket, waited)),
        }
    }
}

/// Since when the reader has been waiting for the daemon to take a chunk
/// (`None` while it is reading its input). A slow producer on stdin is
/// not the daemon's fault; only time spent blocked on the daemon counts
/// against the request deadline.
#[derive(Debug, Clone, Default)]
pub(super) struct Blocked(Arc<Mutex<Option<Instant>>>);

impl Blocked {
    fn set(&self, since: Option<Instant>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = since;
        }
    }

    /// Resolves once the reader has been blocked on the daemon for longer
    /// than the request deadline; never without a deadline.
    async fn stalled(&self) -> Duration {
        let Some(limit) = connect::deadline() else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let since = self.0.lock().ok().and_then(|slot| *slot);
            if since.is_some_and(|since| since.elapsed() > limit) {
                return limit;
            }
        }
    }
}

/// A read error, with the sender kept alive so the stream does not end.
pub(super) struct ReadFailed {
    error: io::Error,
    sender: mpsc::Sender<AddContextRequest>,
}

/// Copies the source into the request stream, `CHUNK` bytes at a time
/// (runs on a blocking thread: stdin and files are blocking reads), and
/// ends it with `AddContextEnd`: the daemon stores the file only then, so
/// an upload cut short by a cancel or a crash is never taken as whole.
pub(super) fn pump(
    mut reader: Box<dyn Read + Send>,
    sender: mpsc::Sender<AddContextRequest>,
    progress: Option<ProgressBar>,
    blocked: &Blocked,
) -> Result<(), ReadFailed> {
    let mut total = 0u64;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let filled = match fill(&mut reader, &mut chunk) {
            Ok(filled) => filled,
            Err(error) => return Err(ReadFailed { error, sender }),
        };
        if filled > 0 {
            chunk.truncate(filled);
            total += filled as u64;
            if let Some(bar) = &progress {
                bar.inc(filled as u64);
            }
            let part = Part::Chunk(chunk);
            if !send(&sender, part, blocked) {
                return Ok(());
            }
        }
        // `fill` stops short only at the end of the input.
        if filled < CHUNK {
            let end = Part::End(AddContextEnd {
                bytes: total,
                sha256: String::new(),
            });
            send(&sender, end, blocked);
            return Ok(());
        }
    }
}

/// Queues one message; false when the call already ended (its answer says
/// why).
fn send(sender: &mpsc::Sender<AddContextRequest>, part: Part, blocked: &Blocked) -> bool {
    blocked.set(Some(Instant::now()));
    let sent = sender.blocking_send(AddContextRequest { part: Some(part) });
    blocked.set(None);
    sent.is_ok()
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match reader.read(rest) {
            Ok(0) => break,
            Ok(read) => filled += read.min(rest.len()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_reads_until_full_or_end() {
        let data = vec![7u8; CHUNK + 10];
        let mut reader = &data[..];
        let mut buf = vec![0u8; CHUNK];
        assert!(matches!(fill(&mut reader, &mut buf), Ok(n) if n == CHUNK));
        assert!(matches!(fill(&mut reader, &mut buf), Ok(10)));
        assert!(matches!(fill(&mut reader, &mut buf), Ok(0)));
    }
}
