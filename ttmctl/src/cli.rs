//! The command line (SPEC §12): clap definitions only, no behaviour.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;
use crate::term::ColorWhen;

/// Command-line client of ttmd, the TTM transaction daemon.
///
/// Transaction-scoped commands act on the module's active transaction
/// unless given `-t ID`. ttmd is started in the background when none answers
/// (set TTM_NO_AUTOSTART=1 to prevent that).
#[derive(Debug, Parser)]
#[command(name = "ttmctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after its name.
#[derive(Debug, Args)]
pub struct Global {
    /// Module namespace (ttm, rag, deploy, ...).
    #[arg(
        short = 'm',
        long,
        env = "TTM_MODULE",
        default_value = ttm_core::DEFAULT_MODULE,
        global = true
    )]
    pub module: String,

    /// ttmd's socket [default: $XDG_RUNTIME_DIR/ttm/ttmd.sock, else $TETRA_DIR/run/ttmd.sock].
    #[arg(long, env = "TTM_SOCKET", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,

    /// Machine output: one JSON document, or one JSON object per line for
    /// streams (schemas: docs/json.md). Nothing else is ever printed on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Colour in human output: auto (only on a terminal, and not when
    /// NO_COLOR is set), always, never.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorWhen::Auto,
        global = true
    )]
    pub color: ColorWhen,

    /// How long to wait for ttmd to answer a request before giving up with
    /// exit 7 (a daemon that accepts but never answers); 0 waits for ever.
    /// Follows are not bounded by it: they watch the daemon's heartbeats.
    #[arg(
        long,
        env = "TTM_RPC_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_duration,
        global = true
    )]
    pub rpc_timeout: u64,
}

// Which transaction a command acts on.
//
// The structs flattened into subcommands carry plain comments, not doc
// comments: clap gives a flattened struct's doc to its subcommand as the
// about text, which the subcommand's own replaced only while the tree was
// built eagerly (see `defer` on `Command`).
#[derive(Debug, Args)]
pub struct TxnArg {
    /// Transaction id [default: the module's active transaction].
    #[arg(short = 't', long = "txn", value_name = "ID", value_parser = given)]
    pub txn: Option<String>,
}

impl TxnArg {
    /// The id named, or "" for the module's active transaction.
    pub fn id(&self) -> &str {
        self.txn.as_deref().unwrap_or("")
    }
}

/// Refuses an empty value for an option whose absence has a meaning of its
/// own: `-t "$ID"` with `ID` unset must not act on the active transaction,
/// and `--request-id "$RID"` must not silently drop the idempotency the
/// script asked for.
fn given(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("the value is empty (an unset variable?); name it, or leave the option out".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

// Guards of a mutation (SPEC §4): compare-and-set and idempotent retry.
#[derive(Debug, Args)]
pub struct Guards {
    /// Refuse (exit 5) unless the transaction is in this stage.
    #[arg(long, value_name = "STAGE")]
    pub expect_stage: Option<String>,

    /// Refuse (exit 5) unless the transaction's last event has this seq.
    #[arg(long, value_name = "SEQ")]
    pub expect_seq: Option<u64>,

    /// Idempotency key: repeating the call with the same key returns the
    /// first answer and changes nothing.
    #[arg(long, value_name = "ID", value_parser = given)]
    pub request_id: Option<String>,

    /// Refuse (exit 5) unless the transaction still holds lease NAME with
    /// this fencing token (`ctx env` shows it as TTM_FENCE_<NAME>);
    /// repeatable.
    #[arg(long = "fence", value_name = "NAME=TOKEN", value_parser = parse_fence)]
    pub fences: Vec<(String, u64)>,
}

// How a move reports itself to a script.
#[derive(Debug, Args)]
pub struct MoveArg {
    /// Print the move as one line, `ID<TAB>FROM<TAB>TO` (FROM is `?` when
    /// not known), so a script needs no second call to learn where it was.
    #[arg(long, conflicts_with = "json")]
    pub print_move: bool,
}

fn parse_fence(text: &str) -> Result<(String, u64), String> {
    ttm_core::lease::parse_fence(text).map_err(|e| e.to_string())
}

// What to do when a lease is held by another transaction (SPEC §13).
#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Don't wait: exit 10 ("busy", naming the holder) when a lease is held.
    #[arg(long, conflicts_with_all = ["skip_if_busy", "wait_timeout"])]
    pub no_wait: bool,
    /// When a lease is held: do nothing (nothing is created or acquired),
    /// say so on stderr, and exit 0.
    #[arg(long, conflicts_with = "wait_timeout")]
    pub skip_if_busy: bool,
    /// Give up waiting after this long (exit 11): 500ms, 90s, 30m.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
    pub wait_timeout: Option<u64>,
}

#[path = "cli_time.rs"]
mod time;
pub use time::TimeArgs;

/// `500ms`, `90s`, `30m`, ... → milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 500ms, 90s or 30m")),
        None => parse_duration(text).map(|s| s.saturating_mul(1000)),
    }
}

// `defer`: a subcommand's arguments are built only when it is the one
// invoked (or help or completions ask for them all), so a one-shot call
// does not build the ~45 others: clap's tree was more than half of the
// instructions of a `ttmctl event` (BENCHMARKS.md, issue 20 item 6).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Create a transaction and make it active; prints its id.
    Create {
        /// What the transaction does (any text).
        #[arg(allow_hyphen_values = true)]
        description: String,
        /// TES target, e.g. @staging [daemon default: @local].
        #[arg(long, value_name = "T", default_value = "")]
        target: String,
        /// Who starts it: human, cron, an agent name [daemon default: human].
        #[arg(long, value_name = "A", default_value = "")]
        agent: String,
        /// Leave the module's active transaction as it is.
        #[arg(long)]
        no_activate: bool,
        /// Idempotency key: repeating the call with the same key returns the
        /// first transaction instead of creating another.
        #[arg(long, value_name = "ID", value_parser = given)]
        request_id: Option<String>,
        /// Acquire this lease (@target or name) at creation; repeatable.
        /// Waits in the queue unless --no-wait / --skip-if-busy.
        #[arg(long = "lease", value_name = "NAME")]
        leases: Vec<String>,
        /// The leases' TTL: lost when the transaction shows no life for
        /// this long [default: 60s].
        #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
        lease_ttl: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        time: TimeArgs,
    },
    /// Print the module's active transaction id.
    Active,
    /// Make a transaction the module's active one.
    Activate {
        /// Transaction id.
        id: String,
        #[command(flatten)]
        guards: Guards,
    },
    /// Print the transaction's directory (for build/ and artifacts/).
    Dir {
        #[command(flatten)]
        txn: TxnArg,
    },
    /// List the module's transactions, oldest first (* marks the active one).
    List {
        /// Only transactions in this stage.
        #[arg(long, value_name = "S", default_value = "")]
        stage: String,
    },
    /// Print the state document (state.json).
    State {
        #[command(flatten)]
        txn: TxnArg,
    },
    /// Summarise a transaction; --follow waits until it ends (exit 0 DONE, 9 FAIL).
    Status {
        #[command(flatten)]
        txn: TxnArg,
        /// Keep printing events until the transaction is DONE or FAIL
        /// (across daemon restarts).
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow: give up after this long (exit 11), e.g. 90s, 30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "follow")]
        timeout: Option<u64>,
    },
    /// Print the transaction's events.
    Events {
        #[command(flatten)]
        txn: TxnArg,
        /// Only events of this type.
        #[arg(long = "type", value_name = "T", default_value = "")]
        event_type: String,
        /// First seq to print (inclusive).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        from: u64,
        /// Keep printing new events as they are written (across daemon
        /// restarts).
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow: stop after this long (exit 11), e.g. 90s, 30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "follow")]
        timeout: Option<u64>,
    },
    /// Move the transaction to STAGE.
    Transition {
        /// The stage to move to.
        stage: String,
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
        #[command(flatten)]
        show: MoveArg,
    },
    /// Move the transaction to DONE.
    Commit {
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
        #[command(flatten)]
        show: MoveArg,
    },
    /// Move the transaction to FAIL, recording MESSAGE as its error.
    Fail {
        /// What went wrong.
        #[arg(default_value = "failed", allow_hyphen_values = true)]
        message: String,
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
        #[command(flatten)]
        show: MoveArg,
    },
    /// Move a FAIL transaction back to a working stage (iteration + 1).
    Retry {
        /// Stage to go back to [default: the first stage].
        #[arg(long, value_name = "STAGE", default_value = "")]
        to: String,
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
        #[command(flatten)]
        show: MoveArg,
    },
    /// Merge a JSON object's keys into the state ('-' reads it from stdin).
    Update {
        /// A JSON object, or '-' for standard input.
        #[arg(value_name = "JSON")]
        patch: String,
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
    },
    /// Append a user event of type TYPE with a JSON object as its data.
    Event {
        /// Event type, e.g. progress or deploy.step.
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// A JSON object ('-' reads it from stdin) [default: {}].
        #[arg(value_name = "JSON")]
        data: Option<String>,
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
    },
    /// Context / evidence files.
    #[command(subcommand)]
    Ctx(CtxCommand),
    /// Resolve the transaction's target into a plan; prints the plan.
    Resolve {
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
    },
    /// Print the connector entry of a target (@symbol or host).
    Connector {
        /// e.g. @staging.
        #[arg(allow_hyphen_values = true)]
        target: String,
    },
    /// Print changes across the module's transactions as they happen.
    Watch,
    /// Acquire or release a lease for the transaction.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// List leases: holders, tokens, ages and queues.
    Leases,
    /// Cluster mode: list the hosts in the etcd cluster, with liveness and
    /// mirror lag (exit 12 when etcd cannot be reached).
    Hosts,
    /// Show life: renews the TTL of the transaction's leases and keeps a
    /// --heartbeat transaction from being reported stalled.
    Heartbeat {
        #[command(flatten)]
        txn: TxnArg,
    },
    /// Print the daemon's metrics in the Prometheus text format (what
    /// `ttmd --metrics-listen` serves at /metrics). Never starts a daemon.
    Metrics,
    /// Print ttmctl's version.
    Version,
    /// Move finished, inactive transactions into <module>/archive/ (a dry run
    /// unless --yes).
    Archive {
        /// Only those whose last change is at least this old: 90s, 30m, 12h, 7d.
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        older_than: Option<u64>,
        /// Only DONE or only FAIL transactions.
        #[arg(long, value_name = "DONE|FAIL", default_value = "")]
        stage: String,
        /// Really move them (without it, only count and list them).
        #[arg(long)]
        yes: bool,
    },
    /// Delete archived transactions past a limit (a dry run unless --yes).
    Gc {
        /// Archived ones whose last change is at least this old: 30m, 12h, 7d.
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        older_than: Option<u64>,
        /// Always keep the newest N archived transactions.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep: u32,
        /// Really delete them (without it, only count and list them).
        #[arg(long)]
        yes: bool,
    },
    /// Move transactions an older version left stuck (RAG flows the bash
    /// wrapper stored as EXECUTE) to a stage they can continue from (a dry
    /// run unless --yes).
    Migrate {
        /// Really move them (without it, only say which would move where).
        #[arg(long)]
        yes: bool,
    },
    /// The daemon itself: status, stop, reload (never starts one).
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// A live monitor of a module's transactions and the selected one's events.
    ///
    /// Keys: ↑/↓ or j/k select, s/S cycle the stage filter, a all stages,
    /// m type a module name, Tab the next module seen, q quit. Runs on
    /// ttmd's Watch and Events streams; needs a terminal.
    Top,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `source <(ttmctl completions bash)`, or save it as
    /// ~/.local/share/bash-completion/completions/ttmctl. zsh: save it as
    /// `_ttmctl` in a directory of $fpath. fish: save it as
    /// ~/.config/fish/completions/ttmctl.fish. scripts/install.sh does this.
    /// In bash, zsh and fish, `-t` completes the module's transaction ids.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page ttmctl(1), or write every page into --dir.
    Man {
        /// Write ttmctl.1 and one page per command (ttmctl-create.1, ...)
        /// into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The transaction ids of the module, one per line, for shell
    /// completion; never starts ttmd, prints nothing when none answers.
    #[command(name = "__txn-ids", hide = true)]
    TxnIds,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum LeaseCommand {
    /// Acquire lease NAME (@target or name); prints its fencing token.
    /// Waits in the FIFO queue unless --no-wait / --skip-if-busy.
    Acquire {
        /// e.g. @prod or db-migrations.
        name: String,
        #[command(flatten)]
        txn: TxnArg,
        /// The lease's TTL [default: 60s].
        #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
        lease_ttl: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Release lease NAME (or stop waiting for it).
    Release {
        name: String,
        #[command(flatten)]
        txn: TxnArg,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum DaemonCommand {
    /// Print pid, version, uptime, tree, socket, transactions and open streams.
    Status,
    /// Ask ttmd to shut down gracefully and wait until it has exited.
    Stop,
    /// Re-read ttmd's config file, topology and module FSMs (like SIGHUP).
    Reload,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CtxCommand {
    /// Store a copy of FILE ('-' for stdin) as the next evidence file; prints its name.
    Add {
        /// A regular file, or '-' for standard input.
        file: PathBuf,
        /// What the file is; becomes the stored name [default: the file's stem].
        #[arg(allow_hyphen_values = true)]
        description: Option<String>,
        #[command(flatten)]
        txn: TxnArg,
        #[command(flatten)]
        guards: Guards,
    },
    /// List the context files: name and size in bytes.
    List {
        #[command(flatten)]
        txn: TxnArg,
    },
    /// Print e1=… e2=… e_count=N assignments for `eval`.
    Env {
        #[command(flatten)]
        txn: TxnArg,
    },
    /// Print the ctx digest.
    Digest {
        #[command(flatten)]
        txn: TxnArg,
    },
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;

/// `90`, `90s`, `30m`, `12h`, `7d` → seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h, d or w"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("").is_err());
    }
}
