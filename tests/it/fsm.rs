//! Stages and transitions: the default FSM and a module's own fsm.json.

use std::fs;

use ttm_tests::{Daemon, assert_same_tree, check_log};

/// RAG's stages and edges (SPEC §11), as ttmd ships them. The tests below
/// put them in the `fsm.json` of a module that has no built-in FSM, so
/// only the file can make them hold.
const RAG_FSM: &str = include_str!("../../core/fsm/rag.json");

#[test]
fn backward_is_refused_and_skipping_forward_is_allowed() {
    let d = Daemon::start_new();
    let id = d.create("fsm");
    // The bash quick start: NEW → EXECUTE.
    d.ctl(&["transition", "EXECUTE"]).ok();
    assert_eq!(d.state_json("ttm", &id)["stage"], "EXECUTE");

    let before = d.snapshot();
    for back in ["SELECT", "NEW", "EXECUTE"] {
        d.ctl(&["transition", back])
            .expect_code(4)
            .stderr_has(&["EXECUTE", "VALIDATE"]);
        assert_same_tree(&before, &d.snapshot(), &format!("transition {back}"));
    }
    d.ctl(&["transition", "VALIDATE"]).ok();
    d.ctl(&["transition", "DONE"]).ok();
    let events = check_log(&d.txn_dir("ttm", &id));
    // `transition DONE` is a commit.
    assert_eq!(events.last().unwrap()["event"], "txn_commit");
    assert!(events.last().unwrap()["duration_ms"].is_u64());
}

#[test]
fn fail_from_every_non_terminal_stage() {
    let mut d = Daemon::start_new();
    let mut ids = Vec::new();
    for stage in ["NEW", "SELECT", "ASSEMBLE", "EXECUTE", "VALIDATE"] {
        let id = d
            .ctl(&["create", &format!("fail at {stage}"), "--no-activate"])
            .ok();
        if stage != "NEW" {
            d.ctl(&["transition", stage, "-t", &id]).ok();
        }
        let message = format!("broke in {stage}: \"quoted\"");
        d.ctl(&["fail", &message, "-t", &id]).ok();
        let s = d.state_json("ttm", &id);
        assert_eq!(s["stage"], "FAIL", "from {stage}");
        assert_eq!(s["last_error"], message.as_str(), "from {stage}");
        let events = check_log(&d.txn_dir("ttm", &id));
        let last = events.last().unwrap();
        assert_eq!(last["event"], "txn_fail");
        assert_eq!(last["error"], message.as_str());
        // FAIL is final for everything but retry.
        d.ctl(&["transition", "VALIDATE", "-t", &id]).expect_code(4);
        d.ctl(&["commit", "-t", &id]).expect_code(4);
        d.ctl(&["fail", "again", "-t", &id]).expect_code(4);
        ids.push(id);
    }
    for id in &ids {
        d.assert_state_is_fold("ttm", id);
    }
}

#[test]
fn retry_goes_back_and_counts_iterations() {
    let d = Daemon::start_new();
    let id = d.create("retry me");
    let dir = d.txn_dir("ttm", &id);
    // Only a FAIL transaction can be retried.
    d.ctl(&["retry"]).expect_code(4);

    d.ctl(&["transition", "EXECUTE"]).ok();
    d.ctl(&["fail", "first"]).ok();
    d.ctl(&["retry"]).ok();
    let s = d.state_json("ttm", &id);
    assert_eq!(s["stage"], "NEW");
    assert_eq!(s["iteration"], 2);
    let events = check_log(&dir);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "txn_retry");
    assert_eq!(last["iteration"], 2);

    d.ctl(&["fail", "second"]).ok();
    // Not into a terminal or unknown stage.
    d.ctl(&["retry", "--to", "DONE"]).expect_code(4);
    d.ctl(&["retry", "--to", "NOPE"]).expect_code(4);
    d.ctl(&["retry", "--to", "EXECUTE"]).ok();
    let s = d.state_json("ttm", &id);
    assert_eq!(s["stage"], "EXECUTE");
    assert_eq!(s["iteration"], 3);
    let events = check_log(&dir);
    assert_eq!(events.last().unwrap()["to"], "EXECUTE");
    assert_eq!(events.last().unwrap()["iteration"], 3);
    d.ctl(&["commit"]).ok();
}

#[test]
fn a_module_fsm_json_is_enforced() {
    let mut d = Daemon::with_tree(|root| {
        fs::create_dir_all(root.join("flows")).unwrap();
        fs::write(root.join("flows/fsm.json"), RAG_FSM).unwrap();
    });
    let rag = |args: &[&str]| {
        let mut all = vec!["-m", "flows"];
        all.extend_from_slice(args);
        d.ctl(&all)
    };
    let id = rag(&["create", "rag flow"]).ok();
    // The default module does not see it.
    d.ctl(&["state", "-t", &id]).expect_code(3);

    // SELECT → SUBMIT is forward, but not an edge.
    rag(&["transition", "SELECT"]).ok();
    let before = d.snapshot();
    rag(&["transition", "SUBMIT"])
        .expect_code(4)
        .stderr_has(&["SELECT", "ASSEMBLE"]);
    rag(&["transition", "EXECUTE"]).expect_code(4);
    assert_same_tree(&before, &d.snapshot(), "non-edges");

    // ASSEMBLE → SELECT is a declared back edge.
    for stage in ["ASSEMBLE", "SELECT", "ASSEMBLE", "SUBMIT", "APPLY", "FOLD"] {
        rag(&["transition", stage]).ok();
        assert_eq!(d.state_json("flows", &id)["stage"], stage);
        assert_eq!(d.state_json("flows", &id)["iteration"], 1);
    }
    // FOLD → SUBMIT iterates.
    rag(&["transition", "SUBMIT"]).ok();
    let s = d.state_json("flows", &id);
    assert_eq!(s["stage"], "SUBMIT");
    assert_eq!(s["iteration"], 2);
    let events = check_log(&d.txn_dir("flows", &id));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "stage_transition");
    assert_eq!(last["from"], "FOLD");
    assert_eq!(last["iteration"], 2);

    for stage in ["APPLY", "VALIDATE"] {
        rag(&["transition", stage]).ok();
    }
    rag(&["transition", "DONE"]).ok();
    assert_eq!(d.state_json("flows", &id)["stage"], "DONE");
    assert_eq!(d.state_json("flows", &id)["iteration"], 2);
    d.assert_state_is_fold("flows", &id);
}

#[test]
fn fail_is_reachable_in_a_module_fsm() {
    let d = Daemon::with_tree(|root| {
        fs::create_dir_all(root.join("flows")).unwrap();
        fs::write(root.join("flows/fsm.json"), RAG_FSM).unwrap();
    });
    let id = d.ctl(&["-m", "flows", "create", "x"]).ok();
    d.ctl(&["-m", "flows", "transition", "SELECT"]).ok();
    d.ctl(&["-m", "flows", "fail", "no sources"]).ok();
    assert_eq!(d.state_json("flows", &id)["stage"], "FAIL");
    d.ctl(&["-m", "flows", "retry"]).ok();
    assert_eq!(d.state_json("flows", &id)["stage"], "NEW");
}

#[test]
fn a_malformed_fsm_json_is_named_and_refused() {
    let d = Daemon::with_tree(|root| {
        for (module, text) in [
            ("bad", "{\"stages\": [\"NEW\", "),
            ("dup", r#"{"stages": ["NEW", "NEW"]}"#),
            (
                "edge",
                r#"{"stages": ["NEW", "A"], "transitions": {"NEW": ["MISSING"]}}"#,
            ),
        ] {
            fs::create_dir_all(root.join(module)).unwrap();
            fs::write(root.join(module).join("fsm.json"), text).unwrap();
        }
        // A module with transactions and a broken fsm.json must not stop
        // the daemon from serving the others.
        fs::create_dir_all(root.join("dup/txns")).unwrap();
    });
    for module in ["bad", "dup", "edge"] {
        let before = d.snapshot();
        let out = d.ctl(&["-m", module, "create", "x"]);
        assert_ne!(
            out.code(),
            0,
            "create in module {module} with a bad fsm.json"
        );
        out.stderr_has(&["fsm.json"]);
        assert_same_tree(&before, &d.snapshot(), &format!("create in {module}"));
        let out = d.ctl(&["-m", module, "list"]);
        assert_ne!(out.code(), 0, "list in module {module} with a bad fsm.json");
    }
    // The default module is unaffected.
    d.create("still serving");
}
