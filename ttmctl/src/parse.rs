//! Parsing the command line at start-up, where most of a one-shot call's
//! time goes: clap over a tree holding only the invoked subcommand when
//! that parses, else over the whole tree, whose errors, help and version
//! output are the ones users see.

use std::ffi::OsString;

use clap::{Args, CommandFactory, FromArgMatches, Subcommand};

use crate::cli::{self, Cli, Global};

/// `Cli::try_parse`, cheaper on a line that parses.
pub fn parse() -> Result<Cli, clap::Error> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match lean(&args) {
        Some(cli) => Ok(cli),
        None => full(args),
    }
}

/// `Cli::try_parse_from`, except that the command tree is not freed:
/// freeing it took as long as parsing (the process exits soon anyway).
fn full(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let parsed = match command.try_get_matches_from_mut(args) {
        // What `try_parse` does with such an error: format it for the tree.
        Ok(mut matches) => {
            Cli::from_arg_matches_mut(&mut matches).map_err(|err| err.format(&mut Cli::command()))
        }
        Err(err) => Err(err),
    };
    std::mem::forget(command);
    parsed
}

/// The parse over a tree of the global flags and the invoked subcommand
/// alone; `None` when that fails for any reason (the whole tree then
/// parses again and says why). The whole tree would clone the global flags
/// into each of its ~45 subcommands; this one clones them into one. Its
/// success is the whole tree's: the subcommand and the global flags are
/// the same definitions, and what only the top of the whole tree has
/// (`--version`, `help`, the requirement of a subcommand) never lets a
/// line through that `subcommand_name` passes here.
pub(crate) fn lean(args: &[OsString]) -> Option<Cli> {
    let name = subcommand_name(args)?;
    let all = cli::Command::augment_subcommands(clap::Command::new("ttmctl"));
    let sub = all.find_subcommand(&name)?.clone();
    let mut command = Global::augment_args(clap::Command::new("ttmctl"))
        .subcommand(sub)
        .subcommand_required(true);
    let parsed = command
        .try_get_matches_from_mut(args)
        .ok()
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches).ok());
    std::mem::forget((command, all));
    parsed
}

/// The first word that is neither a global flag nor its value; `None`
/// when a line holds anything else before it (help, version, a short
/// flag with its value attached, `--`), or names `help`: the whole tree
/// judges those.
fn subcommand_name(args: &[OsString]) -> Option<String> {
    const VALUED: [&str; 5] = ["-m", "--module", "--socket", "--color", "--rpc-timeout"];
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        if word == "--json" {
            continue;
        }
        if VALUED.contains(&word) {
            words.next()?;
            continue;
        }
        let attached = word
            .split_once('=')
            .is_some_and(|(flag, _)| flag.starts_with("--") && VALUED.contains(&flag));
        if attached {
            continue;
        }
        if word.starts_with('-') || word == "help" {
            return None;
        }
        return Some(word.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        std::iter::once("ttmctl")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// What the whole tree makes of `words`, for comparison.
    fn whole(words: &[&str]) -> Result<String, String> {
        full(line(words))
            .map(|cli| format!("{cli:?}"))
            .map_err(|err| err.to_string())
    }

    /// Lines the hot commands are called with, and lines around the edges
    /// of `subcommand_name`.
    const LINES: &[&[&str]] = &[
        &["event", "bench"],
        &[
            "event",
            "deploy",
            "{\"a\":1}",
            "-t",
            "x-1",
            "--expect-seq",
            "4",
        ],
        &[
            "--json",
            "event",
            "x",
            "--fence",
            "@db=3",
            "--request-id",
            "r",
        ],
        &["transition", "EXECUTE"],
        &[
            "transition",
            "SELECT",
            "--print-move",
            "--expect-stage",
            "NEW",
        ],
        &["-m", "rag", "transition", "--json", "VALIDATE", "-t", "a-1"],
        &["--module=rag", "--color=never", "commit", "--print-move"],
        &["commit", "--json", "--print-move"],
        &["fail", "broken", "--socket", "/s"],
        &["fail"],
        &["ctx", "add", "f.txt", "artifact"],
        &["ctx", "add", "-", "config", "-t", "x-1"],
        &["ctx", "list"],
        &["create", "Deploy API v2.1.0"],
        &[
            "create",
            "-x starts with a dash",
            "--lease",
            "@db",
            "--no-wait",
        ],
        &["create", "d", "--deadline", "2h", "--rpc-timeout", "0"],
        &["--rpc-timeout=5s", "status", "-t", "x-1"],
        &["status", "--follow", "--timeout", "3s"],
        &["daemon", "status"],
        &["lease", "acquire", "@db"],
        &["retry", "EXECUTE"],
        &["update", "{}"],
        &["list", "--stage", "DONE"],
        &["version"],
        &["event"],
        &["event", "--help"],
        &["event", "-h"],
        &["event", "x", "--bogus"],
        &["transition", "SELECT", "--json", "--print-move"],
        &["event", "x", "-t", ""],
        &["help", "event"],
        &["--help"],
        &["--version"],
        &["-V"],
        &[],
        &["bogus"],
        &["--json"],
        &["-m"],
        &["-mrag", "event", "x"],
        &["--", "event", "x"],
        &["--color", "sometimes", "event", "x"],
        &["--socket", "event", "commit"],
    ];

    #[test]
    fn the_lean_tree_parses_as_the_whole_tree_or_not_at_all() {
        for words in LINES {
            if let Some(cli) = lean(&line(words)) {
                assert_eq!(Ok(format!("{cli:?}")), whole(words), "{words:?}");
            }
        }
    }

    #[test]
    fn hot_commands_take_the_lean_tree() {
        for words in [
            &["event", "bench"][..],
            &["transition", "SELECT", "--print-move"],
            &["--json", "commit"],
            &["fail", "broken"],
            &["ctx", "add", "f.txt", "artifact"],
            &["create", "Deploy API v2.1.0"],
            &["status"],
            &["-m", "rag", "--socket=/s", "event", "x"],
        ] {
            assert!(lean(&line(words)).is_some(), "{words:?}");
        }
    }
}
