//! `ttmd`: parse flags, set up logging, take the tree, serve until SIGTERM.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use ttmd::store::Durability;

/// The TTM daemon: the only writer of a tree of transactions, serving the
/// ttm.v1 gRPC API on a Unix socket.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The tree to serve [default: $TETRA_DIR, else ~/.tetra]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The socket to listen on [default: $TTM_SOCKET, else
    /// $XDG_RUNTIME_DIR/ttm/ttmd.sock, else <root>/run/ttmd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// `fsync`: a change is acknowledged only once it is on disk. `none`:
    /// faster, but a crash or power cut may lose acknowledged changes.
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// Append logs to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let to_file = args.log_file.is_some();
    if let Err(e) = init_logging(args.log_file.as_deref()) {
        eprintln!("ttmd: {e}");
        return ExitCode::FAILURE;
    }
    let root = args.root.unwrap_or_else(ttm_proto::paths::tetra_dir);
    let socket = args
        .socket
        .unwrap_or_else(|| ttm_proto::paths::default_socket(&root));
    let mut config = ttmd::Config::new(root, socket);
    config.durability = args.durability;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ttmd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = ttmd::bind(&config.root, &config.socket)?;
        ttmd::run(config, listener, signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if to_file {
                tracing::error!("{e}");
            }
            eprintln!("ttmd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop ttmd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Logs to stderr (or a file), level from `TTM_LOG`, else `RUST_LOG`, else
/// `info`.
fn init_logging(file: Option<&std::path::Path>) -> Result<(), String> {
    let filter = std::env::var("TTM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).map_err(|e| format!("bad TTM_LOG {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(Mutex::new(f)).init();
        }
        None => {
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init()
        }
    }
    Ok(())
}
