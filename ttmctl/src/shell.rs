//! Shell quoting for output meant for `eval` (`ttmctl ctx env`).
//!
//! Paths come from the daemon but their names from users, so a file called
//! `$(rm -rf ~)` must come out inert. Inside single quotes a POSIX shell
//! interprets nothing at all, so the only character needing care is `'`
//! itself, written as `'\''` (close, escaped quote, reopen).

/// `value` as one single-quoted shell word.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `value` as it would be typed: bare when it is plainly safe, else quoted.
/// For hints shown to people, where `'my file'` reads better than quoting
/// every word.
pub fn word(value: &str) -> String {
    let plain = !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | ',' | ':' | '@')
        });
    if plain {
        value.to_owned()
    } else {
        quote(value)
    }
}

/// `name=<quoted value>`; `name` must be a valid shell identifier, which the
/// callers guarantee by building it from fixed text and numbers.
pub fn assignment(name: &str, value: &str) -> String {
    format!("{name}={}", quote(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HOSTILE: &[&str] = &[
        "",
        "plain",
        "with space",
        "it's",
        "''",
        "'\\''",
        "$HOME",
        "${HOME}",
        "$(touch /tmp/ttmctl-pwned)",
        "`touch /tmp/ttmctl-pwned`",
        "a\nb\n",
        "tab\there",
        "back\\slash\\",
        "semi;colon && or || pipe | amp &",
        "glob * ? [a-z]",
        "!history",
        "\"double\"",
        "~user",
        "#comment",
        "unicode: é ✓ 日本",
        "/tmp/dir with 'quotes' and $vars/100_x.tar.gz",
    ];

    #[test]
    fn quote_wraps_and_escapes_single_quotes() {
        assert_eq!(quote("abc"), "'abc'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(assignment("e1", "/a b"), "e1='/a b'");
        assert_eq!(word("dir.tar.gz"), "dir.tar.gz");
        assert_eq!(word("my dir"), "'my dir'");
        assert_eq!(word(""), "''");
    }

    /// Reads `quoted` as a shell would: single-quoted runs joined by `\'`,
    /// and nothing else outside quotes.
    fn unquote(quoted: &str) -> Option<String> {
        let mut value = String::new();
        let mut inside = false;
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match (inside, c) {
                (true, '\'') => inside = false,
                (true, c) => value.push(c),
                (false, '\'') => inside = true,
                (false, '\\') if chars.next() == Some('\'') => value.push('\''),
                (false, _) => return None,
            }
        }
        (!inside).then_some(value)
    }

    #[test]
    fn quoted_output_has_no_unquoted_specials() {
        for value in HOSTILE {
            let quoted = quote(value);
            assert_eq!(unquote(&quoted).as_deref(), Some(*value), "{quoted}");
        }
    }

    /// Runs the assignments through a real `eval` when bash exists.
    #[test]
    fn bash_eval_round_trips_hostile_values() {
        if Command::new("bash").arg("-c").arg("true").status().is_err() {
            return;
        }
        for value in HOSTILE {
            let script = format!("{}\ne_count=1\n", assignment("e1", value));
            let output = Command::new("bash")
                .arg("-c")
                .arg(r#"eval "$x"; printf %s "$e1""#)
                .env("x", &script)
                .output();
            let Ok(output) = output else {
                panic!("bash did not run");
            };
            assert!(output.status.success(), "{value:?}");
            assert_eq!(String::from_utf8_lossy(&output.stdout), *value);
        }
        assert!(!std::path::Path::new("/tmp/ttmctl-pwned").exists());
    }
}
