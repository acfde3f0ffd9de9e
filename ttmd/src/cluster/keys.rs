//! The etcd key layout of cluster mode (SPEC §16), in one place.
//!
//! ```text
//! /ttm/v1/host/<host-id>                    who is alive (on the daemon's etcd lease)
//! /ttm/v1/<module>/state/<txn>              state.json plus "home"
//! /ttm/v1/<module>/ev/<txn>/<seq:012>       one log line, verbatim
//! /ttm/v1/<module>/ctx/<txn>/<name>         size and sha256 of an evidence file
//! /ttm/v1/<module>/lease/<name>             a lease's holder and token
//! ```
//!
//! `host/` shares the level of module names: a module named `host` is
//! told apart because a host key has one segment after `host/` and a
//! module's keys have two or more.

/// The root of every key.
pub const ROOT: &str = "/ttm/v1/";

/// Digits of a zero-padded seq: key order is seq order up to 10^12 lines.
pub const SEQ_DIGITS: usize = 12;

/// `/ttm/v1/host/`: the hosts' prefix.
pub fn hosts() -> String {
    format!("{ROOT}host/")
}

/// `/ttm/v1/host/<id>`.
pub fn host(id: &str) -> String {
    format!("{ROOT}host/{id}")
}

/// The host id of a key under [`hosts`], or `None` for another key (a
/// module named `host`).
pub fn host_of(key: &[u8]) -> Option<&str> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(ROOT)?;
    let id = rest.strip_prefix("host/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `/ttm/v1/<module>/`: everything of a module.
pub fn module(module: &str) -> String {
    format!("{ROOT}{module}/")
}

/// `/ttm/v1/<module>/state/`: the states of a module's transactions.
pub fn states(module: &str) -> String {
    format!("{ROOT}{module}/state/")
}

/// `/ttm/v1/<module>/state/<txn>`.
pub fn state(module: &str, txn: &str) -> String {
    format!("{ROOT}{module}/state/{txn}")
}

/// `/ttm/v1/<module>/ev/<txn>/`: a transaction's log.
pub fn events(module: &str, txn: &str) -> String {
    format!("{ROOT}{module}/ev/{txn}/")
}

/// `/ttm/v1/<module>/ev/<txn>/<seq, zero-padded>`.
pub fn event(module: &str, txn: &str, seq: u64) -> String {
    format!("{ROOT}{module}/ev/{txn}/{seq:0width$}", width = SEQ_DIGITS)
}

/// The key of line `seq` under an [`events`] prefix.
pub fn event_in(prefix: &str, seq: u64) -> String {
    format!("{prefix}{seq:0width$}", width = SEQ_DIGITS)
}

/// The seq of an event key, or `None` for another key.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let key = std::str::from_utf8(key).ok()?;
    let (_, seq) = key.rsplit_once('/')?;
    (seq.len() == SEQ_DIGITS)
        .then(|| seq.parse().ok())
        .flatten()
}

/// `/ttm/v1/<module>/ctx/<txn>/`: a transaction's evidence.
pub fn ctxs(module: &str, txn: &str) -> String {
    format!("{ROOT}{module}/ctx/{txn}/")
}

/// `/ttm/v1/<module>/ctx/<txn>/<name>`.
pub fn ctx(module: &str, txn: &str, name: &str) -> String {
    format!("{ROOT}{module}/ctx/{txn}/{name}")
}

/// `/ttm/v1/<module>/lease/<name>`.
pub fn lease(module: &str, name: &str) -> String {
    format!("{ROOT}{module}/lease/{name}")
}

/// The last segment of `key` (a txn id under [`states`]).
pub fn last_segment(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()?.rsplit('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_laid_out_as_spec_16_says() {
        assert_eq!(host("a"), "/ttm/v1/host/a");
        assert_eq!(state("ttm", "t-1"), "/ttm/v1/ttm/state/t-1");
        assert_eq!(event("ttm", "t-1", 7), "/ttm/v1/ttm/ev/t-1/000000000007");
        assert_eq!(
            ctx("ttm", "t-1", "100_a.txt"),
            "/ttm/v1/ttm/ctx/t-1/100_a.txt"
        );
        assert_eq!(seq_of(event("m", "t", 42).as_bytes()), Some(42));
        assert_eq!(seq_of(b"/ttm/v1/m/ev/t/7"), None);
    }

    #[test]
    fn a_module_named_host_is_not_a_host() {
        assert_eq!(host_of(host("ci-1").as_bytes()), Some("ci-1"));
        assert_eq!(host_of(state("host", "t").as_bytes()), None);
        assert_eq!(host_of(b"/ttm/v1/ttm/state/x"), None);
    }
}
