//! `ttmd`: parse flags, set up logging, take the tree, serve until SIGTERM.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use tracing_subscriber::EnvFilter;
use ttmd::config::{Config, Overrides, Source};

/// The TTM daemon: the only writer of a tree of transactions, serving the
/// ttm.v1 gRPC API on a Unix socket.
///
/// Settings come from flags and environment variables, else the config file
/// (`<root>/ttmd.toml`), else defaults; `--print-config` shows the result.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The tree to serve [default: ~/.tetra]
    #[arg(long, value_name = "DIR", env = "TETRA_DIR")]
    root: Option<PathBuf>,
    /// The config file [default: <root>/ttmd.toml, if present]
    #[arg(long, value_name = "PATH", env = "TTM_CONFIG")]
    config: Option<PathBuf>,
    /// The socket to listen on [default: $XDG_RUNTIME_DIR/ttm/ttmd.sock,
    /// else <root>/run/ttmd.sock]. Ignored under socket activation.
    #[arg(long, value_name = "PATH", env = "TTM_SOCKET")]
    socket: Option<String>,
    /// `fsync` (default): a change is acknowledged only once its log line
    /// is on disk (state.json, a view of the log, is synced within a
    /// second). `strict`: state.json is synced before the answer too.
    /// `none`: faster, but a crash or power cut may lose acknowledged
    /// changes.
    #[arg(long, value_name = "fsync|strict|none", env = "TTM_DURABILITY")]
    durability: Option<String>,
    /// Seconds between heartbeats on idle streams [default: 10]
    #[arg(long, value_name = "SECS", env = "TTM_HEARTBEAT_SECS")]
    heartbeat_secs: Option<String>,
    /// Seconds shutdown waits for in-flight requests [default: 10]
    #[arg(long, value_name = "SECS", env = "TTM_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<String>,
    /// Further uids allowed to call, comma-separated
    #[arg(long, value_name = "UIDS", env = "TTM_ALLOW_UIDS")]
    allow_uids: Option<String>,
    /// Groups (gids) whose members may call, comma-separated
    #[arg(long, value_name = "GIDS", env = "TTM_ALLOW_GIDS")]
    allow_gids: Option<String>,
    /// Groups by name whose members may call, comma-separated
    #[arg(long, value_name = "NAMES", env = "TTM_ALLOW_GROUPS")]
    allow_groups: Option<String>,
    /// Let root call a daemon running as another user (true/false)
    #[arg(long, value_name = "BOOL", env = "TTM_ALLOW_ROOT")]
    allow_root: Option<String>,
    /// Largest description in bytes [default: 65536]
    #[arg(long, value_name = "BYTES", env = "TTM_LIMIT_DESCRIPTION")]
    limit_description: Option<String>,
    /// Largest JSON payload (update, event data) in bytes [default: 1 MiB]
    #[arg(long, value_name = "BYTES", env = "TTM_LIMIT_PAYLOAD")]
    limit_payload: Option<String>,
    /// Largest ctx file in bytes [default: 16 GiB]
    #[arg(long, value_name = "BYTES", env = "TTM_LIMIT_CTX_FILE")]
    limit_ctx_file: Option<String>,
    /// Most ctx files in one transaction [default: 10000]
    #[arg(long, value_name = "N", env = "TTM_LIMIT_CTX_FILES")]
    limit_ctx_files: Option<String>,
    /// Most open Events/Watch streams in total [default: 1024]
    #[arg(long, value_name = "N", env = "TTM_LIMIT_STREAMS_TOTAL")]
    limit_streams_total: Option<String>,
    /// Most open Events/Watch streams per client process [default: 64]
    #[arg(long, value_name = "N", env = "TTM_LIMIT_STREAMS_PER_CLIENT")]
    limit_streams_per_client: Option<String>,
    /// Largest request message in bytes [default: 4 MiB]
    #[arg(long, value_name = "BYTES", env = "TTM_LIMIT_REQUEST_BYTES")]
    limit_request_bytes: Option<String>,
    /// Modules kept outside the root: NAME=DIR,NAME=DIR
    #[arg(long, value_name = "NAME=DIR,...", env = "TTM_MODULE_DIRS")]
    module_dirs: Option<String>,
    /// Append logs to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Print the effective settings and where each came from, then exit.
    #[arg(long)]
    print_config: bool,
}

/// (flag id, config key, env var) for settings given as text.
const SETTINGS: &[(&str, &str, &str)] = &[
    ("socket", "socket", "TTM_SOCKET"),
    ("durability", "durability", "TTM_DURABILITY"),
    ("heartbeat_secs", "heartbeat_secs", "TTM_HEARTBEAT_SECS"),
    (
        "shutdown_grace_secs",
        "shutdown_grace_secs",
        "TTM_SHUTDOWN_GRACE_SECS",
    ),
    ("allow_uids", "access.uids", "TTM_ALLOW_UIDS"),
    ("allow_gids", "access.gids", "TTM_ALLOW_GIDS"),
    ("allow_groups", "access.groups", "TTM_ALLOW_GROUPS"),
    ("allow_root", "access.allow_root", "TTM_ALLOW_ROOT"),
    (
        "limit_description",
        "limits.description",
        "TTM_LIMIT_DESCRIPTION",
    ),
    ("limit_payload", "limits.payload", "TTM_LIMIT_PAYLOAD"),
    ("limit_ctx_file", "limits.ctx_file", "TTM_LIMIT_CTX_FILE"),
    ("limit_ctx_files", "limits.ctx_files", "TTM_LIMIT_CTX_FILES"),
    (
        "limit_streams_total",
        "limits.streams_total",
        "TTM_LIMIT_STREAMS_TOTAL",
    ),
    (
        "limit_streams_per_client",
        "limits.streams_per_client",
        "TTM_LIMIT_STREAMS_PER_CLIENT",
    ),
    (
        "limit_request_bytes",
        "limits.request_bytes",
        "TTM_LIMIT_REQUEST_BYTES",
    ),
    ("module_dirs", "modules", "TTM_MODULE_DIRS"),
];

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let config = match config(&args, &matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ttmd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    let to_file = args.log_file.is_some();
    if let Err(e) = init_logging(args.log_file.as_deref()) {
        eprintln!("ttmd: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ttmd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Handlers first: a SIGTERM during start-up (recovery of a big tree)
        // is kept and honoured as soon as serving begins, with exit 0.
        let stop = signals()?;
        let listener = ttmd::socket::listen(&config.root, &config.socket)?;
        ttmd::run(config, listener, stop).await
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

/// The effective config: the file's values under the flags' and
/// environment's.
fn config(args: &Args, matches: &ArgMatches) -> Result<Config, ttmd::core::Error> {
    let root = args
        .root
        .clone()
        .unwrap_or_else(ttm_proto::paths::tetra_dir);
    let mut overrides = Overrides {
        config_file: args.config.clone(),
        settings: Vec::new(),
    };
    for &(id, key, env) in SETTINGS {
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env(env),
            _ => continue,
        };
        if let Some(value) = matches.get_one::<String>(id) {
            overrides.settings.push((key, value.clone(), source));
        }
    }
    let mut config = Config::load(root.clone(), &overrides)?;
    config.sources.insert(
        "root",
        match matches.value_source("root") {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env("TETRA_DIR"),
            _ => Source::Default,
        },
    );
    config.reload_on_sighup = true;
    Ok(config)
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on
/// the first of them.
fn signals() -> Result<impl std::future::Future<Output = ()> + Send + 'static, ttmd::BoxError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
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
