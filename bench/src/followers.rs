//! What idle followers cost a `ttmd` process: its thread count and RSS
//! idle, while N followers (each on its own connection) wait on one
//! transaction, and after they have gone. Measured on the real binary, so
//! the figures are the daemon's own, not this process's.

use std::path::Path;
use std::time::Duration;

use ttm_proto::v1 as pb;
use ttm_proto::v1::ttm_client::TtmClient;

use crate::Error;

/// Threads and RSS (KiB) of `pid`, from /proc.
fn threads_rss(pid: u32) -> Result<(u64, u64), Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("Threads:"), field("VmRSS:")))
}

/// Spawns ttmd, measures it idle, with `n` followers, and after they left.
pub async fn idle_cost(base: &Path, n: usize) -> Result<(), Error> {
    let ttmd = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ttmd"))
        .ok_or("cannot locate ttmd next to ttm-bench")?;
    let dir = tempfile::tempdir_in(base)?;
    let socket = dir.path().join("f.sock");
    let mut child = std::process::Command::new(ttmd)
        .arg("--root")
        .arg(dir.path().join("tree"))
        .arg("--socket")
        .arg(&socket)
        .env("TTM_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let result = measure(child.id(), &socket, n).await;
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait()?;
    result
}

async fn measure(pid: u32, socket: &Path, n: usize) -> Result<(), Error> {
    let mut first = None;
    for _ in 0..200 {
        if let Ok(ch) = ttm_proto::channel::connect(socket).await {
            first = Some(TtmClient::new(ch));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut c = first.ok_or("ttmd did not answer")?;
    let txn = c
        .create(pb::CreateRequest {
            description: "followed".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .state
        .map(|s| s.txn_id)
        .unwrap_or_default();
    let settle = Duration::from_millis(1500);
    tokio::time::sleep(settle).await;
    let idle = threads_rss(pid)?;
    // All at once, as when many scripts start following together.
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = socket.to_path_buf();
        let txn = txn.clone();
        opening.push(tokio::spawn(async move {
            let mut f = TtmClient::new(ttm_proto::channel::connect(&socket).await?);
            let s = f
                .events(pb::EventsRequest {
                    txn: Some(pb::TxnRef {
                        module: String::new(),
                        txn_id: txn,
                    }),
                    from_seq: 0,
                    event: String::new(),
                    follow: true,
                })
                .await?
                .into_inner();
            Ok::<_, Error>((f, s))
        }));
    }
    let mut streams = Vec::with_capacity(n);
    let mut peak = 0;
    for o in opening {
        streams.push(o.await??);
        peak = peak.max(threads_rss(pid)?.0);
    }
    tokio::time::sleep(settle).await;
    let with = threads_rss(pid)?;
    drop(streams);
    // Blocking-pool threads linger 10 s after their last task.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = threads_rss(pid)?;
    println!("peak threads while they connected: {peak}");
    println!("| ttmd | threads | RSS |");
    println!("|---|---:|---:|");
    for (what, (t, rss)) in [
        ("idle".to_string(), idle),
        (format!("{n} idle followers"), with),
        ("after they left".to_string(), after),
    ] {
        println!("| {what} | {t} | {:.1} MiB |", rss as f64 / 1024.0);
    }
    Ok(())
}
