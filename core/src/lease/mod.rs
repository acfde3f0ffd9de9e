//! Leases (SPEC §13): exclusive use of a named resource by one live
//! transaction. What a transaction holds and awaits is folded from its own
//! log (`lease_*` events) into [`Leases`]; who is next, whether a token is
//! current and when a holder lapses are pure functions here ([`table`]),
//! so the rules are table-tested without a clock or a daemon.

pub mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{MODULE_MAX, quote};
use crate::{Error, Result};

pub use table::{Holder, Table, TxnKey, Waiter};

/// A lease's time to live when the caller names none (SPEC §13).
pub const DEFAULT_TTL_MS: u64 = 60_000;

/// Shortest and longest TTL accepted: shorter lapses between two
/// heartbeats of any real script; longer outlives the point of a TTL.
pub const MIN_TTL_MS: u64 = 100;
pub const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Most fences one mutation may state.
pub const MAX_FENCES: usize = 16;

/// One lease a transaction holds: its fencing token and TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub token: u64,
    pub ttl_ms: u64,
    /// When it was granted (RFC 3339, the event's `ts`).
    pub since: String,
}

/// One lease a transaction waits for: its place (ticket) in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaited {
    pub ticket: u64,
    pub ttl_ms: u64,
    pub since: String,
}

/// The leases of one transaction, as its log says. Kept in `state.json`
/// (under `leases`, only while there are some) so `cat` shows them too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, Held>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub awaited: BTreeMap<String, Awaited>,
}

impl Leases {
    /// No lease held or awaited.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.awaited.is_empty()
    }
}

/// Checks a lease name: a target (`@prod`) or a name that passes the
/// module-name rules, so it is safe as a file name, an env-var suffix and
/// an etcd key segment.
pub fn validate_name(name: &str) -> Result<()> {
    let bare = name.strip_prefix('@').unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= MODULE_MAX
        && bare.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid lease name {}: use a target like @prod or a name of 1-{MODULE_MAX} \
             characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
            quote(name)
        )))
    }
}

/// Checks a TTL asked for (0 means the default).
pub fn ttl_or_default(ttl_ms: u64) -> Result<u64> {
    match ttl_ms {
        0 => Ok(DEFAULT_TTL_MS),
        t if (MIN_TTL_MS..=MAX_TTL_MS).contains(&t) => Ok(t),
        t => Err(Error::invalid(format!(
            "lease TTL of {t} ms is out of range: use {MIN_TTL_MS} ms to {} days",
            MAX_TTL_MS / 86_400_000
        ))),
    }
}

/// The variable `ctx env` exports a lease's token in:
/// `TTM_FENCE_<NAME>`, upper-cased, anything not alphanumeric as `_`.
pub fn fence_env_name(name: &str) -> String {
    let bare = name.strip_prefix('@').unwrap_or(name);
    let tail: String = bare
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TTM_FENCE_{tail}")
}

/// Parses `NAME=TOKEN`, the form `--fence` takes.
pub fn parse_fence(text: &str) -> Result<(String, u64)> {
    let bad = || {
        Error::invalid(format!(
            "invalid fence {}: write NAME=TOKEN, e.g. @prod=42 (the token is in \
             `ttmctl ctx env` as TTM_FENCE_<NAME>)",
            quote(text)
        ))
    };
    let (name, token) = text.rsplit_once('=').ok_or_else(bad)?;
    validate_name(name)?;
    let token = token.parse::<u64>().map_err(|_| bad())?;
    Ok((name.to_string(), token))
}

/// Refuses a mutation whose fences are not all current: each named lease
/// must still be held by this transaction with exactly that token. A holder
/// that lapsed (or released, or was superseded) learns so here instead of
/// writing over its successor's work.
pub fn check_fences(txn_id: &str, leases: &Leases, fences: &[(String, u64)]) -> Result<()> {
    if fences.len() > MAX_FENCES {
        return Err(Error::invalid(format!(
            "{} fences stated; at most {MAX_FENCES} per mutation",
            fences.len()
        )));
    }
    for (name, token) in fences {
        match leases.held.get(name) {
            Some(h) if h.token == *token => {}
            Some(h) => {
                return Err(Error::Fenced(format!(
                    "fence {name}={token} is stale: transaction {txn_id} holds {name} with \
                     token {} now; nothing was changed",
                    h.token
                )));
            }
            None => {
                return Err(Error::Fenced(format!(
                    "fence {name}={token} is not current: transaction {txn_id} no longer \
                     holds {name} (released, expired after its TTL, or never granted); \
                     nothing was changed — acquire it again before writing"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
