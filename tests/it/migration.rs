//! Issue 16, the daemon's side of "a true drop-in for bash users": a tree
//! the bash version wrote (tests/golden/bash-tree/, with the absolute
//! `active` links it made) is loaded by ttmd and continued by ttmctl and
//! the shims. One test per item; docs/bash.md says what each does.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use ttm_tests::{Daemon, read_events};

use crate::shims::{STRICT, STRICT_FLOW, bash};

/// The bash version's ttm transaction in the fixture.
const BASH_TXN: &str = "fix-the-user-s-login-20251018T090000";
/// The original RAG wrapper's flow, left in EXECUTE.
const BASH_FLOW: &str = "why-is-the-cache-cold-20251018T100000";

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The fixture as the bash version leaves it under `root`: its files, and
/// `active` links written as `ln -sf "$TTM_TXNS_DIR/<id>" active` did.
fn bash_tree(root: &Path) {
    copy_dir(&ttm_tests::repo_root().join("tests/golden/bash-tree"), root);
    for (module, id) in [("ttm", BASH_TXN), ("rag", BASH_FLOW)] {
        let txns = root.join(module).join("txns");
        symlink(txns.join(id), txns.join("active")).unwrap();
    }
}

// Item 1: the bash version's absolute `active` link.
#[test]
fn item1_an_absolute_active_link_into_the_tree_is_adopted_and_one_elsewhere_refused() {
    let d = Daemon::with_tree(bash_tree);
    let out = bash(
        &d,
        &format!(
            "{STRICT}[[ $(txn_active) == {BASH_TXN} ]]
             init_evidence_vars >/dev/null
             [[ $e1 == */'100_error log.txt' && $(<\"$e1\") == 'login failed for user 42' ]]
             txn_transition VALIDATE
             txn_state | grep '\"stage\"'"
        ),
        &[],
    );
    let stdout = out.ok();
    assert!(
        stdout.contains("Transaction transitioned: EXECUTE → VALIDATE"),
        "{stdout}"
    );
    for module in ["ttm", "rag"] {
        let link = fs::read_link(d.root.join(module).join("txns/active")).unwrap();
        assert!(link.is_relative(), "{module}: {}", link.display());
    }
    let log = d.daemon_stderr();
    assert_eq!(
        log.matches("adopted the bash version's absolute").count(),
        2,
        "{log}"
    );
    assert!(!log.contains("ignoring `active`"), "{log}");

    // An absolute link to a transaction of another tree is never followed.
    let elsewhere = d.tmp().join("elsewhere/ttm/txns").join(BASH_TXN);
    copy_dir(&d.root.join("ttm/txns").join(BASH_TXN), &elsewhere);
    let active = d.root.join("ttm/txns/active");
    fs::remove_file(&active).unwrap();
    symlink(&elsewhere, &active).unwrap();
    let before = ttm_tests::snapshot(&elsewhere);
    d.ctl(&["transition", "DONE"]).expect_code(4).stderr_has(&[
        "absolute link to",
        "outside this module",
        "ttmctl activate",
    ]);
    d.ctl(&["active"]).expect_code(4);
    d.ctl(&["list"]).ok(); // listing still works; nothing is marked active
    assert_eq!(fs::read_link(&active).unwrap(), elsewhere);
    ttm_tests::assert_same_tree(&before, &ttm_tests::snapshot(&elsewhere), "outside");
    d.ctl(&["activate", BASH_TXN]).ok();
    assert_eq!(fs::read_link(&active).unwrap(), Path::new(BASH_TXN));

    // One a bash script writes while ttmd runs is adopted at the next request.
    let rag_active = d.root.join("rag/txns/active");
    fs::remove_file(&rag_active).unwrap();
    symlink(d.root.join("rag/txns").join(BASH_FLOW), &rag_active).unwrap();
    assert_eq!(d.ctl(&["--module", "rag", "active"]).ok(), BASH_FLOW);
    assert_eq!(fs::read_link(&rag_active).unwrap(), Path::new(BASH_FLOW));
}

// Item 2 (and issue 15 item 11): a fresh tree.
#[test]
fn item2_a_fresh_tree_has_the_default_module_and_lists_nothing() {
    let d = Daemon::start_new();
    assert!(d.root.join("ttm/txns").is_dir());
    let out = d.ctl(&["list"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let out = d.ctl(&["--module", "rag", "--json", "list"]);
    assert_eq!(out.json()["txns"], serde_json::json!([]), "{out:?}");
    // Nor is there anything to archive, collect or migrate in it.
    for args in [["archive"], ["gc"], ["migrate"]] {
        let out = d.ctl(&[&["--module", "rag"][..], &args[..]].concat());
        let said = out.ok();
        assert!(
            said.contains(" 0 transaction(s)") || said.starts_with("nothing to "),
            "{args:?}: {out:?}"
        );
    }
    // Reading a module that does not exist yet creates nothing.
    assert!(!d.root.join("rag").exists());
    // A mutation naming an unknown transaction is still NOT_FOUND.
    d.ctl(&["--module", "rag", "commit", "--txn", "nope-20250101T000000"])
        .expect_code(3);
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}ttm_init
             flow_list
             TTM_MODULE=ttm txn_list"
        ),
        &[],
    );
    let stdout = out.ok();
    assert!(stdout.contains("Flows:\n"), "{stdout}");
    assert!(stdout.contains("  (none)\n"), "{stdout}");
    assert!(stdout.contains("Transactions:\n"), "{stdout}");
}

// Item 9: commit and fail log the stage_transition the bash version did.
#[test]
fn item9_commit_and_fail_log_a_stage_transition_to_done_or_fail() {
    let mut d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}ok=$(txn_create ok); txn_transition EXECUTE >/dev/null
             txn_commit >/dev/null
             txn_events \"$ok\" stage_transition | grep -q '\"to\":\"DONE\"'
             bad=$(txn_create bad)
             txn_fail \"$bad\" boom >/dev/null 2>&1
             txn_events \"$bad\" stage_transition | grep -q '\"to\":\"FAIL\"'
             moved=$(txn_create moved)
             txn_transition DONE >/dev/null
             txn_events \"$moved\" stage_transition | grep -q '\"to\":\"DONE\"'
             printf '%s\\n' \"$ok\" \"$bad\""
        ),
        &[],
    );
    let stdout = out.ok();
    let ids: Vec<&str> = stdout.lines().collect();
    let events = read_events(&d.txn_dir("ttm", ids[0]));
    let n = events.len();
    assert_eq!(events[n - 2]["event"], "stage_transition");
    assert_eq!(
        (&events[n - 2]["from"], &events[n - 2]["to"]),
        (&"EXECUTE".into(), &"DONE".into())
    );
    assert_eq!(events[n - 1]["event"], "txn_commit");
    assert!(events[n - 1]["duration_ms"].is_u64());
    assert_eq!(events[n - 1]["seq"], n as u64);
    let events = read_events(&d.txn_dir("ttm", ids[1]));
    let n = events.len();
    assert_eq!(events[n - 2]["to"], "FAIL");
    assert_eq!(events[n - 1]["error"], "boom");
    d.assert_state_is_fold("ttm", ids[0]);
    d.assert_state_is_fold("ttm", ids[1]);

    // A retried commit answers once, also after a restart.
    let id = d.create("retried");
    let first = d.ctl(&["--json", "commit", "--txn", &id, "--request-id", "c1"]);
    let lines = read_events(&d.txn_dir("ttm", &id)).len();
    d.restart();
    let again = d.ctl(&["--json", "commit", "--txn", &id, "--request-id", "c1"]);
    assert_eq!(first.json(), again.json(), "{first:?} {again:?}");
    assert_eq!(read_events(&d.txn_dir("ttm", &id)).len(), lines);
    d.ctl(&["status", "--txn", &id]).ok();
}

// Item 10: evidence names.
#[test]
fn item10_evidence_keeps_a_dotfiles_extension_and_refuses_a_directory_with_a_hint() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}id=$(txn_create names)
             printf x >\"$W/a.txt\"; printf y >\"$W/app.tar.gz\"; printf z >\"$W/.env\"
             mkdir -p \"$W/dir\"
             txn_add_ctx \"$W/a.txt\" \"my artifact\"
             txn_add_ctx \"$W/app.tar.gz\" artifact
             txn_add_ctx \"$W/.env\" secrets
             rc=0; txn_add_ctx \"$W/dir\" tree 2>\"$W/err\" || rc=$?
             echo \"directory: $rc $(<\"$W/err\")\"
             init_evidence_vars >/dev/null
             [[ $(<\"$e3\") == z ]]"
        ),
        &[],
    );
    let stdout = out.ok();
    for needle in [
        "Added context: 100_my-artifact.txt\n",
        "Added context: 110_artifact.tar.gz\n",
        "Added context: 120_secrets.env\n",
        "directory: 2 ",
        "is a directory; archive it first",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}

// Item 11: the ctx templates are the original's, for ttm and for RAG.
#[test]
fn item11_create_writes_the_originals_policy_request_and_rags_prompt() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}id=$(TTM_MODULE=ttm txn_create \"fix the user's login\" @staging)
             fid=$(flow_create \"why is the cache cold?\" 2>/dev/null)
             printf '%s\\n' \"$id\" \"$fid\""
        ),
        &[],
    );
    let stdout = out.ok();
    let ids: Vec<&str> = stdout.lines().collect();
    let fixture = ttm_tests::repo_root().join("tests/golden/bash-tree");
    let read = |p: &Path| fs::read_to_string(p).unwrap();
    let ctx = d.txn_dir("ttm", ids[0]).join("ctx");
    let bash_ctx = fixture.join("ttm/txns").join(BASH_TXN).join("ctx");
    for name in ["000_policy.md", "010_request.md"] {
        assert_eq!(read(&ctx.join(name)), read(&bash_ctx.join(name)), "{name}");
    }
    let ctx = d.txn_dir("rag", ids[1]).join("ctx");
    let bash_ctx = fixture.join("rag/txns").join(BASH_FLOW).join("ctx");
    assert_eq!(
        read(&ctx.join("000_policy.md")),
        read(&bash_ctx.join("000_policy.md"))
    );
    assert_eq!(
        read(&ctx.join("010_prompt.user.md")),
        read(&bash_ctx.join("010_prompt.user.md")).replace(BASH_FLOW, ids[1])
    );
    // Nothing a script feeds to a model speaks of ttmd.
    for dir in [d.txn_dir("ttm", ids[0]), d.txn_dir("rag", ids[1])] {
        for entry in fs::read_dir(dir.join("ctx")).unwrap() {
            let text = read(&entry.unwrap().path());
            assert!(!text.contains("ttmd"), "{text}");
        }
    }
}

// Item 13: a flow the original RAG wrapper left in EXECUTE continues.
#[test]
fn item13_a_legacy_flow_in_execute_is_migrated_and_continues() {
    let d = Daemon::with_tree(bash_tree);
    let rag = |args: &[&str]| {
        let mut all = vec!["--module", "rag"];
        all.extend_from_slice(args);
        d.ctl(&all)
    };
    // Refused, with every move that is allowed, commit included.
    rag(&["transition", "APPLY", "--txn", BASH_FLOW])
        .expect_code(4)
        .stderr_has(&[
            "allowed next stages: FAIL, DONE (with `commit`)",
            "ttmctl migrate",
        ]);
    let dir = d.txn_dir("rag", BASH_FLOW);
    let lines = read_events(&dir).len();
    // A dry run by default: says what it would do, does nothing.
    let dry = rag(&["migrate"]).ok();
    assert_eq!(
        dry,
        format!(
            "would move 1 transaction(s) (dry run; add --yes to do it)\n  {BASH_FLOW}  EXECUTE → SUBMIT"
        )
    );
    assert_eq!(read_events(&dir).len(), lines);
    assert_eq!(d.state_json("rag", BASH_FLOW)["stage"], "EXECUTE");
    let done = rag(&["migrate", "--yes"]).ok();
    assert!(done.starts_with("moved 1 transaction(s)\n"), "{done}");
    let events = read_events(&dir);
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["from"], &last["to"]),
        (
            &"stage_migrated".into(),
            &"EXECUTE".into(),
            &"SUBMIT".into()
        )
    );
    assert_eq!(
        rag(&["migrate"]).ok().lines().next(),
        Some("would move 0 transaction(s) (dry run; add --yes to do it)")
    );
    // The bash version's ttm transaction had nothing to migrate.
    assert!(d.ctl(&["migrate"]).ok().starts_with("would move 0"));
    // The shims carry the flow on to the end.
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}[[ $(flow_active) == {BASH_FLOW} ]]
             flow_transition APPLY >/dev/null
             flow_transition VALIDATE >/dev/null
             flow_complete --lesson 'warm it first' >/dev/null
             txn_events {BASH_FLOW} stage_transition | grep -c '\"to\":\"DONE\"'"
        ),
        &[],
    );
    assert_eq!(out.ok(), "1");
    let s = d.state_json("rag", BASH_FLOW);
    assert_eq!(
        (s["stage"].as_str(), s["agent"].as_str()),
        (Some("DONE"), Some("base"))
    );
}

// Item 9's sibling: the two lines of a commit are one append; a crash that
// keeps only the first leaves nothing half-done behind.
#[test]
fn item9_a_commit_cut_short_after_its_stage_transition_is_undone_at_start_up() {
    let mut d = Daemon::start_new();
    let id = d.create("torn");
    d.ctl(&["transition", "EXECUTE"]).ok();
    d.stop();
    let log = d.txn_dir("ttm", &id).join("events.ndjson");
    let before = fs::read_to_string(&log).unwrap();
    let seq = before.lines().count() + 1;
    let half = format!(
        "{{\"ts\":\"2025-10-18T09:00:00.000Z\",\"event\":\"stage_transition\",\"seq\":{seq},\"from\":\"EXECUTE\",\"to\":\"DONE\"}}\n{{\"ts\":\"2025-10"
    );
    fs::write(&log, format!("{before}{half}")).unwrap();
    d.start();
    assert_eq!(fs::read_to_string(&log).unwrap(), before);
    assert_eq!(d.state_json("ttm", &id)["stage"], "EXECUTE");
    assert!(
        d.daemon_stderr()
            .contains("whose txn_commit/txn_fail a crash lost")
    );
    // The client's retry of the commit it never saw answered goes through.
    d.ctl(&["commit", "--request-id", "c1"]).ok();
    let events = read_events(&d.txn_dir("ttm", &id));
    let kinds: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["stage_transition", "txn_commit"]);

    // A bash-written transition into DONE (no seq) is the bash version's
    // own record and stays.
    let other = d.create("bash done");
    d.stop();
    let log = d.txn_dir("ttm", &other).join("events.ndjson");
    let mut text = fs::read_to_string(&log).unwrap();
    text.push_str("{\"ts\":\"2025-10-18T09:00:00Z\",\"event\":\"stage_transition\",\"from\":\"NEW\",\"to\":\"DONE\"}\n");
    fs::write(&log, &text).unwrap();
    d.start();
    assert_eq!(fs::read_to_string(&log).unwrap(), text);
    assert_eq!(d.state_json("ttm", &other)["stage"], "DONE");
}

// Item 9's sibling in the shims: a subscription to the original's
// txn.stage_changed hears a commit once, as the original published it once.
#[test]
fn item9_txn_stage_changed_is_heard_once_per_commit() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}id=$(txn_create heard)
             seen() {{ printf '%s\\n' \"$1\" >>\"$W/seen\"; }}
             ttm_subscribe txn.stage_changed seen
             txn_transition EXECUTE >/dev/null
             txn_commit >/dev/null
             for _ in $(seq 100); do
                 [[ -f $W/seen && $(wc -l <\"$W/seen\") -ge 2 ]] && break
                 sleep 0.1
             done
             sleep 0.5    # a txn_commit heard too would come with its transition
             ttm_unsubscribe
             cat \"$W/seen\""
        ),
        &[],
    );
    assert_eq!(out.ok(), "stage_transition\nstage_transition");
}
