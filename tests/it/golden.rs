//! A transaction written by the legacy bash functions (tests/golden/bash-v1)
//! is adopted at start-up and keeps working.

use std::fs;

use serde_json::Value;
use ttm_tests::{Daemon, copy_dir, golden_dir, read_json};

const ID: &str = "deploy-api-20251018T143022";

fn adopted() -> Daemon {
    Daemon::with_tree(|root| {
        copy_dir(
            &golden_dir().join("bash-v1"),
            &root.join("ttm/txns").join(ID),
        )
    })
}

/// The seq column of `ttmctl events` (human output).
fn seqs(d: &Daemon) -> Vec<u64> {
    d.ctl(&["events", "-t", ID])
        .ok()
        .lines()
        .map(|line| {
            line.split_whitespace()
                .next()
                .and_then(|seq| seq.parse().ok())
                .unwrap_or_else(|| panic!("no seq in {line:?}"))
        })
        .collect()
}

#[test]
fn a_bash_transaction_is_listed_with_its_stage_and_fields() {
    let d = adopted();
    let list = d.ctl(&["list", "--json"]).json();
    let txns = list["txns"].as_array().unwrap();
    assert_eq!(txns.len(), 1, "{list}");
    assert_eq!(txns[0]["txn_id"], ID);
    assert_eq!(txns[0]["stage"], "SELECT");
    assert_eq!(txns[0]["description"], "Deploy API");
    let human = d.ctl(&["list"]).ok();
    assert!(
        human
            .lines()
            .any(|l| l.contains(ID) && l.contains("SELECT") && l.contains("Deploy API")),
        "{human}"
    );

    let state = d.ctl(&["state", "-t", ID]).json();
    assert_eq!(
        state["tes_plan"], "staging.local",
        "user field lost: {state}"
    );
    assert_eq!(state["target"], "@staging");
    assert_eq!(state["agent"], "human");
    assert_eq!(state["iteration"], 1);

    // Its lines, numbered 1..N, the adoption appended as the last one.
    let events: Vec<Value> = d
        .ctl(&["events", "--json", "-t", ID])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2);
    assert_eq!(events[0]["event"], "txn_start");
    assert_eq!(events[1]["event"], "stage_transition");
    let n = events.len() as u64;
    assert_eq!(seqs(&d), (1..=n).collect::<Vec<_>>());
    assert_eq!(state["seq"], n);

    // The original lines are kept byte for byte.
    let original = fs::read_to_string(golden_dir().join("bash-v1/events.ndjson")).unwrap();
    let now = fs::read_to_string(d.txn_dir("ttm", ID).join("events.ndjson")).unwrap();
    assert!(
        now.starts_with(&original),
        "legacy lines were rewritten:\n{now}"
    );

    // The bash ctx files are there.
    let ctx = d.ctl(&["ctx", "list", "-t", ID]).ok();
    for name in ["000_policy.md", "010_request.md", "100_artifact.txt"] {
        assert!(ctx.contains(name), "{name} missing from ctx list:\n{ctx}");
    }
}

#[test]
fn an_adopted_transaction_keeps_working() {
    let mut d = adopted();
    let before = seqs(&d);
    let n = before.len() as u64;
    d.ctl(&["transition", "ASSEMBLE", "-t", ID]).ok();
    let name = d
        .ctl_stdin(&["ctx", "add", "-", "config", "-t", ID], b"k: v\n")
        .ok();
    assert!(name.starts_with("110_"), "next evidence after 100: {name}");
    assert_eq!(seqs(&d), (1..=n + 2).collect::<Vec<_>>());

    let dir = d.txn_dir("ttm", ID);
    let text = fs::read_to_string(dir.join("events.ndjson")).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, n + 2);
    assert_eq!(lines[n as usize]["seq"], n + 1);
    assert_eq!(lines[n as usize]["event"], "stage_transition");
    assert_eq!(lines[n as usize]["from"], "SELECT");
    let state = read_json(&dir.join("state.json"));
    assert_eq!(state["seq"], n + 2);
    assert_eq!(state["stage"], "ASSEMBLE");
    assert_eq!(state["tes_plan"], "staging.local");

    // Adoption happens once; a restart changes nothing and the fold holds.
    let tree = d.snapshot();
    d.restart();
    ttm_tests::assert_same_tree(&tree, &d.snapshot(), "restart after adoption");
    d.assert_state_is_fold("ttm", ID);
}
