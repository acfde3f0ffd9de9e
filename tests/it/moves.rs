//! Mutation replies name the stage the transaction left
//! (`previous_stage`), so a script learns a whole move from one call:
//! `ttmctl transition/commit/fail/retry --print-move`, and the bash shims,
//! whose transition, commit and fail are one ttmctl process each.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ttm_tests::{Daemon, ttmctl_bin};

use crate::shims::{STRICT, bash};

#[test]
fn print_move_names_the_stage_left_also_for_a_repeated_request() {
    let d = Daemon::start_new();
    let id = d.create("moves");
    let moved = |args: &[&str]| {
        let out = d.ctl(args);
        out.ok();
        out.stdout
    };
    assert_eq!(
        moved(&["transition", "SELECT", "--print-move", "--request-id", "m1"]),
        format!("{id}\tNEW\tSELECT\n")
    );
    assert_eq!(
        moved(&["transition", "ASSEMBLE", "--print-move"]),
        format!("{id}\tSELECT\tASSEMBLE\n")
    );
    // The first answer again, whole: the move it made.
    assert_eq!(
        moved(&["transition", "SELECT", "--print-move", "--request-id", "m1"]),
        format!("{id}\tNEW\tSELECT\n")
    );
    assert_eq!(
        moved(&["fail", "broken", "--print-move"]),
        format!("{id}\tASSEMBLE\tFAIL\n")
    );
    assert_eq!(
        moved(&["retry", "--to", "SELECT", "--print-move"]),
        format!("{id}\tFAIL\tSELECT\n")
    );
    assert_eq!(
        moved(&["commit", "--print-move"]),
        format!("{id}\tSELECT\tDONE\n")
    );
    // Machine output stays one JSON document.
    d.ctl(&["commit", "--print-move", "--json"])
        .expect_code(2)
        .stderr_has(&["--print-move", "--json"]);
}

/// Runs `body` after sourcing the shims with `TTMCTL` a wrapper that
/// counts its runs in `$W/calls`; returns stdout + stderr.
fn counted(d: &Daemon, body: &str) -> String {
    let work = d.tmp().join("work");
    fs::create_dir_all(&work).unwrap();
    let wrapper = work.join("ttmctl-counted");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >>\"$W/calls\"\nexec '{}' \"$@\"\n",
            ttmctl_bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!("{STRICT}{body}");
    let out = bash(d, &script, &[("TTMCTL", wrapper.to_str().unwrap())]);
    format!("{}\n{}", out.ok(), out.stderr)
}

#[test]
fn a_shim_transition_commit_or_fail_is_one_ttmctl_process() {
    let d = Daemon::start_new();
    let out = counted(
        &d,
        r#"
id=$(txn_create "one process each")
calls() { wc -l <"$W/calls" | tr -d ' '; }
: >"$W/calls"; txn_transition SELECT; echo "calls $(calls)"
: >"$W/calls"; txn_commit; echo "calls $(calls)"
other=$(txn_create "fails")
: >"$W/calls"; txn_fail "$other" "it broke"; echo "calls $(calls)"
echo "ids $id $other"
"#,
    );
    let ids = out
        .lines()
        .find_map(|l| l.strip_prefix("ids "))
        .unwrap_or_else(|| panic!("no ids in {out}"));
    let (id, other) = ids.split_once(' ').unwrap();
    let expected = [
        "Transaction transitioned: NEW → SELECT".to_string(),
        "calls 1".into(),
        "Transaction transitioned: SELECT → DONE".into(),
        format!("Transaction committed: {id}"),
        "calls 1".into(),
        "Transaction transitioned: NEW → FAIL".into(),
        "calls 1".into(),
    ];
    for line in &expected {
        assert!(out.contains(line.as_str()), "no {line:?} in:\n{out}");
    }
    assert!(
        out.contains(&format!("Transaction failed: {other} - it broke")),
        "{out}"
    );
}
