//! Exit codes: a contract scripts branch on, so each code has one meaning.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also: stdout closed early, e.g. `ttmctl events \| head -1`) |
//! | 1 | any other error (INTERNAL, UNKNOWN, malformed answer, local I/O) |
//! | 2 | usage error: bad flags or arguments, unreadable input file, or INVALID_ARGUMENT from ttmd |
//! | 3 | NOT_FOUND: unknown transaction, module or target |
//! | 4 | FAILED_PRECONDITION: refused transition, DONE/FAIL transaction, no active transaction; ALREADY_EXISTS: a request id reused for a different request |
//! | 5 | ABORTED: `--expect-stage` / `--expect-seq` did not match (compare-and-set conflict) |
//! | 6 | PERMISSION_DENIED: ttmd does not serve this user |
//! | 7 | ttmd unreachable, could not be started, or incompatible with this ttmctl |
//! | 8 | RESOURCE_EXHAUSTED or UNAVAILABLE: disk full, read-only tree, a limit |
//! | 9 | `status --follow`: the transaction ended in FAIL |
//! | 10 | busy: a lease is held by another transaction (`--no-wait`) |
//! | 11 | a wait ran out: `--wait-timeout`, `status --follow --timeout`, `events --follow --timeout` |
//! | 12 | coordination unavailable: the etcd cluster (or a transaction's home host) cannot be reached for an operation that needs it |

use std::fmt;
use std::io;

use tonic::{Code, Status};

/// The table above, for `ttmctl --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also when stdout is closed early, e.g. by `| head`)
  1  other error
  2  usage error, unreadable input, or INVALID_ARGUMENT from ttmd
  3  not found (transaction, module, target)
  4  refused: transition not allowed, transaction DONE/FAIL, no active transaction,
     request id already used for a different request
  5  compare-and-set conflict (--expect-stage / --expect-seq did not match)
  6  permission denied
  7  ttmd unreachable, failed to start, or incompatible with this ttmctl
  8  storage or limits: RESOURCE_EXHAUSTED / UNAVAILABLE
  9  status --follow: the transaction ended in FAIL
 10  busy: a lease is held by another transaction (--no-wait)
 11  a wait ran out (--wait-timeout, --timeout of status/events --follow)
 12  coordination unavailable: the etcd cluster (or a transaction's home host)
     cannot be reached for an operation that needs it (cluster mode)";

/// One row of the table above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Other = 1,
    Usage = 2,
    NotFound = 3,
    Refused = 4,
    Conflict = 5,
    PermissionDenied = 6,
    Unreachable = 7,
    Storage = 8,
    TxnFailed = 9,
    Busy = 10,
    WaitTimedOut = 11,
    NoCoordination = 12,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Why a command stopped: the exit code and the one line for stderr.
#[derive(Debug)]
pub struct Failure {
    /// The process's exit code.
    pub exit: Exit,
    /// Printed as `ttmctl: <message>`; empty means print nothing (broken pipe).
    pub message: String,
    /// The daemon did not know the RPC; the caller may add both versions.
    pub unimplemented: bool,
    /// The connection broke or ttmd is stopping: a follow may reconnect
    /// and go on (see `commands::follow`).
    pub resumable: bool,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            unimplemented: false,
            resumable: false,
        }
    }

    /// Ends the process with `exit` and prints nothing.
    pub fn quiet(exit: Exit) -> Self {
        Failure::new(exit, "")
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Usage, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Failure::new(Exit::Other, message)
    }

    /// A write to stdout failed. A closed pipe means the reader has all it
    /// wanted, which is success, not an error worth a message.
    pub fn stdout(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Failure::quiet(Exit::Success)
        } else {
            Failure::other(format!("cannot write to standard output: {err}"))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A clap error as one line — what is wrong, then the usage to follow —
/// or `None` for `--help` / `--version` (and the like), which clap prints
/// itself with exit 0.
pub fn usage_error(err: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    // The plain rendering: "error: …", indented details, "tip: …",
    // "Usage: …", "For more information, try '--help'."
    let text = err.render().to_string();
    let mut what: Vec<String> = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("Usage:") {
            usage = Some(rest.trim().to_owned());
        } else if line.starts_with("For more information") {
        } else {
            what.push(
                line.strip_prefix("error:")
                    .unwrap_or(line)
                    .trim()
                    .to_owned(),
            );
        }
    }
    let mut message = what.join("; ").replace(":;", ":");
    match usage {
        Some(usage) => message.push_str(&format!(" (usage: {usage}; see --help)")),
        None => message.push_str(" (see ttmctl --help)"),
    }
    Some(message)
}

/// `text` on one line: line breaks become `; `, other control characters
/// (escape codes) `?`.
pub fn one_line(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The exit code for a gRPC status code (the daemon's codes are listed in
/// ttm.proto; the rest can only come from the transport or a bug).
pub fn exit_for(code: Code) -> Exit {
    match code {
        Code::Ok => Exit::Success,
        Code::InvalidArgument | Code::OutOfRange => Exit::Usage,
        Code::NotFound => Exit::NotFound,
        Code::FailedPrecondition | Code::AlreadyExists => Exit::Refused,
        Code::Aborted => Exit::Conflict,
        Code::PermissionDenied | Code::Unauthenticated => Exit::PermissionDenied,
        Code::Unimplemented => Exit::Unreachable,
        Code::ResourceExhausted | Code::Unavailable => Exit::Storage,
        Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::DataLoss => Exit::Other,
    }
}

/// Maps a status to a failure, without connection context (see
/// `connect::Daemon::explain`, which adds it).
pub fn from_status(status: &Status) -> Failure {
    // A status built by tonic itself (the connection broke) carries its
    // cause as `source`; one sent by ttmd never does. UNAVAILABLE from ttmd
    // means its tree cannot be written, from tonic that ttmd went away.
    if std::error::Error::source(status).is_some() {
        let mut failure = Failure::new(
            Exit::Unreachable,
            format!("lost the connection to ttmd: {}", error_chain(status)),
        );
        failure.resumable = true;
        return failure;
    }
    // A daemon serving another tree is, for this call, no daemon at all.
    if status
        .metadata()
        .get(ttm_proto::headers::ERROR)
        .is_some_and(|v| v == ttm_proto::headers::WRONG_TREE)
    {
        return Failure::new(Exit::Unreachable, status_message(status));
    }
    // Busy and a wait that ran out share their codes with other causes;
    // the daemon's marker picks their own exit codes (SPEC §17).
    let marker = status.metadata().get(ttm_proto::headers::ERROR);
    if marker.is_some_and(|v| v == ttm_proto::headers::LEASE_BUSY) {
        return Failure::new(Exit::Busy, status_message(status));
    }
    if marker.is_some_and(|v| v == ttm_proto::headers::WAIT_TIMEOUT) {
        return Failure::new(Exit::WaitTimedOut, status_message(status));
    }
    if marker.is_some_and(|v| v == ttm_proto::headers::NO_COORDINATION) {
        return Failure::new(Exit::NoCoordination, status_message(status));
    }
    let mut failure = Failure::new(exit_for(status.code()), status_message(status));
    failure.unimplemented = status.code() == Code::Unimplemented;
    failure.resumable = crate::commands::follow::restart_explains(status);
    failure
}

/// The daemon's message, or the code's description when it sent none.
fn status_message(status: &Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    }
}

/// `err: cause: cause…` on one line, without repeats and without tonic's
/// uninformative "transport error" layers.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(current) = next {
        let text = match current.downcast_ref::<Status>() {
            Some(status) => status.message().to_owned(),
            None => current.to_string(),
        };
        if !text.is_empty() && text != "transport error" && !parts.contains(&text) {
            parts.push(text);
        }
        next = current.source();
    }
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn daemon_codes_map_to_the_documented_exit_codes() {
        let table = [
            (Code::InvalidArgument, 2),
            (Code::NotFound, 3),
            (Code::FailedPrecondition, 4),
            (Code::Aborted, 5),
            (Code::PermissionDenied, 6),
            (Code::Unimplemented, 7),
            (Code::ResourceExhausted, 8),
            (Code::Unavailable, 8),
            (Code::Internal, 1),
            (Code::Unknown, 1),
        ];
        for (code, exit) in table {
            let failure = from_status(&Status::new(code, "msg"));
            assert_eq!(failure.exit.code(), exit, "{code:?}");
            assert_eq!(failure.message, "msg");
        }
    }

    #[test]
    fn no_coordination_is_exit_12_not_storage() {
        let mut status = Status::unavailable("etcd is unreachable");
        status.metadata_mut().insert(
            ttm_proto::headers::ERROR,
            tonic::metadata::MetadataValue::from_static(ttm_proto::headers::NO_COORDINATION),
        );
        let failure = from_status(&status);
        assert_eq!(failure.exit.code(), 12);
        assert!(!failure.resumable);
        assert_eq!(failure.message, "etcd is unreachable");
    }

    #[test]
    fn transport_failures_are_unreachable_not_storage() {
        let mut status = Status::unavailable("connection reset");
        status.set_source(Arc::new(io::Error::from(io::ErrorKind::ConnectionReset)));
        let failure = from_status(&status);
        assert_eq!(failure.exit, Exit::Unreachable);
        assert!(failure.message.contains("connection reset"));
    }

    #[test]
    fn empty_message_falls_back_to_the_code() {
        let failure = from_status(&Status::new(Code::NotFound, ""));
        assert!(!failure.message.is_empty());
    }

    #[test]
    fn unimplemented_is_flagged_for_the_version_hint() {
        assert!(from_status(&Status::unimplemented("")).unimplemented);
        assert!(!from_status(&Status::not_found("x")).unimplemented);
    }

    #[test]
    fn broken_pipe_is_a_quiet_success() {
        let failure = Failure::stdout(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(failure.exit, Exit::Success);
        assert!(failure.message.is_empty());
        let failure = Failure::stdout(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(failure.exit, Exit::Other);
    }

    #[test]
    fn usage_errors_become_one_line_with_the_usage() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::cli::Cli::try_parse_from(std::iter::once("ttmctl").chain(args.iter().copied()))
        };
        let Err(err) = parse(&["transition"]) else {
            panic!("parsed");
        };
        let Some(line) = usage_error(&err) else {
            panic!("no message");
        };
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<STAGE>"), "{line}");
        assert!(line.contains("usage: ttmctl transition"), "{line}");
        let Err(err) = parse(&["frobnicate"]) else {
            panic!("parsed");
        };
        let line = usage_error(&err).unwrap_or_default();
        assert!(
            line.contains("frobnicate") && !line.contains('\n'),
            "{line}"
        );
        let Err(err) = parse(&["--help"]) else {
            panic!("parsed");
        };
        assert!(usage_error(&err).is_none());
    }

    #[test]
    fn messages_are_printed_on_one_line_without_escapes() {
        assert_eq!(one_line("a\nb\n"), "a; b");
        assert_eq!(one_line("red \u{1b}[31mx"), "red ?[31mx");
    }

    #[test]
    fn help_lists_every_code() {
        for code in 0..=9 {
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {code}  ")));
        }
    }
}
