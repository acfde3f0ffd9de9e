//! Help generated from the clap definitions: shell completions and man
//! pages; and the hidden `__txn-ids` that the completions call to offer
//! transaction ids after `-t`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::Shell;
use serde_json::json;
use ttm_proto::v1::ListRequest;

use super::Ctx;
use crate::cli::Cli;
use crate::connect;
use crate::exit::{EXIT_CODES_HELP, Failure};

/// The name completions and man pages are generated for.
const BIN: &str = "ttmctl";

/// Prints the completion script for `shell`. For bash, zsh and fish it also
/// completes transaction ids after `-t`/`--txn` (and for `activate`) by
/// running `ttmctl __txn-ids`, which never starts a daemon.
pub fn completions(ctx: &mut Ctx, shell: Shell) -> Result<(), Failure> {
    let script = completion_script(shell);
    ctx.out.line(&script)
}

/// The script for `shell`, as `completions` prints it.
pub fn completion_script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    let script = String::from_utf8_lossy(&buf).into_owned();
    match shell {
        Shell::Bash => format!("{script}\n{BASH_IDS}"),
        Shell::Zsh => zsh_with_ids(&script),
        Shell::Fish => format!("{script}\n{FISH_IDS}"),
        _ => script,
    }
}

/// Wraps clap's `_ttmctl` so that the word after `-t`/`--txn`, and the
/// argument of `activate`, complete to the module's transaction ids (the
/// module taken from `-m`/`--module` on the line, else TTM_MODULE).
const BASH_IDS: &str = r#"# Transaction ids after -t/--txn and for `activate` (from `ttmctl __txn-ids`).
_ttmctl_txn_ids() {
    local cmd=${COMP_WORDS[0]} module= i
    [[ $cmd == "~"/* ]] && cmd=$HOME/${cmd#"~/"}
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -m | --module) module=${COMP_WORDS[i + 1]} ;;
            --module=*) module=${COMP_WORDS[i]#--module=} ;;
        esac
    done
    "$cmd" ${module:+--module "$module"} __txn-ids 2>/dev/null
}
_ttmctl_with_ids() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} ids=0
    if [[ $prev == -t || $prev == --txn ]]; then
        ids=1
    elif [[ $prev == = && $COMP_CWORD -ge 2 && ${COMP_WORDS[COMP_CWORD - 2]} == --txn ]]; then
        ids=1
    elif [[ $prev == activate && $cur != -* ]]; then
        ids=1
    fi
    if ((ids)); then
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(_ttmctl_txn_ids)" -- "$cur"))
        return 0
    fi
    _ttmctl "$@"
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _ttmctl_with_ids -o nosort -o bashdefault -o default ttmctl
else
    complete -F _ttmctl_with_ids -o bashdefault -o default ttmctl
fi
"#;

/// The zsh helper, inserted before clap's final `compdef`.
const ZSH_IDS: &str = r#"(( $+functions[_ttmctl_txn_ids] )) ||
_ttmctl_txn_ids() {
    local -a ids module
    local i
    for (( i = 2; i < CURRENT; i++ )); do
        case ${words[i]} in
            -m|--module) module=(--module ${words[i+1]}) ;;
            --module=*) module=(--module ${words[i]#--module=}) ;;
        esac
    done
    ids=(${(f)"$(${words[1]} $module __txn-ids 2>/dev/null)"})
    _describe -t transactions 'transaction id' ids
}
"#;

/// clap's zsh script with the values of `-t`/`--txn` and `activate`'s id
/// completed by `_ttmctl_txn_ids`.
fn zsh_with_ids(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + ZSH_IDS.len());
    let mut inserted = false;
    for line in script.lines() {
        let trimmed = line.trim_start();
        let is_txn = trimmed.starts_with("'-t+[") || trimmed.starts_with("'--txn=[");
        let is_activate_id = trimmed.starts_with("':id -- Transaction id");
        let line = if is_txn || is_activate_id {
            line.replace(":_default'", ":_ttmctl_txn_ids'")
        } else {
            line.to_owned()
        };
        if !inserted && line.starts_with("if [ \"$funcstack[1]\" = \"_ttmctl\" ]") {
            out.push_str(ZSH_IDS);
            out.push('\n');
            inserted = true;
        }
        out.push_str(&line);
        out.push('\n');
    }
    if !inserted {
        out.push_str(ZSH_IDS);
    }
    out
}

/// fish: ids for `-t`/`--txn` wherever it is accepted, and for `activate`.
const FISH_IDS: &str = r#"# Transaction ids after -t/--txn and for `activate` (from `ttmctl __txn-ids`).
function __ttmctl_txn_ids
    set -l tokens (commandline -opc)
    set -l module
    for i in (seq 2 (count $tokens))
        switch $tokens[$i]
            case -m --module
                set -l next (math $i + 1)
                if test $next -le (count $tokens)
                    set module --module $tokens[$next]
                end
            case '--module=*'
                set module --module (string replace -- --module= '' $tokens[$i])
        end
    end
    $tokens[1] $module __txn-ids 2>/dev/null
end
complete -c ttmctl -s t -l txn -x -a '(__ttmctl_txn_ids)' -d 'Transaction id'
complete -c ttmctl -n '__fish_seen_subcommand_from activate' -f -a '(__ttmctl_txn_ids)'
"#;

/// Without `dir`: prints ttmctl(1). With it: writes ttmctl.1 and a page
/// per command (ttmctl-create.1, ttmctl-ctx-add.1, …) there and prints
/// their paths (`--json`: `{"files": [...]}`).
pub fn man(ctx: &mut Ctx, dir: Option<&Path>) -> Result<(), Failure> {
    let Some(dir) = dir else {
        let page = main_page().map_err(|err| Failure::other(format!("man page: {err}")))?;
        return ctx.out.line(&String::from_utf8_lossy(&page));
    };
    std::fs::create_dir_all(dir)
        .map_err(|err| Failure::other(format!("cannot create {}: {err}", dir.display())))?;
    let written = write_pages(dir).map_err(|err| {
        Failure::other(format!(
            "cannot write man pages to {}: {err}",
            dir.display()
        ))
    })?;
    if ctx.json {
        let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        ctx.out.json(&json!({ "files": files }))
    } else {
        for path in written {
            ctx.out.line(&path.display().to_string())?;
        }
        Ok(())
    }
}

/// The top page: clap's sections, then environment, exit status, files and
/// see-also written here (clap knows nothing of them).
fn main_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.write_all(EXTRA_SECTIONS.as_bytes())?;
    let mut codes = String::from(".SH \"EXIT STATUS\"\n");
    for line in EXIT_CODES_HELP.lines().skip(1) {
        let line = line.trim();
        if let Some((code, meaning)) = line.split_once("  ") {
            codes.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", meaning.trim()));
        }
    }
    page.write_all(codes.as_bytes())?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

const EXTRA_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBTETRA_DIR\fR
The tree of transactions (default ~/.tetra).
.TP
\fBTTM_MODULE\fR, \fBTTM_SOCKET\fR
Defaults of \-\-module and \-\-socket.
.TP
\fBTTM_NO_AUTOSTART=1\fR
Do not start ttmd when none answers.
.TP
\fBTTMD_BIN\fR
The ttmd that autostart runs (default: next to ttmctl, else on PATH).
.TP
\fBNO_COLOR\fR
When set and not empty, no colour (unless \-\-color always).
.TP
\fBCOLUMNS\fR
The width tables are cut to (default: the terminal's).
.SH FILES
.TP
\fB$TETRA_DIR/<module>/txns/<id>/\fR
state.json, events.ndjson, ctx/, build/, artifacts/ of a transaction.
.TP
\fB$XDG_RUNTIME_DIR/ttm/ttmd.sock\fR
The daemon's socket (else $TETRA_DIR/run/ttmd.sock).
.SH "SEE ALSO"
ttmd(1); the JSON output schemas in docs/json.md and the cookbook in docs/cookbook.md of the TTM sources.
"#;

/// Writes the top page and one per (visible) subcommand, recursively.
fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn sub(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for child in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            sub(child, dir, written)?;
        }
        let man = clap_mangen::Man::new(cmd);
        written.push(man.generate_to(dir)?);
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    for child in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        sub(child, dir, &mut written)?;
    }
    let top = dir.join(format!("{BIN}.1"));
    std::fs::write(&top, main_page()?)?;
    written.insert(0, top);
    Ok(written)
}

/// The module's transaction ids, one per line, for completion: never starts
/// ttmd, gives up after two seconds, prints nothing on any failure.
pub async fn txn_ids(ctx: &mut Ctx) -> Result<(), Failure> {
    let request = ListRequest {
        module: ctx.module.clone(),
        stage: String::new(),
        brief: true,
        ..Default::default()
    };
    let socket = ctx.socket.clone();
    let list = tokio::time::timeout(Duration::from_secs(2), async move {
        let mut daemon = connect::connect_with(&socket, false).await?;
        super::pages::txns(&mut daemon, request).await
    })
    .await;
    if let Ok(Ok(reply)) = list {
        for txn in reply.txns {
            ctx.out.line(&txn.txn_id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_and_three_complete_ids() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = completion_script(shell);
            assert!(script.contains("ttmctl"), "{shell}");
        }
        assert!(completion_script(Shell::Bash).contains("_ttmctl_with_ids"));
        assert!(completion_script(Shell::Fish).contains("__ttmctl_txn_ids"));
        let zsh = completion_script(Shell::Zsh);
        assert!(zsh.contains("_ttmctl_txn_ids()"));
        // The helper replaced the default completion of -t/--txn.
        let uses = zsh.matches(":ID:_ttmctl_txn_ids'").count();
        assert!(
            uses >= 10,
            "-t/--txn values use the helper only {uses} times"
        );
        for line in zsh.lines().map(str::trim_start) {
            if line.starts_with("'-t+[") || line.starts_with("':id -- Transaction id") {
                assert!(line.contains("_ttmctl_txn_ids"), "left without ids: {line}");
            }
        }
    }

    #[test]
    fn the_man_page_has_exit_codes_and_commands() {
        let Ok(page) = main_page() else {
            panic!("no page");
        };
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains(".TH ttmctl"), "{page}");
        assert!(page.contains("EXIT STATUS"));
        assert!(page.contains("compare\\-and\\-set") || page.contains("compare-and-set"));
        assert!(page.contains("completions"));
    }

    #[test]
    fn man_pages_are_written_per_command() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let Ok(written) = write_pages(dir.path()) else {
            panic!("not written");
        };
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for name in [
            "ttmctl.1",
            "ttmctl-create.1",
            "ttmctl-ctx-add.1",
            "ttmctl-top.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("txn-ids")), "{names:?}");
    }
}
