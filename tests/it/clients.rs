//! Which tree a client means: `TETRA_DIR`, the bash `TTM_DIR` /
//! `TTM_TXNS_DIR`, and a daemon that serves another tree refusing instead of
//! writing there. Also: a finished transaction can be made active to look at.

use std::time::Duration;

use ttm_tests::{Daemon, read_events, run};

fn ctl_env(d: &Daemon, args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> ttm_tests::Out {
    let mut cmd = d.ctl_command(args);
    for k in unset {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, None, Duration::from_secs(30))
}

#[test]
fn a_daemon_serving_another_tree_refuses_and_writes_nothing() {
    let d = Daemon::start_new();
    d.create("mine");
    let other = d.tmp().join("other-tree");
    let out = ctl_env(
        &d,
        &["create", "meant for other"],
        &[("TETRA_DIR", other.to_str().unwrap())],
        &[],
    );
    out.expect_code(7)
        .stderr_has(&["serves", d.root.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(!other.exists(), "nothing may be created for the other tree");
    let list = d.ctl(&["--json", "list"]).json();
    assert_eq!(list["txns"].as_array().unwrap().len(), 1, "{list}");
    // Naming the served tree through a symlink is the same tree.
    let link = d.tmp().join("tree-link");
    std::os::unix::fs::symlink(&d.root, &link).unwrap();
    ctl_env(&d, &["list"], &[("TETRA_DIR", link.to_str().unwrap())], &[]).ok();
}

#[test]
fn bash_variables_name_the_tree_or_are_refused() {
    let d = Daemon::start_new();
    let id = d.create("bash vars");
    let root = d.root.to_str().unwrap().to_string();
    let ttm_dir = format!("{root}/ttm");
    let txns_dir = format!("{root}/ttm/txns");
    let active = ctl_env(&d, &["active"], &[("TTM_DIR", &ttm_dir)], &["TETRA_DIR"]).ok();
    assert_eq!(active, id);
    let active = ctl_env(
        &d,
        &["active"],
        &[("TTM_TXNS_DIR", &txns_dir)],
        &["TETRA_DIR"],
    )
    .ok();
    assert_eq!(active, id);
    // Consistent with TETRA_DIR: fine.
    ctl_env(&d, &["active"], &[("TTM_DIR", &ttm_dir)], &[]).ok();
    for (var, value, needle) in [
        ("TTM_DIR", format!("{root}/elsewhere"), "layout"),
        ("TTM_TXNS_DIR", format!("{root}/ttm/flows"), "layout"),
        ("TTM_DIR", "/somewhere/else/ttm".to_string(), "TETRA_DIR"),
    ] {
        let out = ctl_env(&d, &["active"], &[(var, &value)], &[]);
        out.expect_code(2).stderr_has(&[var, needle]);
    }
}

#[test]
fn a_finished_transaction_can_be_made_active_without_an_event() {
    let d = Daemon::start_new();
    let done = d.create("finished");
    d.ctl(&["commit"]).ok();
    let other = d.create("newer");
    let dir = d.txn_dir("ttm", &done);
    let before = read_events(&dir).len();
    d.ctl(&["activate", &done]).ok();
    assert_eq!(d.ctl(&["active"]).ok(), done);
    assert_eq!(read_events(&dir).len(), before, "a final log gets no event");
    // Guards still apply.
    d.ctl(&["activate", &other]).ok();
    d.ctl(&["activate", &done, "--expect-stage", "NEW"])
        .expect_code(5);
    assert_eq!(d.ctl(&["active"]).ok(), other);
    // And it stays final.
    d.ctl(&["transition", "VALIDATE", "-t", &done])
        .expect_code(4);
}
