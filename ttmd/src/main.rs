//! `ttmd`: parse flags, set up logging, take the tree, serve until SIGTERM.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use tracing_subscriber::EnvFilter;
use ttmd::config::{Config, SettingFlags, Source};

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
    /// The settings' flags and variables come from the table in
    /// ttmd/src/config/settings.rs; only flags that are no setting are
    /// declared here.
    #[command(flatten)]
    settings: SettingFlags,
    /// Append logs to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Print the effective settings and where each came from, then exit.
    #[arg(long)]
    print_config: bool,
}

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
    // Exhaustive on purpose: a field added to `Args` is a compile error
    // here until it is used or said to be no setting, rather than a flag
    // that is parsed and then ignored. Settings belong in the table.
    let Args {
        root,
        config,
        settings,
        log_file: _,
        print_config: _,
    } = args;
    let root = root.clone().unwrap_or_else(ttm_proto::paths::tetra_dir);
    let mut config = Config::load(root, &settings.overrides(config.clone()))?;
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
