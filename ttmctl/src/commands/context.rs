//! Context / evidence files (SPEC §6).

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use ttm_proto::v1::add_context_request::Part;
use ttm_proto::v1::{
    AddContextEnd, AddContextHeader, AddContextRequest, AddContextResponse, ContextFile,
};

use super::{Ctx, preconditions};
use crate::cli::Guards;
use crate::connect;
use crate::exit::Failure;
use crate::render;
use crate::shell;
use crate::term::{self, ColorWhen};

/// Bytes per message: small enough for bounded memory, large enough that
/// per-message overhead does not matter.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight between the reading thread and the RPC.
const QUEUE: usize = 4;

/// What `ctx add` reads from.
struct Source {
    /// The base name sent to the daemon (for stem and extension); empty
    /// for stdin. Never a path: the daemon must not learn or open paths.
    file_name: String,
    /// How messages name it.
    shown: String,
    /// Its size, when known before reading (a regular file).
    len: Option<u64>,
    reader: Box<dyn Read + Send>,
}

impl Source {
    /// Opens `path` (`-` for stdin), refusing what cannot be sent as bytes.
    fn open(path: &Path) -> Result<Source, Failure> {
        if path.as_os_str() == "-" {
            return Ok(Source {
                file_name: String::new(),
                shown: "standard input".to_owned(),
                len: None,
                reader: Box::new(io::stdin()),
            });
        }
        let shown = path.display().to_string();
        let cannot_read = |err: io::Error| Failure::usage(format!("cannot read {shown}: {err}"));
        let metadata = std::fs::metadata(path).map_err(cannot_read)?;
        if metadata.is_dir() {
            return Err(Failure::usage(directory_hint(path)));
        }
        let file = File::open(path).map_err(cannot_read)?;
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Source {
            file_name,
            shown,
            len: metadata.is_file().then_some(metadata.len()),
            reader: Box::new(file),
        })
    }
}

fn directory_hint(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "dir".to_owned());
    format!(
        "{} is a directory; archive it first, e.g. `tar czf {} {}`",
        path.display(),
        shell::word(&format!("{name}.tar.gz")),
        shell::word(&path.to_string_lossy()),
    )
}

/// Prints the stored name (e.g. `100_artifact.tar.gz`); `--json` prints
/// `{"file","bytes","sha256","ctx_digest","seq"}`.
pub async fn add(
    ctx: &mut Ctx,
    id: &str,
    path: &Path,
    description: Option<String>,
    guards: &Guards,
) -> Result<(), Failure> {
    let source = Source::open(path)?;
    let header = AddContextRequest {
        part: Some(Part::Header(AddContextHeader {
            txn: ctx.txn(id),
            file_name: source.file_name,
            description: description.unwrap_or_default(),
            pre: preconditions(guards),
        })),
    };
    let mut daemon = ctx.daemon().await?;
    let socket = daemon.socket().to_path_buf();

    let (sender, receiver) = mpsc::channel(QUEUE);
    sender
        .send(header)
        .await
        .map_err(|_| Failure::other("the upload queue closed before it started"))?;
    let progress = progress_bar(source.len, ctx.color);
    let bar = progress.clone();
    let blocked = Blocked::default();
    let pump_blocked = blocked.clone();
    let reader =
        tokio::task::spawn_blocking(move || pump(source.reader, sender, bar, &pump_blocked));
    let call =
        daemon.call_unbounded(async move |c| c.add_context(ReceiverStream::new(receiver)).await);
    let upload = Upload {
        shown: &source.shown,
        socket: &socket,
        progress: progress.as_ref(),
    };
    let reply = upload.settle(call, reader, blocked).await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    print_added(ctx, &reply?)
}

/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// A progress bar on stderr with bytes, rate and time left, for a file of
/// `len` bytes: only when it is large and stderr is a terminal (never in a
/// pipe or a log). Coloured under the same rules as stdout.
fn progress_bar(len: Option<u64>, color: ColorWhen) -> Option<ProgressBar> {
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
struct Upload<'a> {
    shown: &'a str,
    socket: &'a Path,
    progress: Option<&'a ProgressBar>,
}

impl Upload<'_> {
    /// Waits for whichever ends first: the call (ttmd answered, maybe
    /// refusing), the reader (then the answer, within the deadline), or
    /// the daemon taking no bytes for longer than the deadline.
    async fn settle(
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
struct Blocked(Arc<Mutex<Option<Instant>>>);

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
struct ReadFailed {
    error: io::Error,
    sender: mpsc::Sender<AddContextRequest>,
}

/// Copies the source into the request stream, `CHUNK` bytes at a time
/// (runs on a blocking thread: stdin and files are blocking reads), and
/// ends it with `AddContextEnd`: the daemon stores the file only then, so
/// an upload cut short by a cancel or a crash is never taken as whole.
fn pump(
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

fn print_added(ctx: &mut Ctx, reply: &AddContextResponse) -> Result<(), Failure> {
    if ctx.json {
        ctx.out.json(&json!({
            "file": reply.file,
            "bytes": reply.bytes,
            "sha256": reply.sha256,
            "ctx_digest": reply.ctx_digest,
            "seq": reply.seq,
        }))
    } else {
        ctx.out.line(&reply.file)
    }
}

async fn list_files(ctx: &Ctx, id: &str) -> Result<(Vec<ContextFile>, String), Failure> {
    let mut daemon = ctx.daemon().await?;
    let reply = super::pages::ctx_files(&mut daemon, ctx.txn(id)).await?;
    Ok((reply.files, reply.ctx_digest))
}

/// Human: `NAME  BYTES` per file, aligned, in numeric order. `--json`: an
/// array of `{"name","number","bytes","path","evidence_index"}`.
pub async fn list(ctx: &mut Ctx, id: &str) -> Result<(), Failure> {
    let (files, _) = list_files(ctx, id).await?;
    if ctx.json {
        let files: Vec<Value> = files.iter().map(render::ctx_file_json).collect();
        ctx.out.json(&Value::Array(files))
    } else {
        let human = ctx.human();
        let lines = if human.tty {
            render::ctx_rich(&files, &human)
        } else {
            render::ctx_table(&files)
        };
        for line in lines {
            ctx.out.line(&line)?;
        }
        Ok(())
    }
}

/// Human: `e1='<path>'` … then `e_count=N`, safe for `eval`. `--json`:
/// `{"e1": "<path>", …, "e_count": N}`.
pub async fn env(ctx: &mut Ctx, id: &str) -> Result<(), Failure> {
    let (files, _) = list_files(ctx, id).await?;
    let evidence = evidence(&files);
    let fences = fences(ctx, id).await?;
    if ctx.json {
        let mut object = Map::new();
        for (index, path) in &evidence {
            object.insert(format!("e{index}"), Value::String((*path).to_owned()));
        }
        object.insert("e_count".to_owned(), json!(evidence.len()));
        for (name, token) in &fences {
            object.insert(ttm_core::lease::fence_env_name(name), json!(token));
        }
        ctx.out.json(&Value::Object(object))
    } else {
        let mut script = env_script(&evidence);
        for (name, token) in &fences {
            // Names pass the lease-name rules, tokens are numbers: no quoting.
            script.push_str(&format!(
                "{}={token}\n",
                ttm_core::lease::fence_env_name(name)
            ));
        }
        ctx.out.line(&script)
    }
}

/// The leases the transaction holds, with their fencing tokens, as its
/// state document says (`leases.held`).
async fn fences(ctx: &Ctx, id: &str) -> Result<Vec<(String, u64)>, Failure> {
    let request = ttm_proto::v1::GetStateRequest { txn: ctx.txn(id) };
    let mut daemon = ctx.daemon().await?;
    let reply = daemon
        .call(async move |c| c.get_state(request).await)
        .await?;
    let state = super::state_value(&super::required(reply.state)?)?;
    let held = state["leases"]["held"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    Ok(held
        .into_iter()
        .filter_map(|(name, h)| Some((name, h["token"].as_u64()?)))
        .collect())
}

/// The evidence files (index ≥ 1) by index.
fn evidence(files: &[ContextFile]) -> Vec<(u32, &str)> {
    let mut evidence: Vec<(u32, &str)> = files
        .iter()
        .filter(|file| file.evidence_index >= 1)
        .map(|file| (file.evidence_index, file.path.as_str()))
        .collect();
    evidence.sort_by_key(|(index, _)| *index);
    evidence
}

fn env_script(evidence: &[(u32, &str)]) -> String {
    let mut script = String::new();
    for (index, path) in evidence {
        // The name is built from a number, so only the value needs quoting.
        script.push_str(&shell::assignment(&format!("e{index}"), path));
        script.push('\n');
    }
    script.push_str(&format!("e_count={}\n", evidence.len()));
    script
}

/// Prints the ctx digest (an empty line if there is none); `--json`:
/// `{"ctx_digest": "<hex>" or null}`.
pub async fn digest(ctx: &mut Ctx, id: &str) -> Result<(), Failure> {
    let (_, digest) = list_files(ctx, id).await?;
    if ctx.json {
        let digest = if digest.is_empty() {
            Value::Null
        } else {
            Value::String(digest)
        };
        ctx.out.json(&json!({ "ctx_digest": digest }))
    } else {
        ctx.out.line(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn env_script_numbers_evidence_and_counts_it() {
        let file = |name: &str, index: u32| ContextFile {
            name: name.to_owned(),
            path: format!("/t/ctx/{name}"),
            evidence_index: index,
            ..Default::default()
        };
        let files = [
            file("000_policy.md", 0),
            file("110_b.txt", 2),
            file("100_a b.txt", 1),
        ];
        assert_eq!(
            env_script(&evidence(&files)),
            "e1='/t/ctx/100_a b.txt'\ne2='/t/ctx/110_b.txt'\ne_count=2\n"
        );
        assert_eq!(env_script(&[]), "e_count=0\n");
    }

    #[test]
    fn env_script_survives_eval_of_hostile_paths() {
        if Command::new("bash").arg("-c").arg("true").status().is_err() {
            return;
        }
        let hostile = "/t/ctx/100_it's $(touch /tmp/ttmctl-pwned) `x` \"q\"\n;ls.txt";
        let script = env_script(&[(1, hostile), (2, "/plain")]);
        let Ok(output) = Command::new("bash")
            .arg("-c")
            .arg(r#"eval "$x"; printf '%s|%s|%s' "$e1" "$e2" "$e_count""#)
            .env("x", &script)
            .output()
        else {
            panic!("bash did not run");
        };
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{hostile}|/plain|2")
        );
    }

    #[test]
    fn fill_reads_until_full_or_end() {
        let data = vec![7u8; CHUNK + 10];
        let mut reader = &data[..];
        let mut buf = vec![0u8; CHUNK];
        assert!(matches!(fill(&mut reader, &mut buf), Ok(n) if n == CHUNK));
        assert!(matches!(fill(&mut reader, &mut buf), Ok(10)));
        assert!(matches!(fill(&mut reader, &mut buf), Ok(0)));
    }

    #[test]
    fn a_directory_is_refused_with_an_archive_hint() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let sub = dir.path().join("my build");
        assert!(std::fs::create_dir(&sub).is_ok());
        let Err(failure) = Source::open(&sub) else {
            panic!("directory accepted");
        };
        assert_eq!(failure.exit, crate::exit::Exit::Usage);
        assert!(failure.message.contains("is a directory; archive it first"));
        assert!(failure.message.contains("tar czf 'my build.tar.gz'"));
    }

    #[test]
    fn a_missing_file_is_a_usage_error_and_the_name_is_a_base_name() {
        let Err(failure) = Source::open(Path::new("/nonexistent/x.txt")) else {
            panic!("missing file accepted");
        };
        assert_eq!(failure.exit, crate::exit::Exit::Usage);
        assert!(failure.message.contains("/nonexistent/x.txt"));

        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let path = dir.path().join("app.tar.gz");
        assert!(std::fs::write(&path, b"x").is_ok());
        let Ok(source) = Source::open(&path) else {
            panic!("file refused");
        };
        assert_eq!(source.file_name, "app.tar.gz");
    }
}
