//! The table shown to people: `--print-config` and the README's block of
//! settings, which a test keeps equal to [`readme_block`].

use std::fmt::Write as _;

use super::settings::{Reload, SECTIONS, SETTINGS, Setting};
use super::{Config, Source};

/// The lines around the README's generated block.
pub const README_BEGIN: &str = "<!-- settings: begin; generated from ttmd/src/config/settings.rs, \
                                `UPDATE_README=1 cargo test -p ttmd readme` rewrites it -->";
pub const README_END: &str = "<!-- settings: end -->";

impl Config {
    /// The effective settings and where each came from, one per line.
    pub fn describe(&self) -> String {
        let src = |k: &str| {
            self.sources
                .get(k)
                .map(Source::to_string)
                .unwrap_or_else(|| "default".into())
        };
        let mut out = String::new();
        let mut line = |k: &str, v: &str, s: &str| {
            let _ = writeln!(out, "{k:<20} {v:<44} ({s})");
        };
        line("root", &self.root.display().to_string(), &src("root"));
        for s in SETTINGS {
            for (key, value) in (s.ops.lines)(self, s.key) {
                line(&key, &value, &src(s.key));
            }
        }
        let file = self.config_file.as_ref().map(|p| p.display().to_string());
        line("config_file", file.as_deref().unwrap_or("(none)"), "");
        out
    }
}

/// The README's settings block, markers excluded: a sample `ttmd.toml`
/// naming each key's flag and variable, then what a reload re-reads.
pub fn readme_block() -> String {
    let mut out = String::from("```toml\n# $TETRA_DIR/ttmd.toml — every key optional\n");
    let mut section = "";
    for s in SETTINGS {
        let (sect, leaf) = s.key.split_once('.').unwrap_or(("", s.key));
        if s.ops.table {
            out.push('\n');
            sample_line(&mut out, &format!("[{}]", s.key), &flags(s));
            sample_line(&mut out, s.example, "");
            continue;
        }
        if sect != section {
            section = sect;
            let note = SECTIONS.iter().find(|(n, _)| *n == sect).map(|(_, c)| *c);
            out.push('\n');
            sample_line(&mut out, &format!("[{sect}]"), note.unwrap_or(""));
        }
        sample_line(&mut out, &format!("{leaf} = {}", s.example), &flags(s));
    }
    out.push_str("```\n\n");
    let layering = format!(
        "A flag or environment variable replaces the file's value, lists and \
         `[modules]` included (they are never merged), at start and after a \
         reload. A reload (SIGHUP, `ttmctl daemon reload`) applies {} from the \
         file; {} take effect at the next start.",
        keys(Reload::Live),
        keys(Reload::Restart)
    );
    out.push_str(&wrap(&layering, 76));
    out
}

/// `text` as lines of at most `width` characters, as the README is written.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn flags(s: &Setting) -> String {
    let flags = format!("--{}, {}", s.flag, s.env);
    if s.note.is_empty() {
        flags
    } else {
        format!("{flags} {}", s.note)
    }
}

fn sample_line(out: &mut String, text: &str, comment: &str) {
    let line = if comment.is_empty() {
        text.to_string()
    } else {
        format!("{text:<35} # {comment}")
    };
    let _ = writeln!(out, "{}", line.trim_end());
}

/// The keys reloaded as `reload` says, a section whose keys all agree as
/// `section.*`.
fn keys(reload: Reload) -> String {
    let mut names: Vec<String> = Vec::new();
    for s in SETTINGS.iter().filter(|s| s.reload == reload) {
        let name = match s.key.split_once('.') {
            Some((sect, _)) if whole_section(sect, reload) => format!("`{sect}.*`"),
            _ => format!("`{}`", s.key),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

fn whole_section(sect: &str, reload: Reload) -> bool {
    SETTINGS
        .iter()
        .filter(|s| s.key.split_once('.').is_some_and(|(x, _)| x == sect))
        .all(|s| s.reload == reload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when a row was added or changed without the README following.
    #[test]
    fn readme_settings_block_matches_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, rest) = text
            .split_once(&format!("{README_BEGIN}\n"))
            .unwrap_or_else(|| panic!("README.md lacks the line {README_BEGIN}"));
        let (current, tail) = rest
            .split_once(README_END)
            .unwrap_or_else(|| panic!("README.md lacks the line {README_END}"));
        let want = readme_block();
        if current == want {
            return;
        }
        if std::env::var_os("UPDATE_README").is_some() {
            let new = format!("{head}{README_BEGIN}\n{want}{README_END}{tail}");
            std::fs::write(&path, new).unwrap();
            return;
        }
        panic!(
            "README.md's settings block disagrees with the table in \
             ttmd/src/config/settings.rs.\nRegenerate it with: \
             UPDATE_README=1 cargo test -p ttmd readme\n\n--- README.md has:\n{current}\n\
             --- the table says:\n{want}"
        );
    }

    #[test]
    fn print_config_names_every_setting_and_its_source() {
        let mut c = Config::new("/r".into(), "/s".into());
        c.set("modules", "rag=/srv/rag").unwrap();
        c.sources.insert("limits.payload", Source::Flag);
        let text = c.describe();
        for s in SETTINGS {
            assert!(text.contains(s.key), "{} missing:\n{text}", s.key);
        }
        assert!(text.contains("modules.rag          /srv/rag"), "{text}");
        let payload = text.lines().find(|l| l.starts_with("limits.payload"));
        assert!(payload.is_some_and(|l| l.ends_with("(flag)")), "{text}");
        assert!(text.lines().next().is_some_and(|l| l.starts_with("root ")));
    }
}
