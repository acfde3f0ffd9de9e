//! Context / evidence files (SPEC §6).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use ttm_proto::v1::add_context_request::Part;
use ttm_proto::v1::{AddContextHeader, AddContextRequest, AddContextResponse, ContextFile};

use super::upload::{Blocked, QUEUE, Upload, progress_bar, pump};
use super::{Ctx, preconditions};
use crate::cli::Guards;
use crate::exit::Failure;
use crate::render;
use crate::shell;

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
