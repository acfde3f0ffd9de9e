//! `ttm-bench`: end-to-end numbers for ttmd, each next to its floor measured
//! in the same run on the same machine. Not a test: it never fails on speed.
//!
//! What it measures, against an in-process daemon on a temporary tree:
//! - `Hello` RPCs/s (the transport floor) and `AppendEvent`s/s, with 1, 8
//!   and 64 concurrent clients, durability `fsync` and `none`;
//! - the median and p99 of one small append + `fdatasync` on the same disk
//!   (the durability floor);
//! - append → follower latency (p50/p99): from sending `AppendEvent` to the
//!   event arriving on an `Events` follow stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use ttm_proto::v1 as pb;
use ttm_proto::v1::ttm_client::TtmClient;
use ttmd::store::Durability;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// End-to-end benchmarks of ttmd.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients to measure with.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// Calls per measurement (split across the clients).
    #[arg(long, default_value_t = 6400)]
    calls: usize,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events sent for the follower-latency measurement.
    #[arg(long, default_value_t = 500)]
    follow_events: usize,
    /// Directory for the temporary trees (its disk is the one measured).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only measure ttmd's time to READY=1 on an empty tree and on a tree
    /// of this many transactions (built first, by the daemon itself).
    #[arg(long, value_name = "TXNS")]
    ready: Option<usize>,
    /// A few iterations of everything, to keep the benchmarks compiling and
    /// working (CI runs this; the figures mean nothing).
    #[arg(long)]
    smoke: bool,
    /// Cluster-mode figures against the etcd at these endpoints
    /// (comma-separated): append rate with and without --cluster, mirror
    /// lag under 64 writers, remote follow latency.
    #[arg(long, value_name = "ENDPOINTS")]
    cluster: Option<String>,
}

mod cluster;

fn main() -> Result<(), Error> {
    let mut args = Args::parse();
    if args.smoke {
        args.clients = vec![1, 4];
        args.calls = 40;
        args.runs = 1;
        args.follow_events = 10;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> Result<(), Error> {
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    if let Some(txns) = args.ready {
        return time_to_ready(base.path(), txns, args.runs).await;
    }
    if let Some(endpoints) = &args.cluster {
        let (calls, runs, follow) = (args.calls, args.runs, args.follow_events);
        return cluster::bench(base.path(), endpoints, calls, runs, follow).await;
    }
    if args.smoke {
        time_to_ready(base.path(), 20, 1).await?;
    }
    println!("# ttm-bench — {} runs each, median reported", args.runs);
    let (p50, p99) = fdatasync_latency(base.path(), 2000)?;
    println!("fdatasync of a small append: p50 {p50:.1} µs, p99 {p99:.1} µs");

    for durability in [Durability::Fsync, Durability::None] {
        let daemon = Daemon::start(base.path(), durability).await?;
        let txn = daemon.create().await?;
        println!("\n## durability {durability:?}");
        println!("| clients | Hello/s (floor) | AppendEvent/s | append/floor |");
        println!("|---:|---:|---:|---:|");
        for &clients in &args.clients {
            let hello = median(
                repeat(args.runs, || {
                    rate(&daemon, clients, args.calls, Call::Hello)
                })
                .await?,
            );
            let append = median(
                repeat(args.runs, || {
                    rate(&daemon, clients, args.calls, Call::Append(txn.clone()))
                })
                .await?,
            );
            println!(
                "| {clients} | {hello:.0} | {append:.0} | {:.2} |",
                append / hello
            );
        }
        let (f50, f99) = follower_latency(&daemon, &txn, args.follow_events).await?;
        println!("append → follower latency: p50 {f50:.0} µs, p99 {f99:.0} µs");
        daemon.stop().await;
    }
    Ok(())
}

/// Time from spawning the `ttmd` binary (next to this one) to its READY=1,
/// on an empty tree and on a tree of `txns` transactions.
async fn time_to_ready(base: &Path, txns: usize, runs: usize) -> Result<(), Error> {
    let ttmd = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ttmd"))
        .ok_or("cannot locate ttmd next to ttm-bench")?;
    let empty = tempfile::tempdir_in(base)?;
    let full = tempfile::tempdir_in(base)?;
    {
        // Build the big tree with the daemon itself (durability none: this
        // part is set-up, not measured).
        let mut config = ttmd::Config::new(full.path().join("tree"), full.path().join("b.sock"));
        config.durability = Durability::None;
        let listener = ttmd::bind(&config.root, &config.socket)?;
        let socket = config.socket.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ttmd::run(config, listener, async {
            let _ = stopped.await;
        }));
        let daemon = Daemon { socket, stop, task };
        let per = txns.div_ceil(16);
        let mut tasks = Vec::new();
        for w in 0..16 {
            let mut c = daemon.client().await?;
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    c.create(pb::CreateRequest {
                        description: format!("txn {w} {i}"),
                        no_activate: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok::<_, Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        daemon.stop().await;
    }
    println!("| tree | time to READY=1 (median of {runs}) |");
    println!("|---|---:|");
    for (name, dir) in [
        ("empty".to_string(), &empty),
        (format!("{txns} transactions"), &full),
    ] {
        let mut times = Vec::new();
        for _ in 0..runs.max(1) {
            times.push(spawn_until_ready(&ttmd, dir.path())?);
        }
        println!("| {name} | {:.1} ms |", median(times));
    }
    Ok(())
}

/// Spawns ttmd on `dir/tree` with a notify socket and returns the ms until
/// READY=1 arrives; then stops it.
fn spawn_until_ready(ttmd: &Path, dir: &Path) -> Result<f64, Error> {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_secs(120)))?;
    let start = Instant::now();
    let mut child = std::process::Command::new(ttmd)
        .arg("--root")
        .arg(dir.join("tree"))
        .arg("--socket")
        .arg(dir.join("r.sock"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("TTM_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let mut buf = [0u8; 4096];
    let elapsed = loop {
        let n = notify.recv(&mut buf)?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break start.elapsed();
        }
    };
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait()?;
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// One in-process daemon on its own tree and socket.
struct Daemon {
    socket: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Daemon {
    async fn start(base: &Path, durability: Durability) -> Result<Daemon, Error> {
        Daemon::start_with(base, |config| config.durability = durability).await
    }

    /// A daemon in the cluster at `endpoints` as host `host`.
    async fn start_in_cluster(base: &Path, endpoints: &str, host: &str) -> Result<Daemon, Error> {
        Daemon::start_with(base, |config| {
            config.cluster = endpoints.split(',').map(str::to_owned).collect();
            config.host_id = host.to_owned();
        })
        .await
    }

    async fn start_with(
        base: &Path,
        configure: impl FnOnce(&mut ttmd::Config),
    ) -> Result<Daemon, Error> {
        let dir = tempfile::tempdir_in(base)?.keep();
        let root = dir.join("tree");
        let socket = dir.join("s.sock");
        let mut config = ttmd::Config::new(root.clone(), socket.clone());
        configure(&mut config);
        let listener = ttmd::bind(&root, &socket)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            ttmd::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Daemon { socket, stop, task })
    }

    async fn client(&self) -> Result<TtmClient<Channel>, Error> {
        let channel = ttm_proto::channel::connect(&self.socket).await?;
        Ok(TtmClient::new(channel))
    }

    async fn create(&self) -> Result<String, Error> {
        let mut c = self.client().await?;
        let r = c
            .create(pb::CreateRequest {
                description: "bench".into(),
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().state.map(|s| s.txn_id).unwrap_or_default())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[derive(Clone)]
enum Call {
    Hello,
    Append(String),
}

/// Calls per second with `clients` concurrent clients, each on its own
/// connection, `calls` in total.
async fn rate(daemon: &Daemon, clients: usize, calls: usize, call: Call) -> Result<f64, Error> {
    let per_client = (calls / clients).max(1);
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(daemon.client().await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for mut c in conns {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                match &call {
                    Call::Hello => {
                        c.hello(pb::HelloRequest::default()).await?;
                    }
                    Call::Append(txn) => {
                        c.append_event(pb::AppendEventRequest {
                            txn: Some(pb::TxnRef {
                                module: String::new(),
                                txn_id: txn.clone(),
                            }),
                            event: "bench".into(),
                            data_json: format!("{{\"i\":{i}}}"),
                            pre: None,
                        })
                        .await?;
                    }
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_client * clients) as f64 / start.elapsed().as_secs_f64())
}

/// p50/p99 in µs from sending an append to the follower receiving it. One
/// writer sends one event at a time, with a short pause so the follower is
/// idle when each event arrives (latency, not throughput).
async fn follower_latency(daemon: &Daemon, txn: &str, count: usize) -> Result<(f64, f64), Error> {
    let mut follower = daemon.client().await?;
    let start_seq = {
        let mut c = daemon.client().await?;
        let s = c
            .get_state(pb::GetStateRequest {
                txn: Some(pb::TxnRef {
                    module: String::new(),
                    txn_id: txn.to_string(),
                }),
            })
            .await?;
        s.into_inner().state.map(|s| s.seq).unwrap_or(0)
    };
    let mut stream = follower
        .events(pb::EventsRequest {
            txn: Some(pb::TxnRef {
                module: String::new(),
                txn_id: txn.to_string(),
            }),
            from_seq: start_seq + 1,
            event: String::new(),
            follow: true,
        })
        .await?
        .into_inner();
    let received = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let sink = received.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            if let Some(pb::events_response::Kind::Event(e)) = msg.kind {
                let mut r = sink.lock().await;
                r.push((e.seq, Instant::now()));
                if r.len() >= count {
                    break;
                }
            }
        }
    });
    let mut writer = daemon.client().await?;
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let t0 = Instant::now();
        let r = writer
            .append_event(pb::AppendEventRequest {
                txn: Some(pb::TxnRef {
                    module: String::new(),
                    txn_id: txn.to_string(),
                }),
                event: "latency".into(),
                data_json: format!("{{\"i\":{i}}}"),
                pre: None,
            })
            .await?;
        sent.push((r.into_inner().seq, t0));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::timeout(Duration::from_secs(30), reader).await??;
    let received = received.lock().await;
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(seq, t0)| {
            received
                .iter()
                .find(|(s, _)| s == seq)
                .map(|(_, t1)| t1.duration_since(*t0).as_secs_f64() * 1e6)
        })
        .collect();
    Ok(percentiles(&mut lat))
}

/// p50/p99 in µs of appending 64 bytes to a file and `fdatasync`ing it.
fn fdatasync_latency(dir: &Path, count: usize) -> Result<(f64, f64), Error> {
    use std::io::Write;
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let line = [b'x'; 63];
    let mut lat = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        f.write_all(&line)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    std::fs::remove_file(path)?;
    Ok(percentiles(&mut lat))
}

async fn repeat<F, Fut>(runs: usize, mut f: F) -> Result<Vec<f64>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64, Error>>,
{
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        out.push(f().await?);
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}
