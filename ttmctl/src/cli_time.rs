//! `create`'s time flags (SPEC §14): clap definitions, no behaviour.

use super::parse_duration_ms;

// Time bounds of a new transaction (SPEC §14); a plain comment, as on
// `TxnArg`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TimeArgs {
    /// Must be finished by then: a duration from now (2h, 30m, 1d) or an
    /// RFC 3339 time (`date -d 06:00 --iso-8601=seconds`). Passing it logs
    /// txn_overdue (once).
    #[arg(long, value_name = "D")]
    pub deadline: Option<String>,
    /// What passing --deadline also does: `note` (nothing more, the
    /// default) or `fail` (move the transaction to FAIL).
    #[arg(long, value_name = "POLICY", value_parser = ["note", "fail"], requires = "deadline")]
    pub on_deadline: Option<String>,
    /// Longest silence allowed: no change and no `ttmctl heartbeat` for this
    /// long logs txn_stalled (once), life afterwards txn_resumed.
    #[arg(long, value_name = "P", value_parser = parse_positive_ms)]
    pub heartbeat: Option<u64>,
}

/// A period longer than zero, in milliseconds.
fn parse_positive_ms(text: &str) -> Result<u64, String> {
    match parse_duration_ms(text)? {
        0 => Err(format!(
            "{text:?} is no period: give one longer than 0, like 5m"
        )),
        ms => Ok(ms),
    }
}
