//! Parsing tests of the command line (kept apart: cli.rs is the definitions).

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ttmctl").chain(args.iter().copied()))
}

#[test]
fn definitions_are_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let Ok(cli) = parse(&["state", "--json", "-m", "rag", "--socket", "/s"]) else {
        panic!("parse failed");
    };
    assert!(cli.global.json);
    assert_eq!(cli.global.module, "rag");
    assert_eq!(cli.global.socket, Some(PathBuf::from("/s")));
}

#[test]
fn fail_message_defaults_and_flags_are_not_swallowed() {
    let Ok(Cli {
        command:
            Command::Fail {
                message,
                txn,
                guards,
                ..
            },
        ..
    }) = parse(&["fail", "-t", "x-1", "--expect-stage", "EXECUTE"])
    else {
        panic!("parse failed");
    };
    assert_eq!(message, "failed");
    assert_eq!(txn.id(), "x-1");
    assert_eq!(guards.expect_stage.as_deref(), Some("EXECUTE"));

    let Ok(Cli {
        command: Command::Fail { message, .. },
        ..
    }) = parse(&["fail", "--", "-1 errors"])
    else {
        panic!("parse failed");
    };
    assert_eq!(message, "-1 errors");
}

#[test]
fn dash_is_a_value_for_update_and_ctx_add() {
    assert!(matches!(
        parse(&["update", "-"]),
        Ok(Cli { command: Command::Update { ref patch, .. }, .. }) if patch == "-"
    ));
    assert!(matches!(
        parse(&["ctx", "add", "-", "the log"]),
        Ok(Cli { command: Command::Ctx(CtxCommand::Add { ref file, .. }), .. })
            if file.as_os_str() == "-"
    ));
}

#[test]
fn guards_parse_and_reject_a_non_numeric_seq() {
    let Ok(Cli {
        command: Command::Transition { stage, guards, .. },
        ..
    }) = parse(&[
        "transition",
        "EXECUTE",
        "--expect-seq",
        "7",
        "--request-id",
        "r1",
    ])
    else {
        panic!("parse failed");
    };
    assert_eq!(stage, "EXECUTE");
    assert_eq!(guards.expect_seq, Some(7));
    assert_eq!(guards.request_id.as_deref(), Some("r1"));
    assert!(parse(&["transition", "X", "--expect-seq", "seven"]).is_err());
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["nope"][..], &["transition"], &["create"], &[]] {
        let Err(err) = parse(args) else {
            panic!("{args:?} parsed");
        };
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn event_json_is_optional() {
    assert!(matches!(
        parse(&["event", "progress"]),
        Ok(Cli {
            command: Command::Event { data: None, .. },
            ..
        })
    ));
    assert!(matches!(
        parse(&["event", "progress", r#"{"pct":50}"#, "-t", "a-1"]),
        Ok(Cli {
            command: Command::Event { data: Some(_), .. },
            ..
        })
    ));
}

#[test]
fn description_may_start_with_a_hyphen() {
    assert!(matches!(
        parse(&["create", "-v2 rollout", "--target", "@prod"]),
        Ok(Cli { command: Command::Create { ref description, ref target, .. }, .. })
            if description == "-v2 rollout" && target == "@prod"
    ));
}

#[test]
fn an_empty_id_or_request_id_is_refused_not_taken_as_absent() {
    for args in [
        &["commit", "-t", ""][..],
        &["commit", "--txn="][..],
        &["event", "x", "--request-id", ""][..],
        &["create", "d", "--request-id", ""][..],
    ] {
        let Err(err) = parse(args) else {
            panic!("{args:?} was accepted");
        };
        assert!(err.to_string().contains("empty"), "{args:?}: {err}");
    }
    let Ok(Cli {
        command: Command::Commit { txn, .. },
        ..
    }) = parse(&["commit"])
    else {
        panic!("parse failed");
    };
    assert_eq!(txn.id(), "");
}

/// Subcommands are built lazily (`defer`); building one must not change
/// what its help says about it (a flattened struct's doc comment would).
#[test]
fn a_deferred_subcommand_keeps_its_about() {
    use clap::{Command, CommandFactory};
    fn texts(cmd: &Command) -> (Option<String>, Option<String>) {
        (
            cmd.get_about().map(ToString::to_string),
            cmd.get_long_about().map(ToString::to_string),
        )
    }
    // `lazy` is built itself, its subcommands not; `built` wholly.
    fn check(lazy: &Command, built: &Command) {
        for sub in lazy.get_subcommands() {
            let Some(done) = built.find_subcommand(sub.get_name()) else {
                panic!("{} is missing from the built tree", sub.get_name());
            };
            assert_eq!(texts(done), texts(sub), "about of {}", sub.get_name());
            if done.has_subcommands() {
                let mut parent = sub.clone();
                // Builds `parent` alone, so its own subcommands stay lazy.
                let _ = parent.render_help();
                check(&parent, done);
            }
        }
    }
    let mut built = Cli::command();
    built.build();
    check(&Cli::command(), &built);
}
