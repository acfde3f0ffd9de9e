//! The bash shims (`ttmctl/shell/ttm.sh`, `flow_manager_ttm.sh`) and the
//! deploy example, run by real bash against the real daemon: the original
//! test sequence, the active pointer, hostile text, concurrent shells, exit
//! codes under `set -e`, RAG's FSM, the deploy example, TTM_DIR handling,
//! and that sourcing changes nothing in the caller's shell.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use ttm_tests::{
    CTL_TIMEOUT, Daemon, Need, Out, STALL, START_TIMEOUT, STOP_TIMEOUT, accepts, check_log,
    clean_command, event_types, run, run_watched, signal, tree_activity, ttmctl_bin, ttmd_bin,
    wait_progressing, wait_timeout,
};

/// Runs a script that drives the daemon serving `root`: it may run as
/// long as it keeps working (printing, or changing the tree: see
/// `ttm_tests::run_watched`); only [`STALL`] without either is a hang.
pub(crate) fn run_script(cmd: Command, root: &Path) -> Out {
    run_watched(cmd, None, STALL, || tree_activity(root))
}

/// Sources the TTM shims under `set -euo pipefail`.
pub(crate) const STRICT: &str = "set -euo pipefail\nsource \"$TTM_SHELL/ttm.sh\"\n";

/// Sources the RAG shims (which source ttm.sh) under `set -euo pipefail`.
pub(crate) const STRICT_FLOW: &str =
    "set -euo pipefail\nsource \"$TTM_SHELL/flow_manager_ttm.sh\"\n";

pub(crate) fn shell_dir() -> PathBuf {
    ttm_tests::repo_root().join("ttmctl/shell")
}

/// `bash ARGS…` against the daemon at `root`/`socket`: `TTMCTL` is the
/// ttmctl under test, `TTM_SHELL` the shims' directory, `W` a scratch
/// directory beside the tree.
pub(crate) fn bash_at(root: &Path, socket: &Path, work: &Path, args: &[&str]) -> Command {
    fs::create_dir_all(work).unwrap();
    let mut cmd = clean_command("bash");
    // Relative paths (and a `touch x` that should never run) land in `work`.
    cmd.args(args)
        .current_dir(work)
        .env("TTMCTL", ttmctl_bin())
        .env("TETRA_DIR", root)
        .env("TTM_SOCKET", socket)
        .env("TTM_NO_AUTOSTART", "1")
        .env("TTM_SHELL", shell_dir())
        .env("W", work)
        .env_remove("BASH_ENV")
        .env_remove("ENV")
        .env_remove("DEPLOY_ROOT")
        .env_remove("DEPLOY_CORRUPT")
        .env_remove("TTM_SH");
    cmd
}

/// `bash -c SCRIPT` against `d`, with `env` added.
pub(crate) fn bash(d: &Daemon, script: &str, env: &[(&str, &str)]) -> Out {
    let mut cmd = bash_at(&d.root, &d.socket, &d.tmp().join("work"), &["-c", script]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_script(cmd, &d.root)
}

/// The ctx files of a transaction directory, by name.
fn ctx_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("ctx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ------------------------------------------------------------- the API --

#[test]
fn the_original_test_sequence_passes_on_the_shims() {
    let d = Daemon::start_new();
    let script = shell_dir().join("test_sequence.sh");
    let out = run_script(
        bash_at(
            &d.root,
            &d.socket,
            &d.tmp().join("work"),
            &[script.to_str().unwrap()],
        ),
        &d.root,
    );
    let stdout = out.ok();
    let last = stdout.lines().last().unwrap();
    let ids = last
        .strip_prefix("=== All steps passed (")
        .and_then(|rest| rest.strip_suffix(") ==="))
        .unwrap_or_else(|| panic!("unexpected last line: {last}"));
    let (done, failed) = ids.split_once(", ").unwrap();
    // What the sequence did is on disk, as the original wrote it.
    let s = d.state_json("ttm", done);
    assert_eq!(s["stage"], "DONE");
    assert_eq!(s["target"], "@staging");
    assert_eq!(s["agent"], "ci-agent");
    assert_eq!(s["tes_plan"], "staging.local");
    let dir = d.txn_dir("ttm", done);
    assert_eq!(
        fs::read_to_string(dir.join("ctx/100_artifact.txt")).unwrap(),
        "Test artifact content\n"
    );
    let types = event_types(&check_log(&dir));
    for t in [
        "txn_start",
        "evidence_added",
        "stage_transition",
        "tes_resolved",
        "txn_commit",
    ] {
        assert!(types.iter().any(|x| x == t), "no {t} in {types:?}");
    }
    let f = d.state_json("ttm", failed);
    assert_eq!(f["stage"], "FAIL");
    assert_eq!(f["last_error"], "Intentional test failure");
    check_log(&d.txn_dir("ttm", failed));
    // The original's messages on stdout.
    assert!(stdout.contains("Transaction transitioned: NEW → SELECT"));
    assert!(stdout.contains("Transaction transitioned: VALIDATE → DONE"));
    assert!(stdout.contains(&format!("Transaction committed: {done}")));
    assert!(stdout.contains("TES resolved: @staging → staging.local"));
}

#[test]
fn the_active_pointer_moves_to_each_new_transaction() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}for n in 1 2 3; do
                 id=$(txn_create \"txn $n\" @local)
                 [[ $(txn_active) == \"$id\" ]] || {{ echo \"active is not $id\" >&2; exit 1; }}
                 [[ $(ttm active) == \"$id\" ]] || exit 1
                 # Exported like the original's, so child shells have them.
                 [[ $(bash -c txn_active) == \"$id\" ]] || exit 1
                 printf '%s\\n' \"$id\"
             done"
        ),
        &[],
    );
    let stdout = out.ok();
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids.len(), 3, "{stdout}");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 3, "{ids:?}");
    let link = fs::read_link(d.root.join("ttm/txns/active")).unwrap();
    assert_eq!(link, Path::new(ids[2]));
    assert_eq!(d.ctl(&["active"]).ok(), ids[2]);
}

/// Text that would run commands, break quoting or JSON if anything
/// evaluated or pasted it.
fn hostile(pwned: &Path) -> String {
    let p = pwned.display();
    format!(
        "say \"hi\" & 'bye'; $(touch {p}) `touch {p}` ${{PWD}} $HOME \\ back\\\\slash \\n \
         \nline 2\ttab \u{1}\u{1f}\u{7f} é ✓ 日本 🚀 -- --target=@prod %s %d"
    )
}

#[test]
fn hostile_text_round_trips_exactly_and_runs_nothing() {
    let d = Daemon::start_new();
    let pwned = d.tmp().join("pwned");
    let desc = hostile(&pwned);
    let err = format!("error: \"{}\"\n{}", pwned.display(), hostile(&pwned));
    let patch = json!({ "note": desc, "nested": { "err": err } }).to_string();
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}id=$(txn_create \"$DESC\" @local)
             txn_fail \"$id\" \"$ERR\" >/dev/null 2>&1
             dash=$(txn_create \"-v2 $DESC\")
             txn_update \"$dash\" \"$PATCH\"
             fid=$(flow_create \"$DESC\" \"agent-x\")
             flow_complete \"$fid\" --outcome failed --lesson \"$DESC\" --lesson \"$ERR\" \
                 --artifact \"$ERR\" --tag \"$DESC\" --effort 7 >/dev/null 2>&1
             fid2=$(flow_create \"$ERR\")
             flow_checkpoint SELECT \"$PATCH\" \"$fid2\" >/dev/null
             flow_complete \"$fid2\" -o success -l \"$ERR\" >/dev/null
             printf '%s\\n' \"$id\" \"$dash\" \"$fid\" \"$fid2\""
        ),
        // txn_* on ttm: the flow manager points them at rag otherwise.
        &[
            ("DESC", &desc),
            ("ERR", &err),
            ("PATCH", &patch),
            ("TTM_MODULE", "ttm"),
        ],
    );
    let stdout = out.ok();
    let ids: Vec<&str> = stdout.lines().collect();
    let [id, dash, fid, fid2] = ids[..] else {
        panic!("expected four ids: {stdout}");
    };

    let s = d.state_json("ttm", id);
    assert_eq!(s["description"], desc.as_str());
    assert_eq!(s["last_error"], err.as_str());
    assert_eq!(s["stage"], "FAIL");
    // ttmctl reads back the same.
    let via_ctl = d.ctl(&["--json", "state", "-t", id]).json();
    assert_eq!(via_ctl["description"], desc.as_str());
    let events = check_log(&d.txn_dir("ttm", id));
    let failed = events.iter().find(|e| e["event"] == "txn_fail").unwrap();
    assert_eq!(failed["error"], err.as_str());

    let s = d.state_json("ttm", dash);
    assert_eq!(s["description"], format!("-v2 {desc}").as_str());
    assert_eq!(s["note"], desc.as_str());
    assert_eq!(s["nested"]["err"], err.as_str());

    let f = d.state_json("rag", fid);
    assert_eq!(f["description"], desc.as_str());
    assert_eq!(f["agent"], "agent-x");
    assert_eq!(f["stage"], "FAIL");
    assert_eq!(f["outcome"], "failed");
    assert_eq!(f["lessons"], json!([desc, err]));
    assert_eq!(f["artifacts"], json!([err]));
    assert_eq!(f["tags"], json!([desc]));
    assert_eq!(f["effort_minutes"], 7);
    assert_eq!(f["last_error"], format!("flow failed: {desc}").as_str());

    let f2 = d.state_json("rag", fid2);
    assert_eq!(f2["description"], err.as_str());
    assert_eq!(f2["note"], desc.as_str());
    assert_eq!(f2["stage"], "DONE");
    assert_eq!(f2["lessons"], json!([err]));

    assert!(!pwned.exists(), "a description was executed");
}

/// A ttmd of its own on a tree whose path is hostile (the fixture's tree is
/// always `tmp/tree`). Stopped when dropped.
#[derive(Debug)]
struct OwnDaemon {
    tmp: tempfile::TempDir,
    root: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl OwnDaemon {
    fn start(dir_name: &str) -> OwnDaemon {
        let tmp = tempfile::Builder::new().prefix("ttm-").tempdir().unwrap();
        let root = tmp.path().join(dir_name).join("tree");
        fs::create_dir_all(&root).unwrap();
        let socket = tmp.path().join("h.sock");
        let log = fs::File::create(tmp.path().join("ttmd.stderr")).unwrap();
        let mut child = clean_command(ttmd_bin())
            .arg("--root")
            .arg(&root)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Waiting for readiness, not a guard on work: a generous bound.
        let deadline = Instant::now() + START_TIMEOUT;
        while !accepts(&socket) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "ttmd exited ({status}): {}",
                    fs::read_to_string(tmp.path().join("ttmd.stderr")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "ttmd did not listen");
            thread::sleep(Duration::from_millis(5));
        }
        OwnDaemon {
            tmp,
            root,
            socket,
            child: Some(child),
        }
    }

    fn bash(&self, script: &str, env: &[(&str, &Path)]) -> Out {
        let mut cmd = bash_at(
            &self.root,
            &self.socket,
            &self.tmp.path().join("work"),
            &["-c", script],
        );
        for (key, value) in env {
            cmd.env(key, value);
        }
        run_script(cmd, &self.root)
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[test]
fn evidence_vars_are_assigned_without_eval_from_hostile_paths() {
    let probe = tempfile::tempdir().unwrap();
    let pwned = probe.path().join("pwned");
    let p = pwned.display();
    let own = OwnDaemon::start(&format!(
        "it's $(touch {p}) `touch {p}` \"q\" \\ ${{HOME}} é ✓\nline"
    ));
    let work = own.tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    // A file name cannot hold the probe's path: its `touch` would land in
    // `work`, the scripts' current directory.
    let f1 = work.join("it's $(touch pwned) `touch pwned` \"q\" é.txt");
    let f2 = work.join("second file.tar.gz");
    fs::write(&f1, "first\n").unwrap();
    fs::write(&f2, "second\n").unwrap();
    let out = own.bash(
        &format!(
            "{STRICT}id=$(txn_create evidence)
             init_evidence_vars >/dev/null
             [[ $e_count == 0 && -z ${{e1+set}} ]] || {{ echo \"vars before any evidence\" >&2; exit 1; }}
             txn_add_ctx \"$F1\" '' >/dev/null
             txn_add_ctx \"$F2\" 'desc $(touch {p}) \"d\"' >/dev/null
             init_evidence_vars
             echo \"rc=$?\"
             printf '%s\\0' \"$e1\" \"$e2\" \"$e_count\" \"$(txn_dir)\" > \"$W/vars\"
             bash -c 'printf %s \"$e_count\"' > \"$W/exported\"
             # A new transaction without evidence clears them.
             txn_create empty >/dev/null
             init_evidence_vars
             [[ $e_count == 0 && -z ${{e1+set}} && -z ${{e2+set}} ]] || {{ echo 'not cleared' >&2; exit 1; }}"
        ),
        &[("F1", &f1), ("F2", &f2)],
    );
    let stdout = out.ok();
    assert!(stdout.contains("rc=0"), "{stdout}");
    assert!(stdout.contains("Evidence variables initialized: 2 file(s)"));
    assert!(stdout.contains("No evidence files found"));
    let vars = fs::read(work.join("vars")).unwrap();
    let vars: Vec<String> = vars
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect();
    let [e1, e2, count, dir] = &vars[..] else {
        panic!("unexpected vars: {vars:?}");
    };
    assert_eq!(count, "2");
    assert!(dir.starts_with(own.root.to_str().unwrap()), "{dir}");
    let e1 = Path::new(e1);
    let e2 = Path::new(e2);
    assert_eq!(e1.parent().unwrap(), Path::new(dir).join("ctx"));
    assert_eq!(e2.parent().unwrap(), Path::new(dir).join("ctx"));
    assert!(
        e1.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("100_")
    );
    assert!(
        e2.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("110_")
    );
    assert!(e2.to_str().unwrap().ends_with(".tar.gz"));
    assert_eq!(fs::read_to_string(e1).unwrap(), "first\n");
    assert_eq!(fs::read_to_string(e2).unwrap(), "second\n");
    assert_eq!(fs::read_to_string(work.join("exported")).unwrap(), "2");
    assert!(!pwned.exists(), "a path was executed");
    assert!(!work.join("pwned").exists(), "a file name was executed");
}

#[test]
fn sixteen_shells_adding_ten_files_each_get_160_distinct_numbers() {
    let d = Daemon::start_new();
    let id = d.create("concurrent adds");
    let work = d.tmp().join("work");
    let script = format!(
        "{STRICT}for i in $(seq 1 10); do
             f=\"$W/p$P-$i.txt\"
             printf 'process %s file %s\\n' \"$P\" \"$i\" > \"$f\"
             out=$(txn_add_ctx \"$f\" \"p$P\" \"$ID\")
             [[ $out =~ ^Added\\ context:\\ [0-9]+_p$P\\.txt$ ]] || {{ echo \"said: $out\" >&2; exit 1; }}
         done"
    );
    let children: Vec<Child> = (1..=16)
        .map(|p| {
            bash_at(&d.root, &d.socket, &work, &["-c", &script])
                .env("P", p.to_string())
                .env("ID", &id)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each shell is waited for on a thread of its own; the guard is on the
    // tree: it fails only once no shell changed anything for STALL.
    let (tx, done) = std::sync::mpsc::channel();
    for child in children {
        let tx = tx.clone();
        thread::spawn(move || tx.send(child.wait_with_output()));
    }
    drop(tx);
    for _ in 1..=16 {
        let out = wait_progressing(
            "16 concurrent shells adding ctx files",
            STALL,
            || tree_activity(&d.root),
            || done.try_recv().ok(),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "a shell failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = d.txn_dir("ttm", &id);
    let evidence: Vec<String> = ctx_names(&dir)
        .into_iter()
        .filter(|n| !n.starts_with("000_") && !n.starts_with("010_"))
        .collect();
    assert_eq!(evidence.len(), 160, "{evidence:?}");
    let numbers: BTreeSet<u64> = evidence
        .iter()
        .map(|n| n.split('_').next().unwrap().parse().unwrap())
        .collect();
    let expected: BTreeSet<u64> = (0..160).map(|i| 100 + 10 * i).collect();
    assert_eq!(numbers, expected);
    let contents: BTreeSet<String> = evidence
        .iter()
        .map(|n| fs::read_to_string(dir.join("ctx").join(n)).unwrap())
        .collect();
    let wanted: BTreeSet<String> = (1..=16)
        .flat_map(|p| (1..=10).map(move |i| format!("process {p} file {i}\n")))
        .collect();
    assert_eq!(contents, wanted);
    let adds = check_log(&dir)
        .iter()
        .filter(|e| e["event"] == "evidence_added")
        .count();
    assert_eq!(adds, 160);
}

// -------------------------------------------------------- exit statuses --

#[test]
fn every_shim_returns_non_zero_on_a_refused_call() {
    let d = Daemon::start_new();
    fs::write(d.tmp().join("file.txt"), "x").unwrap();
    let out = bash(
        &d,
        r#"export TTM_MODULE=ttm   # txn_* on ttm, not the flow manager's rag
source "$TTM_SHELL/flow_manager_ttm.sh"
bad=0
# expect NAME CODE CMD…: CMD must exit with CODE.
expect() {
    local name=$1 want=$2 rc=0
    shift 2
    "$@" >/dev/null 2>"$W/err" || rc=$?
    if [[ $rc -ne $want ]]; then
        printf 'FAIL %s: exit %s, expected %s: %s\n' "$name" "$rc" "$want" "$(<"$W/err")"
        bad=1
    elif [[ $want -ne 0 && ! -s $W/err ]]; then
        printf 'FAIL %s: exit %s without a message\n' "$name" "$rc"
        bad=1
    fi
}
f=$W/../file.txt
nope=nope-20250101T000000

# A fresh tree: the module has no transaction at all.
if txn_active >/dev/null 2>&1; then echo "FAIL txn_active with no transaction"; bad=1; fi
if ! txn_transition SELECT 2>/dev/null; then echo "refused: transition without a transaction"; fi
# ttmd makes the default module at start: none active there (4); rag
# does not exist yet (3).
for fn in txn_active txn_dir txn_state txn_commit txn_fail init_evidence_vars txn_list_ctx \
          txn_ctx_digest txn_status txn_events txn_resolve_tes; do
    expect "$fn (no transaction)" 4 "$fn"
done
for fn in flow_active flow_get_state flow_status flow_list_evidence flow_init_evidence_vars \
          get_active_flow_dir flow_complete; do
    expect "$fn (no transaction)" 3 "$fn"
done
expect "txn_transition (no transaction)" 4 txn_transition SELECT
expect "txn_add_ctx (no transaction)" 4 txn_add_ctx "$f" x
expect "flow_transition (no flow)" 3 flow_transition SELECT
expect "flow_checkpoint (no flow)" 3 flow_checkpoint SELECT

# A module with transactions but none active.
"$TTMCTL" -m other create "not active" --no-activate >/dev/null
expect "txn_transition (none active)" 4 env TTM_MODULE=other bash -c 'source "$TTM_SHELL/ttm.sh"; txn_transition SELECT'
expect "txn_commit (none active)" 4 env TTM_MODULE=other bash -c 'source "$TTM_SHELL/ttm.sh"; txn_commit'

# Unknown and malformed ids.
for fn in txn_dir txn_state txn_commit txn_fail init_evidence_vars txn_list_ctx txn_ctx_digest \
          txn_status txn_events txn_resolve_tes flow_get_state flow_status flow_resume \
          flow_list_evidence flow_init_evidence_vars flow_complete; do
    expect "$fn $nope" 3 "$fn" "$nope"
done
expect "txn_transition $nope" 3 txn_transition SELECT "$nope"
expect "txn_add_ctx $nope" 3 txn_add_ctx "$f" x "$nope"
expect "txn_update $nope" 3 txn_update "$nope" '{"a":1}'
expect "flow_transition $nope" 3 flow_transition SELECT "$nope"
expect "flow_update_state $nope" 3 flow_update_state "$nope" '{"a":1}'

# Backward, unknown, and anything on a final transaction.
id=$(txn_create refusals)
expect "txn_state ../x" 2 txn_state ../x
expect "txn_state with a space" 2 txn_state 'a b'
expect "txn_transition to ../x" 2 txn_transition SELECT ../x
txn_transition EXECUTE >/dev/null
if ! txn_transition NEW 2>/dev/null; then echo "refused: backward transition"; fi
expect "backward transition" 4 txn_transition NEW
expect "backward transition" 4 txn_transition SELECT "$id"
expect "same stage" 4 txn_transition EXECUTE
expect "update with an array" 2 txn_update "$id" '[1]'
expect "update of a reserved field" 2 txn_update "$id" '{"stage":"DONE"}'
expect "update with bad JSON" 2 txn_update "$id" '{nope'
expect "unknown target" 3 txn_get_connector @nowhere
txn_commit >/dev/null
expect "commit twice" 4 txn_commit
expect "fail after commit" 4 txn_fail "$id" late
expect "add after commit" 4 txn_add_ctx "$f" late
expect "update after commit" 4 txn_update "$id" '{"a":1}'
expect "transition after commit" 4 txn_transition VALIDATE

# Usage errors.
expect "txn_create without a description" 2 txn_create
expect "txn_transition without a stage" 2 txn_transition
expect "txn_add_ctx without a file" 2 txn_add_ctx
expect "txn_add_ctx of a missing file" 2 txn_add_ctx /nonexistent/file.txt x
expect "txn_add_ctx of a directory" 2 txn_add_ctx "$W" x
expect "txn_update without JSON" 2 txn_update "$id"
expect "txn_get_connector without a target" 2 txn_get_connector
expect "ttm unknown verb" 2 ttm frobnicate
expect "flow_create without a description" 2 flow_create
expect "flow_resume without an id" 2 flow_resume
expect "flow_resume of a missing index" 3 flow_resume 99

# The RAG FSM's refusals.
fid=$(flow_create "refused flow")
expect "NEW→SUBMIT" 4 flow_transition SUBMIT
expect "checkpoint NEW→APPLY" 4 flow_checkpoint APPLY '{"x":1}'
expect "flow_complete --outcome bogus" 2 flow_complete "$fid" --outcome bogus
expect "flow_complete --effort lots" 2 flow_complete "$fid" --effort lots
expect "flow_complete --nope" 2 flow_complete "$fid" --nope
expect "flow_complete --lesson" 2 flow_complete "$fid" --lesson

# No daemon, and a TTM_DIR outside the layout.
expect "ttm_init without a daemon" 7 env TTM_SOCKET="$W/none.sock" bash -c 'source "$TTM_SHELL/ttm.sh"; ttm_init'
expect "TTM_DIR elsewhere" 2 env TTM_DIR=/elsewhere/rag bash -c 'source "$TTM_SHELL/ttm.sh"; txn_active'

# And the successes used above still succeed.
expect "ttm_init" 0 ttm_init
expect "ttm help" 0 ttm help
expect "ttm (no verb)" 0 ttm
[[ $bad -eq 0 ]] && echo "all refusals seen"
"#,
        &[],
    );
    let stdout = out.ok();
    assert!(!stdout.contains("FAIL"), "{stdout}\nstderr: {}", out.stderr);
    assert!(stdout.contains("refused: transition without a transaction"));
    assert!(stdout.contains("refused: backward transition"));
    assert!(stdout.ends_with("all refusals seen"), "{stdout}");
}

#[test]
fn set_e_stops_a_script_at_the_failing_shim() {
    let d = Daemon::start_new();
    // A refused transition: the script stops there with ttmctl's code.
    let out = bash(
        &d,
        &format!(
            "{STRICT}id=$(txn_create stop)
             txn_transition EXECUTE >/dev/null
             echo before
             txn_transition NEW
             echo after"
        ),
        &[],
    );
    assert_eq!(out.code(), 4, "{out:?}");
    assert_eq!(out.stdout.trim(), "before");
    out.stderr_has(&["cannot move from EXECUTE to NEW"]);

    // In a command substitution, in a function, and in a pipeline.
    for (body, code) in [
        ("s=$(txn_state nope-20250101T000000)", 3),
        (
            "step() { txn_commit nope-20250101T000000; echo in-function; }; step",
            3,
        ),
        ("txn_state nope-20250101T000000 | cat", 3),
        ("init_evidence_vars nope-20250101T000000", 3),
        ("flow_transition SELECT", 3),
        ("txn_fail nope-20250101T000000 boom", 3),
    ] {
        let out = bash(
            &d,
            &format!("{STRICT_FLOW}{body}\necho after"),
            &[("TTM_MODULE", "ttm")],
        );
        assert_eq!(out.code(), code, "{body}: {out:?}");
        assert!(!out.stdout.contains("after"), "{body}: {out:?}");
        assert!(!out.stdout.contains("in-function"), "{body}: {out:?}");
    }

    // Without set -e the script goes on and sees the status.
    let out = bash(
        &d,
        "source \"$TTM_SHELL/ttm.sh\"\ntxn_state nope-20250101T000000 >/dev/null 2>&1\necho \"status $?\"",
        &[],
    );
    assert_eq!(out.ok(), "status 3");
}

// ------------------------------------------------------------------- RAG --

#[test]
fn a_rag_flow_walks_its_fsm_and_records_its_outcome() {
    let d = Daemon::start_new();
    fs::write(d.tmp().join("note.md"), "notes\n").unwrap();
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}id=$(flow_create \"how do flows iterate\" researcher)
             [[ $(flow_active) == \"$id\" ]]
             [[ $(bash -c flow_active) == \"$id\" ]]
             for s in SELECT ASSEMBLE SUBMIT; do flow_transition $s >/dev/null; done
             if flow_transition DONE 2>/dev/null; then echo 'SUBMIT→DONE allowed'; exit 1; fi
             for s in APPLY VALIDATE FOLD SUBMIT APPLY; do flow_transition $s >/dev/null; done
             flow_checkpoint VALIDATE '{{\"checked\": true}}' >/dev/null
             flow_transition DONE
             second=$(flow_create \"second flow\")
             flow_checkpoint SELECT >/dev/null
             flow_add_evidence \"$W/../note.md\" notes >/dev/null
             flow_init_evidence_vars >/dev/null
             [[ $e_count == 1 && $e1 == */ctx/100_notes.md ]]
             [[ $(flow_list_evidence) == *$'\\n'100_notes.md* ]]
             flow_complete --outcome partial --lesson \"x\" --lesson \"y\" --artifact out.md --tag t --effort 15
             third=$(flow_create \"third flow\")
             flow_update_state \"$third\" '{{\"lessons\": [\"earlier\"]}}'
             flow_complete \"$third\" --outcome abandoned --lesson later 2>/dev/null >/dev/null
             open=$(flow_create \"open flow\")
             other=$(flow_create \"other flow\")
             [[ $(flow_active) == \"$other\" ]]
             flow_resume 4 >/dev/null
             [[ $(flow_active) == \"$open\" ]]
             flow_resume \"$other\"
             [[ $(flow_active) == \"$other\" ]]
             flow_list >/dev/null
             flow_status \"$id\" >/dev/null
             flow_get_state \"$id\" >/dev/null
             get_active_flow_dir >/dev/null
             printf '%s\\n' \"$id\" \"$second\" \"$third\""
        ),
        // The flow functions use module rag whatever TTM_MODULE says.
        &[("TTM_MODULE", "ttm")],
    );
    let stdout = out.ok();
    assert!(stdout.contains("Transaction transitioned: VALIDATE → DONE"));
    assert!(stdout.contains("⚠ Flow completed"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let [id, second, third] = lines[lines.len() - 3..] else {
        unreachable!()
    };
    assert!(stdout.contains("Resuming flow: other-flow-"), "{stdout}");
    assert!(stdout.contains("\nCurrent stage: NEW\nNo evidence files found"));

    let s = d.state_json("rag", id);
    assert_eq!(s["stage"], "DONE");
    assert_eq!(s["iteration"], 2);
    assert_eq!(s["module"], "rag");
    assert_eq!(s["agent"], "researcher");
    assert_eq!(s["target"], "@local");
    assert_eq!(s["checked"], true);
    // Stage changes: transitions, and the move to DONE (logged as txn_commit).
    let stages: Vec<(String, String)> = check_log(&d.txn_dir("rag", id))
        .iter()
        .filter_map(|e| {
            let to = match e["event"].as_str()? {
                // The commit logs its stage_transition to DONE too.
                "stage_transition" => e["to"].as_str()?,
                _ => return None,
            };
            Some((e["from"].as_str()?.to_owned(), to.to_owned()))
        })
        .collect();
    let path = [
        "NEW", "SELECT", "ASSEMBLE", "SUBMIT", "APPLY", "VALIDATE", "FOLD", "SUBMIT", "APPLY",
        "VALIDATE", "DONE",
    ];
    let expected: Vec<(String, String)> = path
        .windows(2)
        .map(|w| (w[0].to_owned(), w[1].to_owned()))
        .collect();
    assert_eq!(stages, expected);

    let s = d.state_json("rag", second);
    assert_eq!(s["stage"], "DONE");
    assert_eq!(s["outcome"], "partial");
    assert_eq!(s["lessons"], json!(["x", "y"]));
    assert_eq!(s["artifacts"], json!(["out.md"]));
    assert_eq!(s["tags"], json!(["t"]));
    assert_eq!(s["effort_minutes"], 15);
    assert_eq!(s["flow_type"], "inquiry");
    assert_eq!(s["agent"], "base");

    let s = d.state_json("rag", third);
    assert_eq!(s["stage"], "FAIL");
    assert_eq!(s["outcome"], "abandoned");
    assert_eq!(s["lessons"], json!(["earlier", "later"]));
    assert_eq!(s["last_error"], "flow abandoned: later");
    assert_eq!(s["effort_minutes"], 0);

    // Nothing went to the ttm module.
    assert!(!d.root.join("ttm/txns").join(id).exists());
}

// ---------------------------------------------------------------- deploy --

fn deploy(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Out {
    let script = ttm_tests::repo_root().join("examples/deploy.sh");
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = bash_at(&d.root, &d.socket, &d.tmp().join("work"), &all);
    cmd.env("DEPLOY_ROOT", d.tmp().join("deploy"));
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_script(cmd, &d.root)
}

/// The ttm transaction ids, in creation order.
fn ids(d: &Daemon) -> Vec<String> {
    let list = d.ctl(&["--json", "list"]).json();
    list["txns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["txn_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_deploy_example_deploys_and_a_corrupt_upload_fails_it() {
    let d = Daemon::start_new();
    let root = d.tmp().join("deploy");

    let out = deploy(&d, &["1.0.0"], &[]);
    let stdout = out.ok();
    let first = ids(&d).pop().unwrap();
    let s = d.state_json("ttm", &first);
    assert_eq!(s["stage"], "DONE", "{stdout}");
    assert_eq!(s["tes_plan"], "localhost");
    assert_eq!(s["release"], first.as_str());
    let dir = d.txn_dir("ttm", &first);
    let names = ctx_names(&dir);
    assert!(names.contains("100_artifact.tar.gz"), "{names:?}");
    assert!(names.contains("110_manifest.sha256"), "{names:?}");
    let release = root.join("releases").join(&first);
    assert_eq!(fs::read_link(root.join("current")).unwrap(), release);
    assert_eq!(
        fs::read_to_string(release.join("app/VERSION")).unwrap(),
        "1.0.0\n"
    );
    let marker = fs::read_to_string(root.join("restart.marker")).unwrap();
    assert!(marker.starts_with(&format!("txn={first} version=1.0.0 ")));
    assert!(dir.join("artifacts/deployed.sha256").is_file());
    check_log(&dir);

    let out = deploy(&d, &["1.0.1"], &[("DEPLOY_CORRUPT", "1")]);
    assert_eq!(out.code(), 1, "{out:?}");
    let second = ids(&d).pop().unwrap();
    assert_ne!(second, first);
    let s = d.state_json("ttm", &second);
    assert_eq!(s["stage"], "FAIL");
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("checksum mismatch: app/config/app.conf"),
        "{error}"
    );
    // The previous release is live again.
    assert_eq!(fs::read_link(root.join("current")).unwrap(), release);
    check_log(&d.txn_dir("ttm", &second));
}

#[test]
fn the_deploy_example_rolls_back_on_request() {
    let d = Daemon::start_new();
    let id = d.create("a deploy in progress");
    d.ctl(&["transition", "EXECUTE", "-t", &id]).ok();
    deploy(&d, &["rollback", &id, "operator said stop"], &[]).ok();
    let s = d.state_json("ttm", &id);
    assert_eq!(s["stage"], "FAIL");
    assert_eq!(s["last_error"], "operator said stop");

    // A finished deploy cannot be failed any more; the script says so.
    let done = d.create("a finished deploy");
    d.ctl(&["commit", "-t", &done]).ok();
    let out = deploy(&d, &["rollback", &done], &[]);
    assert_eq!(out.code(), 4, "{out:?}");
    assert_eq!(d.state_json("ttm", &done)["stage"], "DONE");
    // An unknown id is not found.
    assert_eq!(
        deploy(&d, &["rollback", "nope-20250101T000000"], &[]).code(),
        3
    );
}

// ------------------------------------------------------ the environment --

#[test]
fn ttm_dir_is_honoured_when_it_follows_the_layout_and_refused_otherwise() {
    let d = Daemon::start_new();
    let id = d.create("old set-up");
    let root = d.root.to_str().unwrap().to_owned();
    let script = "source \"$TTM_SHELL/ttm.sh\"\ntxn_active";
    let with = |vars: &[(&str, String)]| {
        let mut cmd = bash_at(&d.root, &d.socket, &d.tmp().join("work"), &["-c", script]);
        cmd.env_remove("TETRA_DIR");
        for (key, value) in vars {
            cmd.env(key, value);
        }
        run_script(cmd, &d.root)
    };
    for ok in [
        vec![("TTM_DIR", format!("{root}/ttm"))],
        vec![("TTM_DIR", format!("{root}/ttm/"))],
        vec![("TTM_TXNS_DIR", format!("{root}/ttm/txns"))],
        vec![
            ("TTM_DIR", format!("{root}/ttm")),
            ("TTM_TXNS_DIR", format!("{root}/ttm/txns")),
        ],
        vec![
            ("TTM_DIR", format!("{root}/ttm")),
            ("TETRA_DIR", root.clone()),
        ],
    ] {
        assert_eq!(with(&ok).ok(), id, "{ok:?}");
    }
    for (bad, needle) in [
        (vec![("TTM_DIR", format!("{root}/rag"))], "TTM_DIR="),
        (
            vec![("TTM_TXNS_DIR", format!("{root}/rag/flows"))],
            "TTM_TXNS_DIR=",
        ),
        (
            vec![
                ("TTM_DIR", format!("{root}/ttm")),
                ("TTM_TXNS_DIR", "/other/ttm/txns".to_owned()),
            ],
            "name different trees",
        ),
        (
            vec![
                ("TTM_DIR", format!("{root}/ttm")),
                ("TETRA_DIR", "/somewhere/else".to_owned()),
            ],
            "but TETRA_DIR=",
        ),
    ] {
        let out = with(&bad);
        out.expect_code(2).stderr_has(&[needle]);
        assert!(out.stdout.is_empty(), "{bad:?}: {out:?}");
    }
}

#[test]
fn sourcing_sets_only_the_originals_variables_and_keeps_the_callers_options() {
    let d = Daemon::start_new();
    fs::write(d.tmp().join("e.txt"), "e").unwrap();
    for prelude in [
        "set -euo pipefail",
        "set +e +u",
        "set -o noglob; shopt -s nullglob",
    ] {
        let script = format!(
            "{prelude}
             _ttm_before_vars=$(compgen -v | sort)
             _ttm_before_opts=\"$(set +o; shopt -p)\"
             source \"$TTM_SHELL/ttm.sh\"
             source \"$TTM_SHELL/flow_manager_ttm.sh\"
             id=$(txn_create vars)
             txn_add_ctx \"$W/../e.txt\" e >/dev/null
             txn_transition SELECT >/dev/null
             init_evidence_vars >/dev/null
             txn_list_ctx >/dev/null
             txn_resolve_tes >/dev/null
             generate_txn_id x >/dev/null
             ttm_init
             ttm help >/dev/null
             fid=$(flow_create vars)
             flow_complete --lesson l >/dev/null
             txn_commit \"$id\" >/dev/null
             [[ \"$(set +o; shopt -p)\" == \"$_ttm_before_opts\" ]] || echo 'OPTIONS CHANGED'
             comm -13 <(printf '%s\\n' \"$_ttm_before_vars\") <(compgen -v | sort)"
        );
        let out = bash(&d, &script, &[]);
        let stdout = out.ok();
        let new: BTreeSet<&str> = stdout.lines().collect();
        let allowed: BTreeSet<&str> = [
            "_ttm_before_vars",
            "_ttm_before_opts",
            "id",
            "fid",
            "e1",
            "e_count",
            // bash's own, set by any [[ =~ ]].
            "BASH_REMATCH",
            // The original's variables (docs/bash.md, "Variables").
            "TTM_SRC",
            "TTM_DIR",
            "TTM_TXNS_DIR",
            "TTM_CONFIG_DIR",
            "TTM_LOGS_DIR",
            "TTM_MODULE_DIR",
            "TTM_MODULE",
            "_TTM_DERIVED_DIR",
            "_TTM_DERIVED_TXNS_DIR",
            "STAGE_NEW",
            "STAGE_SELECT",
            "STAGE_ASSEMBLE",
            "STAGE_EXECUTE",
            "STAGE_VALIDATE",
            "STAGE_DONE",
            "STAGE_FAIL",
            "STAGE_SUBMIT",
            "STAGE_APPLY",
            "STAGE_FOLD",
        ]
        .into_iter()
        .collect();
        assert!(
            new.is_subset(&allowed),
            "{prelude}: new variables {:?}",
            new.difference(&allowed).collect::<Vec<_>>()
        );
        assert!(new.contains("e_count") && new.contains("e1"), "{new:?}");
    }
}

#[test]
fn generate_txn_id_previews_the_daemons_ids() {
    let d = Daemon::start_new();
    for desc in [
        "Deploy API v2.1.0",
        "  --Hello,   World!! ",
        "ÜBER straße",
        "!!!",
        "abcdefghijklmnopqrstuvwxyz012 456",
    ] {
        let out = bash(
            &d,
            &format!("{STRICT}generate_txn_id \"$D\"; txn_create \"$D\""),
            &[("D", desc)],
        );
        let stdout = out.ok();
        let (preview, real) = stdout.split_once('\n').unwrap();
        // Same slug; the seconds may have ticked between the two.
        let slug = |id: &str| id.rsplit_once('-').unwrap().0.to_owned();
        assert_eq!(slug(preview), slug(real), "{desc:?}");
        assert_eq!(preview.len(), real.len(), "{desc:?}");
    }
}

// ------------------------------------------------------------ the files --

fn shell_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "ttmctl/shell",
        "examples",
        "examples/hooks",
        "scripts",
        "tests/compat",
    ] {
        for entry in fs::read_dir(ttm_tests::repo_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sh") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every shell file parses (`bash -n`) and is shellcheck-clean. Without
/// shellcheck the lint part skips saying so, except under CI, where it
/// fails (`.ci/run` installs shellcheck).
#[test]
fn every_shell_file_parses_and_is_shellcheck_clean() {
    let files = shell_files();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let out = run(
            {
                let mut cmd = Command::new("bash");
                cmd.arg("-n").arg(file);
                cmd
            },
            None,
            CTL_TIMEOUT,
        );
        out.ok();
    }
    if !Need::tool("shellcheck", "shellcheck").met() {
        return;
    }
    let mut cmd = Command::new("shellcheck");
    cmd.arg("-x").args(&files);
    let out = run(cmd, None, CTL_TIMEOUT);
    assert_eq!(
        out.code(),
        0,
        "shellcheck finds fault with the shell files:\n{}{}",
        out.stdout,
        out.stderr
    );
}
