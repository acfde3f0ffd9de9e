//! The command line as people and programs meet it (issue #9): the human
//! formats (plain when piped, tables on a terminal), colour rules, every
//! `--json` shape, completions, man pages, the progress bar, `ttmctl top`
//! under tmux, and one-line errors.
//!
//! Terminals are real: `script` (util-linux) gives a command a pty, tmux
//! runs `top`. When either is missing the test skips saying so, except
//! under CI, where it fails (`ttm_tests::Need`; `.ci/run` installs them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use ttm_tests::{CTL_TIMEOUT, Daemon, HANG, Need, Out, clean_command, run, ttmctl_bin, wait_until};

// ------------------------------------------------------------- helpers --

/// `value` as one single-quoted shell word.
fn sh(value: impl AsRef<std::ffi::OsStr>) -> String {
    let text = value.as_ref().to_string_lossy();
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs the `ttmctl` arguments in `args` on a pseudo-terminal (`script`),
/// with `env` added; returns what the terminal showed (stdout and stderr
/// together, `\r` removed) and the exit code. `None` (after saying why;
/// under CI it fails instead) when `script` is not installed.
fn on_pty(d: &Daemon, args: &str, env: &[(&str, &str)]) -> Option<(String, i32)> {
    if !Need::tool("script", "bsdutils").met() {
        return None;
    }
    let command = format!("{} {args}", sh(ttmctl_bin()));
    let mut cmd = clean_command("script");
    cmd.args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TETRA_DIR", &d.root)
        .env("TTM_SOCKET", &d.socket)
        .env("TTM_NO_AUTOSTART", "1")
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "100")
        .env_remove("NO_COLOR");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = run(cmd, None, CTL_TIMEOUT);
    Some((out.stdout.replace('\r', ""), out.code()))
}

/// A tree with three transactions: `nightly backup` (DONE), `roll back`
/// (FAIL) and `Deploy API v2.1.0` (EXECUTE, active, with evidence).
fn three(d: &Daemon) -> [String; 3] {
    let a = d.ctl(&["create", "Nightly backup"]).ok();
    let b = d.ctl(&["create", "Roll back"]).ok();
    let c = d
        .ctl(&["create", "Deploy API v2.1.0", "--target", "@staging"])
        .ok();
    d.ctl(&["commit", "-t", &a]).ok();
    d.ctl(&["fail", "-t", &b, "disk full"]).ok();
    d.ctl(&["transition", "EXECUTE"]).ok();
    d.ctl_stdin(&["ctx", "add", "-", "notes"], b"hello\n").ok();
    d.ctl(&["event", "progress", r#"{"pct":50}"#]).ok();
    [a, b, c]
}

/// `text` with what changes from run to run masked: the time in each id
/// (same length, so columns stay aligned), the tree's path, timestamps,
/// sha256 digests.
fn normalise(text: &str, d: &Daemon, ids: &[String]) -> String {
    let mut text = text.to_owned();
    for id in ids {
        let masked = format!("{}YYYYMMDDTHHMMSS", &id[..id.len() - 15]);
        text = text.replace(id.as_str(), &masked);
    }
    text = text.replace(d.root.to_str().unwrap(), "<ROOT>");
    mask_hex(&mask_times(&text))
}

/// RFC 3339 UTC times (`2025-10-17T14:30:22.123Z`) → `<TS>`.
fn mask_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let head = bytes.get(i..i + shape.len()).is_some_and(|w| {
            w.iter().zip(shape).all(|(c, s)| {
                if *s == b'd' {
                    c.is_ascii_digit()
                } else {
                    c == s
                }
            })
        });
        if head {
            let mut j = i + shape.len();
            if bytes.get(j) == Some(&b'.') {
                j += 1;
                while bytes.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            if bytes.get(j) == Some(&b'Z') {
                out.extend_from_slice(b"<TS>");
                i = j + 1;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// 64 lower-case hex digits (sha256) → `<SHA>`.
fn mask_hex(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|c| hex(c)).count();
        if run == 64 && (i == 0 || !hex(&bytes[i - 1])) {
            out.extend_from_slice(b"<SHA>");
            i += 64;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum T {
    Str,
    Num,
    Bool,
    Obj,
    Arr,
    StrOrNull,
}

/// Asserts that `value` is an object with each key of `keys` of its type.
#[track_caller]
fn shape(what: &str, value: &Value, keys: &[(&str, T)]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"));
    for (key, kind) in keys {
        let field = object
            .get(*key)
            .unwrap_or_else(|| panic!("{what}: no {key:?} in {value}"));
        let ok = match kind {
            T::Str => field.is_string(),
            T::Num => field.is_u64(),
            T::Bool => field.is_boolean(),
            T::Obj => field.is_object(),
            T::Arr => field.is_array(),
            T::StrOrNull => field.is_string() || field.is_null(),
        };
        assert!(ok, "{what}: {key:?} is not {kind:?}: {field}");
    }
}

const STATE: &[(&str, T)] = &[
    ("txn_id", T::Str),
    ("module", T::Str),
    ("description", T::Str),
    ("stage", T::Str),
    ("target", T::Str),
    ("iteration", T::Num),
    ("agent", T::Str),
    ("ctx_digest", T::StrOrNull),
    ("last_checkpoint", T::Str),
    ("last_error", T::StrOrNull),
    ("created", T::Str),
    ("seq", T::Num),
];

const EVENT: &[(&str, T)] = &[("ts", T::Str), ("event", T::Str), ("seq", T::Num)];

const CTX_FILE: &[(&str, T)] = &[
    ("name", T::Str),
    ("number", T::Num),
    ("bytes", T::Num),
    ("path", T::Str),
    ("evidence_index", T::Num),
];

fn no_escapes(out: &Out) {
    assert!(
        !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
        "`{}` printed escape codes into a pipe:\n{:?}\n{:?}",
        out.what,
        out.stdout,
        out.stderr
    );
}

// ---------------------------------------------------------------- human --

#[test]
fn piped_list_and_status_keep_their_plain_formats() {
    let d = Daemon::start_new();
    let ids = three(&d);
    let list = normalise(&d.ctl(&["list"]).stdout, &d, &ids);
    assert_eq!(
        list,
        "  ID                                 STAGE    ITER  TARGET    DESCRIPTION
  nightly-backup-YYYYMMDDTHHMMSS     DONE        1  @local    Nightly backup
  roll-back-YYYYMMDDTHHMMSS          FAIL        1  @local    Roll back
* deploy-api-v2-1-0-YYYYMMDDTHHMMSS  EXECUTE     1  @staging  Deploy API v2.1.0
"
    );
    let status = normalise(&d.ctl(&["status"]).stdout, &d, &ids);
    assert_eq!(
        status,
        "txn          deploy-api-v2-1-0-YYYYMMDDTHHMMSS (active)
module       ttm
stage        EXECUTE
description  Deploy API v2.1.0
target       @staging
iteration    1
agent        human
created      <TS>
last change  <TS>
digest       <SHA>
dir          <ROOT>/ttm/txns/deploy-api-v2-1-0-YYYYMMDDTHHMMSS
ctx (3 files)
  000_policy.md   287
  010_request.md  136
  100_notes         6
events
   1  <TS>  txn_start         txn_id=deploy-api-v2-1-0-YYYYMMDDTHHMMSS description=\"Deploy API v2.1.0\" target=@staging agent=human module=ttm stage=NEW ctx_digest=<SHA>
   2  <TS>  activated
   3  <TS>  stage_transition  from=NEW to=EXECUTE
   4  <TS>  evidence_added    file=100_notes description=notes bytes=6 sha256=<SHA> ctx_digest=<SHA>
   5  <TS>  progress          data={\"pct\":50}
"
    );
}

#[test]
fn list_and_status_on_a_terminal_are_tables_without_colour_when_asked() {
    let d = Daemon::start_new();
    let ids = three(&d);
    let Some((list, code)) = on_pty(&d, "list", &[("NO_COLOR", "1")]) else {
        return;
    };
    assert_eq!(code, 0, "{list}");
    assert!(!list.contains('\u{1b}'), "NO_COLOR on a pty: {list:?}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "STAGE", "ITER", "TARGET", "UPDATED", "DESCRIPTION"],
        "{list}"
    );
    for (line, id) in lines[1..].iter().zip(&ids) {
        assert!(line.contains(id.as_str()), "{list}");
        assert!(line.contains(" ago") || line.contains("just now"), "{line}");
        assert!(line.chars().count() <= 100, "wider than COLUMNS: {line}");
    }
    assert!(lines[3].starts_with("* "), "active not marked: {list}");

    // A narrow terminal cuts the description, marking the cut.
    let long = "a description far too long for a narrow terminal to show in one line";
    d.ctl(&["create", long]).ok();
    let (narrow, _) = on_pty(&d, "list --color never", &[("COLUMNS", "105")]).unwrap();
    let row = narrow.lines().find(|l| l.starts_with("* ")).unwrap();
    assert!(row.ends_with('…') && row.chars().count() <= 105, "{row:?}");

    let (status, code) =
        on_pty(&d, &format!("status -t {}", ids[2]), &[("NO_COLOR", "1")]).unwrap();
    assert_eq!(code, 0, "{status}");
    assert!(!status.contains('\u{1b}'), "{status:?}");
    let digest = d.ctl(&["ctx", "digest", "-t", &ids[2]]).ok();
    for needle in [
        ids[2].as_str(),
        "stage        EXECUTE  iteration 1",
        "target       @staging",
        "ctx  3 files",
        digest.as_str(),
        "100_notes",
        "6 B",
        "$e1",
        "last 5 events",
        "stage_transition  from=NEW to=EXECUTE",
        "progress          data={\"pct\":50}",
    ] {
        assert!(
            status.contains(needle),
            "status lacks {needle:?}:\n{status}"
        );
    }
    assert!(
        status.contains(" ago") || status.contains("just now"),
        "no relative time:\n{status}"
    );
}

#[test]
fn colour_only_on_a_terminal_never_with_no_color_or_never() {
    let d = Daemon::start_new();
    let ids = three(&d);
    // Piped: no escape codes, whatever the command, errors included.
    let cases: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["status"],
        vec!["events"],
        vec!["ctx", "list"],
        vec!["daemon", "status"],
        vec!["transition", "NEW"],
        vec!["status", "-t", "no-such-txn"],
        vec!["frobnicate"],
    ];
    for args in &cases {
        no_escapes(&d.ctl(args));
    }
    // --color always forces it even into a pipe.
    let forced = d.ctl(&["list", "--color", "always"]).ok();
    assert!(forced.contains("\u{1b}["), "{forced:?}");

    let Some((coloured, _)) = on_pty(&d, "list", &[]) else {
        return;
    };
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a pty: {coloured:?}"
    );
    for (args, env) in [
        ("list", [("NO_COLOR", "1")]),
        ("status", [("NO_COLOR", "1")]),
        (
            &format!("events -t {}", ids[0]) as &str,
            [("NO_COLOR", "1")],
        ),
        ("list --color never", [("NO_COLOR", "")]),
        ("status --color=never", [("NO_COLOR", "")]),
    ] {
        let (shown, code) = on_pty(&d, args, &env).unwrap();
        assert_eq!(code, 0, "{args}: {shown}");
        assert!(!shown.contains('\u{1b}'), "{args} {env:?}: {shown:?}");
    }
}

// ----------------------------------------------------------------- json --

#[test]
fn every_json_output_has_its_documented_shape() {
    let d = Daemon::start_new();
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = d.ctl(&all);
        assert!(out.stderr.is_empty(), "{all:?}: stderr: {}", out.stderr);
        out.json()
    };

    let created = json(&["create", "shapes", "--target", "@staging"]);
    shape(
        "create",
        &created,
        &[("txn_id", T::Str), ("dir", T::Str), ("state", T::Obj)],
    );
    shape("create.state", &created["state"], STATE);
    let id = created["txn_id"].as_str().unwrap().to_owned();
    let other = json(&["create", "other", "--no-activate"])["txn_id"]
        .as_str()
        .unwrap()
        .to_owned();

    shape("active", &json(&["active"]), &[("txn_id", T::Str)]);
    shape("dir", &json(&["dir"]), &[("dir", T::Str)]);
    shape("state", &json(&["state"]), STATE);
    shape("activate", &json(&["activate", &id]), STATE);
    shape("transition", &json(&["transition", "SELECT"]), STATE);
    shape("update", &json(&["update", r#"{"build":"1234"}"#]), STATE);
    shape(
        "event",
        &json(&["event", "progress", r#"{"pct":1}"#]),
        &[("seq", T::Num)],
    );

    let added = d
        .ctl_stdin(&["--json", "ctx", "add", "-", "notes"], b"x\n")
        .json();
    shape(
        "ctx add",
        &added,
        &[
            ("file", T::Str),
            ("bytes", T::Num),
            ("sha256", T::Str),
            ("ctx_digest", T::Str),
            ("seq", T::Num),
        ],
    );
    let files = json(&["ctx", "list"]);
    assert_eq!(files.as_array().map(Vec::len), Some(3), "{files}");
    for file in files.as_array().unwrap() {
        shape("ctx list[]", file, CTX_FILE);
    }
    shape(
        "ctx env",
        &json(&["ctx", "env"]),
        &[("e1", T::Str), ("e_count", T::Num)],
    );
    shape(
        "ctx digest",
        &json(&["ctx", "digest"]),
        &[("ctx_digest", T::StrOrNull)],
    );
    shape(
        "resolve",
        &json(&["resolve"]),
        &[("target", T::Str), ("plan", T::Str), ("connector", T::Obj)],
    );
    shape(
        "connector",
        &json(&["connector", "@prod"]),
        &[("type", T::Str), ("host", T::Str)],
    );

    let list = json(&["list"]);
    shape(
        "list",
        &list,
        &[
            ("active", T::StrOrNull),
            ("txns", T::Arr),
            ("quarantined", T::Arr),
        ],
    );
    for txn in list["txns"].as_array().unwrap() {
        shape("list.txns[]", txn, STATE);
    }
    let status = json(&["status"]);
    shape(
        "status",
        &status,
        &[("state", T::Obj), ("ctx", T::Arr), ("events", T::Arr)],
    );
    shape("status.state", &status["state"], STATE);
    for file in status["ctx"].as_array().unwrap() {
        shape("status.ctx[]", file, CTX_FILE);
    }
    let events = status["events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "{status}");
    for event in events {
        shape("status.events[]", event, EVENT);
    }
    // A stream: one object per line.
    let lines = d.ctl(&["--json", "events"]).ok();
    assert!(lines.lines().count() >= 6, "{lines}");
    for line in lines.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        shape("events line", &event, EVENT);
    }

    let watcher = d.spawn_ctl(&["--json", "watch"]);
    // The watch is registered once ttmd counts the stream; then change.
    assert!(
        wait_until(HANG, || json(&["daemon", "status"])["open_streams"]
            .as_u64()
            >= Some(1)),
        "watch never opened"
    );
    shape("fail", &json(&["fail", "-t", &other, "boom"]), STATE);
    let change = watcher.json_line(HANG);
    shape(
        "watch line",
        &change,
        &[
            ("kind", T::Str),
            ("module", T::Str),
            ("txn_id", T::Str),
            ("from", T::Str),
            ("to", T::Str),
            ("seq", T::Num),
            ("ts", T::Str),
        ],
    );
    watcher.kill();
    shape("retry", &json(&["retry", "-t", &other]), STATE);

    let commit = json(&["commit"]);
    shape(
        "commit",
        &commit,
        &[("duration_ms", T::Num), ("state", T::Obj)],
    );
    shape("commit.state", &commit["state"], STATE);
    // status --follow of a finished transaction: the document on one line.
    let follow = d.ctl(&["--json", "status", "--follow", "-t", &id]).ok();
    assert_eq!(follow.lines().count(), 1, "{follow}");
    shape(
        "status --follow",
        &serde_json::from_str(&follow).unwrap(),
        &[("state", T::Obj), ("ctx", T::Arr), ("events", T::Arr)],
    );

    shape(
        "version",
        &json(&["version"]),
        &[("ttmctl", T::Str), ("api_version", T::Num)],
    );
    shape(
        "daemon status",
        &json(&["daemon", "status"]),
        &[
            ("pid", T::Num),
            ("version", T::Str),
            ("api_version", T::Num),
            ("uptime_secs", T::Num),
            ("root", T::Str),
            ("socket", T::Str),
            ("transactions", T::Num),
            ("modules", T::Num),
            ("open_streams", T::Num),
            ("durability", T::Str),
        ],
    );
    shape(
        "daemon reload",
        &json(&["daemon", "reload"]),
        &[("report", T::Arr)],
    );
    shape(
        "archive",
        &json(&["archive"]),
        &[("applied", T::Bool), ("txn_ids", T::Arr)],
    );
    shape(
        "gc",
        &json(&["gc"]),
        &[("applied", T::Bool), ("txn_ids", T::Arr)],
    );
    let pages = d.tmp().join("man");
    let man = json(&["man", "--dir", pages.to_str().unwrap()]);
    shape("man --dir", &man, &[("files", T::Arr)]);
    assert!(pages.join("ttmctl.1").is_file());
}

// ------------------------------------------------- completions and man --

#[test]
fn completions_for_each_shell_and_ids_after_dash_t() {
    let d = Daemon::start_new();
    let ids = three(&d);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = d.ctl(&["completions", shell]).ok();
        assert!(
            script.len() > 1000 && script.contains("ttmctl"),
            "{shell}: {script}"
        );
    }
    if !Need::tool("bash", "bash").met() {
        return;
    }
    let bash = |script: &str| {
        let mut bash = clean_command("bash");
        bash.arg("-c")
            .arg(script)
            .env("TTMCTL", ttmctl_bin())
            .env("TETRA_DIR", &d.root)
            .env("TTM_SOCKET", &d.socket)
            .env("TTM_NO_AUTOSTART", "1");
        run(bash, None, CTL_TIMEOUT)
    };
    // It parses, and loading it registers the completion.
    bash(r#"bash -n <("$TTMCTL" completions bash)"#).ok();
    let registered = bash(r#"source <("$TTMCTL" completions bash) && complete -p ttmctl"#).ok();
    assert!(registered.contains("_ttmctl_with_ids"), "{registered}");
    // -t completes the module's ids (asking the daemon, never starting one).
    let offered = bash(
        r#"source <("$TTMCTL" completions bash)
           COMP_WORDS=("$TTMCTL" status -t ''); COMP_CWORD=3
           _ttmctl_with_ids "$TTMCTL" '' -t; printf '%s\n' "${COMPREPLY[@]}""#,
    )
    .ok();
    for id in &ids {
        assert!(
            offered.lines().any(|l| l == id),
            "{id} not offered: {offered}"
        );
    }
    // Subcommands still complete through clap's function.
    let subcommands = bash(
        r#"source <("$TTMCTL" completions bash)
           COMP_WORDS=("$TTMCTL" tra); COMP_CWORD=1
           _ttmctl_with_ids "$TTMCTL" tra "$TTMCTL"; printf '%s\n' "${COMPREPLY[@]}""#,
    )
    .ok();
    assert!(
        subcommands.lines().any(|l| l == "transition"),
        "{subcommands}"
    );
    for (shell, check) in [("zsh", "zsh -n"), ("fish", "fish --no-execute")] {
        if Need::tool(shell, shell).met() {
            let script = d.tmp().join(format!("completion.{shell}"));
            std::fs::write(&script, d.ctl(&["completions", shell]).ok()).unwrap();
            let out = run(
                {
                    let mut c = clean_command("sh");
                    c.arg("-c").arg(format!("{check} {}", sh(&script)));
                    c
                },
                None,
                CTL_TIMEOUT,
            );
            out.ok();
        }
    }
}

#[test]
fn man_pages_come_from_the_clap_definitions() {
    let d = Daemon::stopped();
    let page = d.ctl(&["man"]).ok();
    for needle in [".TH ttmctl 1", "EXIT STATUS", "completions", "NO_COLOR"] {
        assert!(page.contains(needle), "ttmctl(1) lacks {needle:?}");
    }
    let dir = d.tmp().join("man1");
    let listed = d.ctl(&["man", "--dir", dir.to_str().unwrap()]).ok();
    for name in [
        "ttmctl.1",
        "ttmctl-status.1",
        "ttmctl-ctx-add.1",
        "ttmctl-top.1",
    ] {
        assert!(dir.join(name).is_file(), "{name} not written");
        assert!(listed.contains(name), "{listed}");
    }
    if Need::tool("man", "man-db").met() {
        let mut cmd = clean_command("man");
        cmd.arg("-l")
            .arg(dir.join("ttmctl-create.1"))
            .env("MANPAGER", "cat");
        let shown = run(cmd, None, CTL_TIMEOUT).ok();
        assert!(shown.contains("create"), "{shown}");
    }
}

// ------------------------------------------------------------- progress --

#[test]
fn ctx_add_shows_progress_for_a_large_file_on_a_terminal_only() {
    let d = Daemon::start_new();
    d.create("big evidence");
    let big = d.tmp().join("big.bin");
    std::fs::write(&big, vec![7u8; 9 * 1024 * 1024]).unwrap();
    let piped = d.ctl(&["ctx", "add", big.to_str().unwrap(), "first"]);
    assert_eq!(piped.ok(), "100_first.bin");
    assert!(
        piped.stderr.is_empty(),
        "progress in a pipe: {:?}",
        piped.stderr
    );
    let Some((shown, code)) = on_pty(&d, &format!("ctx add {} second", sh(&big)), &[]) else {
        return;
    };
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("110_second.bin"), "{shown}");
    assert!(
        shown.contains("MiB"),
        "no progress bar on a terminal: {shown:?}"
    );
}

// ------------------------------------------------------------------ top --

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Out {
        let mut cmd = clean_command("tmux");
        cmd.arg("-S").arg(&self.socket).args(args);
        run(cmd, None, CTL_TIMEOUT)
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout
    }

    /// Polls the screen until `cond` holds; panics after [`HANG`]. A wait
    /// for one state to show (one step), not a guard on work.
    #[track_caller]
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return start.elapsed();
            }
            assert!(start.elapsed() < HANG, "{what} never appeared:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_under_tmux_shows_transactions_follows_changes_and_quits_on_q() {
    if !Need::tool("tmux", "tmux").met() {
        return;
    }
    let d = Daemon::start_new();
    let ids = three(&d);
    let exit_file = d.tmp().join("top.exit");
    let tmux = Tmux {
        socket: d.tmp().join("tmux.sock"),
    };
    let command = format!(
        "env -u NO_COLOR -u TTM_MODULE TETRA_DIR={} TTM_SOCKET={} TTM_NO_AUTOSTART=1 TERM=xterm-256color \
         {} top; echo $? > {}; sleep 60",
        sh(&d.root),
        sh(&d.socket),
        sh(ttmctl_bin()),
        sh(&exit_file),
    );
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ])
    .ok();

    // The rows, the live mark and the backfilled events arrive separately.
    tmux.wait_for("the three transactions and their events", |s| {
        ids.iter().all(|id| s.contains(id.as_str()))
            && s.contains("● live")
            && s.contains("progress")
    });
    let screen = tmux.screen();
    eprintln!("{screen}");
    assert!(screen.contains("module ttm"), "{screen}");
    let active = screen.lines().find(|l| l.contains(&ids[2])).unwrap();
    assert!(
        active.contains("* ") && active.contains("EXECUTE"),
        "{active}"
    );
    assert!(
        screen.contains(&format!("events of {}", ids[2])),
        "{screen}"
    );
    assert!(screen.contains("progress"), "{screen}");

    // A change made by another process shows up, in the row and in the
    // followed events.
    d.ctl(&["transition", "VALIDATE", "-t", &ids[2]]).ok();
    let took = tmux.wait_for("the transition to VALIDATE", |s| {
        s.lines()
            .any(|l| l.contains(&ids[2]) && l.contains("VALIDATE"))
            && s.contains("from=EXECUTE to=VALIDATE")
    });
    eprintln!("the transition appeared on screen after {took:?}");
    d.ctl(&["event", "deploy.step", r#"{"step":"migrate"}"#])
        .ok();
    tmux.wait_for("the user event", |s| {
        s.contains("step=") || s.contains("migrate")
    });

    tmux.cmd(&["send-keys", "-t", "top", "q"]).ok();
    assert!(
        wait_until(HANG, || std::fs::read_to_string(&exit_file)
            .is_ok_and(|t| !t.trim().is_empty())),
        "top did not quit on q:\n{}",
        tmux.screen()
    );
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
}

#[test]
fn top_refuses_json_and_a_pipe_in_one_line() {
    let d = Daemon::start_new();
    for args in [&["top", "--json"][..], &["top"]] {
        let out = d.ctl(args);
        out.expect_code(2);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("watch"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}

// --------------------------------------------------------------- errors --

#[test]
fn an_unreachable_daemon_is_one_line_with_what_to_do_and_exit_7() {
    let d = Daemon::stopped();
    for args in [&["status"][..], &["list", "--json"], &["event", "x"]] {
        let out = d.ctl(args);
        out.expect_code(7);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        out.stderr_has(&[
            "ttmctl: ttmd is not running at",
            d.socket.to_str().unwrap(),
            "start it with `ttmd`",
            "TTM_NO_AUTOSTART",
        ]);
        no_escapes(&out);
    }
    // On a terminal too, `top` included (it says so before taking over
    // the screen).
    for args in ["status", "top"] {
        if let Some((shown, code)) = on_pty(&d, args, &[]) {
            assert_eq!(code, 7, "{shown}");
            assert_eq!(shown.trim().lines().count(), 1, "{shown}");
            assert!(shown.contains("ttmd is not running"), "{shown}");
        }
    }
}

#[test]
fn usage_errors_are_one_line_with_the_usage() {
    let d = Daemon::stopped();
    let out = d.ctl(&["transition"]);
    out.expect_code(2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    out.stderr_has(&["ttmctl: ", "<STAGE>", "usage: ttmctl transition"]);
    let out = d.ctl(&["list", "--color", "sometimes"]);
    out.expect_code(2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    out.stderr_has(&["sometimes", "auto"]);
    // --help still prints the whole help and exits 0.
    let help = d.ctl(&["--help"]);
    assert!(help.ok().contains("Exit codes:"));
}
