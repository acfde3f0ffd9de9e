//! Issue 16, "a true drop-in for bash users": scripts written for the
//! ORIGINAL bash TTM and RAG's flow scripts run unchanged on the shims. One
//! test per shim-side item, each a real bash under `set -euo pipefail`
//! against the real daemon, and a legacy script (tests/compat/) under
//! `set -e`. docs/bash.md says what each item does.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use ttm_tests::Daemon;

use crate::shims::{STRICT, STRICT_FLOW, bash, bash_at, run_script, shell_dir};

fn compat_dir() -> PathBuf {
    ttm_tests::repo_root().join("tests/compat")
}

// Item 3: the original's variables and the read-only stage constants.
#[test]
fn item3_the_originals_variables_and_stage_constants_are_set_on_source() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}source \"$TTM_SHELL/ttm.sh\"   # twice: the readonly guard
             [[ $TTM_DIR == \"$TETRA_DIR/ttm\" ]] || {{ echo \"TTM_DIR=$TTM_DIR\"; exit 1; }}
             [[ $TTM_TXNS_DIR == \"$TETRA_DIR/ttm/txns\" ]]
             [[ $TTM_CONFIG_DIR == \"$TTM_DIR/config\" && $TTM_LOGS_DIR == \"$TTM_DIR/logs\" ]]
             [[ $TTM_SRC -ef $TTM_SHELL && $TTM_MODULE_DIR -ef $TTM_SHELL ]]
             [[ $(bash -c 'printf %s \"$TTM_TXNS_DIR\"') == \"$TTM_TXNS_DIR\" ]]  # exported
             printf '%s ' \"$STAGE_NEW\" \"$STAGE_SELECT\" \"$STAGE_ASSEMBLE\" \"$STAGE_EXECUTE\" \\
                 \"$STAGE_VALIDATE\" \"$STAGE_DONE\" \"$STAGE_FAIL\"; echo
             if (STAGE_EXECUTE=x) 2>/dev/null; then echo 'STAGE_EXECUTE is writable'; exit 1; fi
             id=$(txn_create \"constants\")
             txn_transition \"$STAGE_EXECUTE\"
             [[ -d $TTM_TXNS_DIR/$id ]]
             # A TETRA_DIR set after sourcing still wins over the derived TTM_DIR.
             rc=0; TETRA_DIR=$W/elsewhere txn_active >/dev/null 2>&1 || rc=$?; [[ $rc -ne 2 ]]
             txn_active"
        ),
        &[],
    );
    let stdout = out.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0].trim_end(),
        "NEW SELECT ASSEMBLE EXECUTE VALIDATE DONE FAIL"
    );
    assert!(stdout.contains("Transaction transitioned: NEW → EXECUTE"));
    let id = lines.last().unwrap();
    assert_eq!(d.state_json("ttm", id)["stage"], "EXECUTE");

    // Values the user exported are kept (and honoured when in the layout).
    let root = d.root.to_str().unwrap();
    let out = bash(
        &d,
        &format!(
            "{STRICT}[[ $TTM_DIR == \"$TETRA_DIR/ttm\" && $TTM_CONFIG_DIR == /etc/ttm ]]
             [[ $TTM_SRC == /opt/old/ttm ]]
             txn_active"
        ),
        &[
            ("TTM_DIR", &format!("{root}/ttm")),
            ("TTM_CONFIG_DIR", "/etc/ttm"),
            ("TTM_SRC", "/opt/old/ttm"),
        ],
    );
    assert_eq!(out.ok(), *id);
}

// Item 4: ttm_publish, ttm_subscribe, ttm_unsubscribe.
#[test]
fn item4_ttm_publish_appends_an_event_and_ttm_subscribe_runs_a_handler_until_unsubscribed() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}id=$(txn_create \"pubsub\")
             seen() {{ printf '%s %s\\n' \"$1\" \"$2\" >>\"$W/seen\"; }}
             ttm_subscribe deploy.step seen
             sub=$!
             ttm_subscribe txn.stage_changed seen
             ttm_publish deploy.step \"$id\" uploading
             ttm_publish deploy.other \"\" '{{\"n\": 1}}'
             txn_transition SELECT >/dev/null
             for _ in $(seq 100); do
                 [[ -f $W/seen && $(wc -l <\"$W/seen\") -ge 2 ]] && break
                 sleep 0.1
             done
             ttm_unsubscribe deploy.step seen
             if kill -0 \"$sub\" 2>/dev/null; then echo 'still subscribed'; exit 1; fi
             ttm_publish deploy.step \"$id\" late
             txn_transition EXECUTE >/dev/null
             for _ in $(seq 100); do
                 [[ $(wc -l <\"$W/seen\") -ge 3 ]] && break
                 sleep 0.1
             done
             sleep 0.5
             ttm_unsubscribe
             [[ -z $(jobs -p) ]] || {{ echo 'jobs left'; exit 1; }}
             sort \"$W/seen\"
             echo \"$id\""
        ),
        &[],
    );
    let stdout = out.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    let id = lines.last().unwrap();
    assert_eq!(
        lines[..lines.len() - 1],
        [
            format!("deploy.step {id}"),
            format!("stage_transition {id}"),
            format!("stage_transition {id}"),
        ],
        "{stdout}"
    );
    let events = ttm_tests::read_events(&d.txn_dir("ttm", id));
    let steps: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "deploy.step")
        .map(|e| e["data"]["value"].clone())
        .collect();
    assert_eq!(steps, ["uploading", "late"]);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "deploy.other" && e["data"]["n"] == 1)
    );
    // Nothing is left following the log.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("events --follow --txn={id}")])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    assert!(!left, "a subscription outlived ttm_unsubscribe");
}

// Item 4: the flow manager's missing functions.
#[test]
fn item4_the_flow_manager_has_flow_inspect_list_all_promote_and_the_rag_dirs() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}[[ $(get_rag_dir) == \"$TETRA_DIR/rag\" && $(get_rag_dir global) == \"$TETRA_DIR/rag\" ]]
             [[ $(get_flows_dir) == \"$TETRA_DIR/rag/txns\" ]]
             id=$(flow_create \"inspect me\" 2>/dev/null)
             [[ -f $(get_flows_dir)/$id/state.json ]]
             flow_complete \"$id\" --lesson \"keep it small\" --tag t >/dev/null
             flow_inspect \"$id\"
             flow_list_all
             flow_promote \"$id\"
             if flow_promote nope-20250101T000000 2>/dev/null; then exit 1; else echo \"promote nope: $?\"; fi"
        ),
        &[],
    );
    let stdout = out.ok();
    for needle in [
        "Flow: inspect-me-",
        "Stage: DONE",
        "Outcome: success",
        "Lessons:\n  - keep it small",
        "Tags:\n  - t",
        "Context files:\n000_policy.md",
        "\nFlows:\n",
        ". inspect-me-",
        "✓ Flow is already global: inspect-me-",
        "promote nope: 3",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}

// Item 5: after sourcing the flow manager, txn_* act on the flows.
#[test]
fn item5_txn_functions_act_on_the_flows_after_sourcing_the_flow_manager() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}fid=$(flow_create \"a question\" 2>/dev/null)
             txn_state \"$fid\" >/dev/null          # RAG's tdocs_query.sh does this
             [[ $(txn_active) == \"$fid\" && $TTM_MODULE == rag ]]
             [[ $TTM_TXNS_DIR == \"$TETRA_DIR/rag/txns\" && -d $TTM_TXNS_DIR/$fid ]]
             txn_transition SELECT >/dev/null
             [[ $(bash -c 'txn_active') == \"$fid\" ]]   # children too
             echo \"$fid\""
        ),
        &[],
    );
    let fid = out.ok();
    assert_eq!(d.state_json("rag", &fid)["stage"], "SELECT");

    // A module the user set explicitly is kept.
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}id=$(txn_create \"still ttm\"); [[ $TTM_MODULE == ttm ]]; echo \"$id\""
        ),
        &[("TTM_MODULE", "ttm")],
    );
    let id = out.ok();
    assert_eq!(d.state_json("ttm", &id)["module"], "ttm");
}

// Item 6: the flow manager copied or linked into $RAG_SRC/core/.
#[test]
fn item6_the_flow_manager_finds_ttm_sh_when_copied_or_linked_elsewhere() {
    let d = Daemon::start_new();
    let work = d.tmp().join("work");
    let core = work.join("rag/core");
    fs::create_dir_all(&core).unwrap();
    let fm = shell_dir().join("flow_manager_ttm.sh");
    fs::copy(&fm, core.join("flow_manager_ttm.sh")).unwrap();
    symlink(&fm, core.join("linked.sh")).unwrap();
    // A ttmctl that is not in the repository, and an install prefix beside it.
    let bin = work.join("prefix/bin");
    fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("ttmctl");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            ttm_tests::ttmctl_bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = |file: &str| {
        format!(
            "set -euo pipefail\nsource \"$W/rag/core/{file}\"\nid=$(flow_create dropped 2>/dev/null)\ntxn_state \"$id\" >/dev/null\necho \"$TTM_SRC\""
        )
    };
    let with = |file: &str, env: &[(&str, &str)]| {
        let mut cmd = bash_at(&d.root, &d.socket, &work, &["-c", &script(file)]);
        cmd.env("HOME", &work)
            .env("PATH", "/usr/bin:/bin")
            .env_remove("TTM_SRC");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_script(cmd, &d.root)
    };
    let shell = fs::canonicalize(shell_dir()).unwrap();
    let shell = shell.to_str().unwrap();
    // A symbolic link: ttm.sh is beside the file it points to.
    assert_eq!(with("linked.sh", &[]).ok(), shell);
    // A copy: found through $TTM_SRC, then through the repository's ttmctl.
    assert_eq!(
        with("flow_manager_ttm.sh", &[("TTM_SRC", shell)]).ok(),
        shell
    );
    assert_eq!(with("flow_manager_ttm.sh", &[]).ok(), shell);
    // Nowhere to be found: a clear message naming what was tried.
    let wrapper_s = wrapper.to_str().unwrap();
    let out = with("flow_manager_ttm.sh", &[("TTMCTL", wrapper_s)]);
    out.expect_code(1).stderr_has(&[
        "cannot find the TTM shims' ttm.sh; tried:",
        "/rag/core/ttm.sh",
        "/prefix/bin/../share/ttm/ttm.sh",
        "/.local/share/ttm/ttm.sh",
        "/usr/bin/ttm.sh",
    ]);
    // An $TTM_SRC naming the original bash TTM is passed over.
    let old = work.join("old-ttm");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("ttm.sh"), "echo ORIGINAL >&2; exit 9\n").unwrap();
    with(
        "flow_manager_ttm.sh",
        &[("TTMCTL", wrapper_s), ("TTM_SRC", old.to_str().unwrap())],
    )
    .expect_code(1)
    .stderr_has(&["old-ttm/ttm.sh"]);
    // Installed by scripts/install.sh under the prefix ttmctl is in.
    let share = work.join("prefix/share/ttm");
    fs::create_dir_all(&share).unwrap();
    fs::copy(shell_dir().join("ttm.sh"), share.join("ttm.sh")).unwrap();
    let share_s = fs::canonicalize(&share).unwrap();
    assert_eq!(
        with("flow_manager_ttm.sh", &[("TTMCTL", wrapper_s)]).ok(),
        share_s.to_str().unwrap()
    );
}

// Item 8: `if txn_events ID TYPE` is false when nothing matched.
#[test]
fn item8_txn_events_returns_1_when_no_event_matches() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}id=$(txn_create events)
             if txn_events \"$id\" txn_commit; then echo 'matched nothing but returned 0'; exit 1; fi
             rc=0; txn_events \"$id\" txn_commit >/dev/null || rc=$?; echo \"no match: $rc\"
             txn_events \"$id\" txn_start | grep -c '\"event\":\"txn_start\"'
             txn_events \"$id\" | wc -l
             rc=0; txn_events nope-20250101T000000 txn_start 2>/dev/null || rc=$?; echo \"unknown id: $rc\"
             rc=0; txn_events 'Bad Id' 2>/dev/null || rc=$?; echo \"bad id: $rc\""
        ),
        &[],
    );
    assert_eq!(
        out.ok(),
        "no match: 1\n1\n2\nunknown id: 3\nbad id: 2",
        "{out:?}"
    );
}

// Item 12: the original's listing and status formats.
#[test]
fn item12_listings_and_status_print_the_originals_formats() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT_FLOW}export TTM_MODULE=ttm
             a=$(txn_create \"first txn\"); b=$(txn_create \"second txn\")
             txn_list
             txn_status \"$a\"
             f1=$(flow_create \"first flow\" 2>\"$W/banner\"); f2=$(flow_create \"second flow\" 2>/dev/null)
             [[ $f1 =~ ^first-flow-[0-9]{{8}}T[0-9]{{6}}(-[0-9]+)?$ ]]
             cat \"$W/banner\"
             flow_transition SELECT >/dev/null
             flow_list
             flow_list SELECT
             flow_resume 1 >/dev/null
             [[ $(flow_active) == \"$f1\" ]]
             flow_status
             printf '%s\\n' \"$a\" \"$b\" \"$f1\" \"$f2\""
        ),
        &[],
    );
    let stdout = out.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    let [a, b, f1, f2] = lines[lines.len() - 4..] else {
        unreachable!()
    };
    let rule = "────────────────────────────────────────────────────────";
    let expected_txn_list = format!(
        "Transactions:\n{rule}\n  {a:<40}  NEW         first txn\n→ {b:<40}  NEW         second txn\n"
    );
    assert!(stdout.starts_with(&expected_txn_list), "{stdout}");
    for needle in [
        format!(
            "Transaction: {a}\nDescription: first txn\nStage: NEW\nTarget: @local\nIteration: 1\nAgent: human\nContext digest: "
        ),
        "\n\nRecent events:\n  [".to_owned(),
        "] txn_start\n".to_owned(),
        "\nContext files:\n  000_policy.md\n  010_request.md\n".to_owned(),
        format!("Flow created: {f1}\nPrompt: first flow\nDirectory: "),
        format!(
            "Flows:\n{rule}\n  1. {f1:<38}  NEW         first flow\n→ 2. {f2:<38}  SELECT      second flow\n\nTip: Use '/flow resume <number>' to resume by index\n"
        ),
        // A filter keeps each flow's number: flow_resume N is the flow shown as N.
        format!("Flows:\n{rule}\n→ 2. {f2:<38}  SELECT      second flow\n\nTip:"),
        format!(
            "Flow: {f1} (active)\nDescription: first flow\nStage: NEW\nIteration: 1\nAgent: base\nTarget: @local\nContext digest: "
        ),
        format!(
            "\nDirectories:\n  RAG_DIR={root}/rag\n  TXNS_DIR={root}/rag/txns\n  flow={f1}\n",
            root = d.root.display()
        ),
    ] {
        assert!(stdout.contains(&needle), "no {needle:?} in:\n{stdout}");
    }
    // flow_create's stdout is the id alone.
    let out = bash(
        &d,
        &format!("{STRICT_FLOW}flow_create solo 2>/dev/null"),
        &[],
    );
    let solo = out.ok();
    assert!(
        solo.starts_with("solo-") && !solo.contains('\n'),
        "{solo:?}"
    );
}

// Item 14: `ttm fail "message"` fails the active transaction.
#[test]
fn item14_ttm_fail_with_only_a_message_fails_the_active_transaction() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}id=$(txn_create \"quick start\")
             ttm fail \"disk full\" 2>/dev/null
             other=$(txn_create other); keep=$(txn_create keep)
             ttm fail \"$other\" \"by id\" 2>/dev/null       # the id form still works
             ttm fail oops 2>/dev/null                      # a word that is no id: a message
             printf '%s\\n' \"$id\" \"$other\" \"$keep\""
        ),
        &[],
    );
    let stdout = out.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    let [id, other, keep] = lines[lines.len() - 3..] else {
        unreachable!()
    };
    let s = d.state_json("ttm", id);
    assert_eq!(
        (s["stage"].as_str(), s["last_error"].as_str()),
        (Some("FAIL"), Some("disk full"))
    );
    let s = d.state_json("ttm", other);
    assert_eq!(s["last_error"], "by id");
    let s = d.state_json("ttm", keep);
    assert_eq!(s["last_error"], "oops");
}

// The legacy script, unchanged, under set -e.
#[test]
fn a_legacy_script_from_the_docs_runs_unchanged_under_set_e() {
    let d = Daemon::start_new();
    let work = d.tmp().join("work");
    let script = compat_dir().join("legacy_deploy.sh");
    let mut cmd = bash_at(&d.root, &d.socket, &work, &[script.to_str().unwrap()]);
    cmd.env("TTM_SH", shell_dir().join("ttm.sh"))
        .env("WORK", &work);
    let out = run_script(cmd, &d.root);
    let stdout = out.ok();
    let last = stdout.lines().last().unwrap();
    let ids = last
        .strip_prefix("legacy script done: ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let (done, failed) = ids.split_once(' ').unwrap();
    assert_eq!(d.state_json("ttm", done)["stage"], "DONE");
    assert_eq!(
        d.state_json("ttm", failed)["last_error"],
        "health check failed"
    );
}

// The original test suite's first check: ttm_init leaves $TETRA_DIR/ttm/txns
// on a fresh tree. The shims cannot create it (only ttmd writes the tree);
// ttmd makes the default module when it starts (issue 16 item 2).
#[test]
fn the_original_suites_first_check_sees_ttm_txns_after_ttm_init() {
    let d = Daemon::start_new();
    let out = bash(
        &d,
        &format!(
            "{STRICT}ttm_init\n[[ -d $TETRA_DIR/ttm/txns ]]\n[[ -z $(txn_list | tail -n +3) ]]"
        ),
        &[],
    );
    out.ok();
}
