//! Names: transaction ids (SPEC §2), module names, and the slug rule shared
//! by ids and ctx file names. Validation happens here, before any path is
//! built from a name, so nothing malformed ever reaches the file system.

use chrono::{DateTime, Utc};

use super::{Error, Result};

/// Longest slug taken from a description.
pub const SLUG_MAX: usize = 30;
/// Longest transaction id accepted (`[a-z0-9][a-z0-9-]{0,127}`).
pub const TXN_ID_MAX: usize = 128;
/// Longest module name accepted (`[a-z0-9][a-z0-9_-]{0,31}`).
pub const MODULE_MAX: usize = 32;
/// The module used when a request names none.
pub const DEFAULT_MODULE: &str = "ttm";

/// Lower-cases `text`, turns every run of characters outside `[a-z0-9]` into
/// one `-`, cuts to `max` characters and trims `-` from both ends.
/// Returns an empty string when nothing is left.
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 1));
    let mut pending_dash = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !out.is_empty() {
                out.push('-');
                if out.len() >= max {
                    break;
                }
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The id for a transaction described by `description`, created at `now`:
/// `<slug>-<YYYYMMDDTHHMMSS>`, with `-<n>` appended for the n-th (n ≥ 2)
/// creation with the same slug in the same second.
pub fn txn_id(description: &str, now: DateTime<Utc>, n: u32) -> String {
    let mut base = slug(description, SLUG_MAX);
    if base.is_empty() {
        base.push_str("txn");
    }
    let stamp = now.format("%Y%m%dT%H%M%S");
    if n <= 1 {
        format!("{base}-{stamp}")
    } else {
        format!("{base}-{stamp}-{n}")
    }
}

/// Checks a transaction id against `[a-z0-9][a-z0-9-]{0,127}`, widened by
/// one letter: the upper-case `T` that SPEC §2's own id format puts between
/// date and time (`deploy-20251017T143022`). Any other upper case is refused.
pub fn validate_txn_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= TXN_ID_MAX
        && id.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'T'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid transaction id {}: ids are 1-{TXN_ID_MAX} characters of a-z, 0-9 and '-', \
             starting with a letter or digit",
            quote(id)
        )))
    }
}

/// Checks a module name against `[a-z0-9][a-z0-9_-]{0,31}`.
pub fn validate_module(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MODULE_MAX
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid module name {}: modules are 1-{MODULE_MAX} characters of a-z, 0-9, '_' \
             and '-', starting with a letter or digit",
            quote(name)
        )))
    }
}

/// Quotes user text for an error message: JSON-escaped and cut, so control
/// characters and huge inputs cannot garble the message.
pub fn quote(text: &str) -> String {
    const MAX: usize = 80;
    let cut: String = text.chars().take(MAX).collect();
    let mut q = serde_json::Value::String(cut).to_string();
    if text.chars().count() > MAX {
        q.push('…');
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn slugs() {
        let cases = [
            ("Deploy API v2.1.0", "deploy-api-v2-1-0"),
            ("  --Hello,   World!! ", "hello-world"),
            ("ÜBER straße", "ber-stra-e"),
            ("", ""),
            ("!!!", ""),
            ("a/../b", "a-b"),
            (
                "abcdefghijklmnopqrstuvwxyz0123456789",
                "abcdefghijklmnopqrstuvwxyz0123",
            ),
            (
                "abcdefghijklmnopqrstuvwxyz012 456",
                "abcdefghijklmnopqrstuvwxyz012",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(slug(input, SLUG_MAX), want, "slug({input:?})");
        }
    }

    #[test]
    fn ids() {
        let now = Utc.with_ymd_and_hms(2025, 10, 17, 14, 30, 22).unwrap();
        assert_eq!(
            txn_id("Deploy API v2.1.0", now, 1),
            "deploy-api-v2-1-0-20251017T143022"
        );
        assert_eq!(txn_id("", now, 1), "txn-20251017T143022");
        assert_eq!(txn_id("x", now, 3), "x-20251017T143022-3");
        for n in 1..4 {
            validate_txn_id(&txn_id("Deploy", now, n)).unwrap();
        }
    }

    #[test]
    fn txn_id_validation() {
        for good in ["a", "0", "deploy-20251017T143022-2", &"a".repeat(128)] {
            assert!(validate_txn_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "T1",
            "..",
            "a/b",
            "a\0b",
            "A",
            "aB",
            "a_b",
            "a b",
            &"a".repeat(129),
        ] {
            assert!(validate_txn_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn module_validation() {
        for good in ["ttm", "rag", "my_mod-2", &"m".repeat(32)] {
            assert!(validate_module(good).is_ok(), "{good}");
        }
        for bad in ["", "_x", "-x", "..", "a/b", "Ttm", "a.b", &"m".repeat(33)] {
            assert!(validate_module(bad).is_err(), "{bad:?}");
        }
    }
}
