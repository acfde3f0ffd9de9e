//! A daemon started on a read-only tree (issue 15, item 12): it serves
//! every read, refuses every write with exit 8 naming the OS error and the
//! way out, says "read-only" in `daemon status` and its start-up line,
//! repairs nothing (it reports the repairs as pending) and quarantines
//! nothing; restarted on the tree remounted read-write, it makes the
//! repairs and writes work, with nothing lost.

use std::fs;
use std::io::Write;
use std::time::Duration;

use ttm_tests::{accepts, assert_same_tree, clean_command, run, snapshot, ttmd_bin};

use super::{Rig, consistent, reads_work, refused, sys};

/// Remounts the tree read-only: the whole tmpfs (ttmd is stopped, so no
/// log is open for writing), else a read-only bind mount of it over itself.
/// Returns whether it is a bind mount (then unmounting it is the undo).
fn make_read_only(mnt: &str, test: &str) -> bool {
    let whole_fs = sys("mount", &["-o", "remount,ro", mnt]);
    if let Err(e) = &whole_fs {
        println!("{test}: whole-filesystem remount refused ({e}); using a read-only bind mount");
        sys("mount", &["--bind", mnt, mnt]).unwrap();
        sys("mount", &["-o", "remount,bind,ro", mnt]).unwrap();
    }
    whole_fs.is_err()
}

#[test]
fn a_daemon_started_on_a_read_only_tree_serves_reads_and_refuses_writes() {
    let test =
        "faults::read_only::a_daemon_started_on_a_read_only_tree_serves_reads_and_refuses_writes";
    let Some(mut rig) = Rig::new("4m") else {
        return;
    };
    let mnt = rig.mnt().to_owned();
    let d = rig.d();
    let id = d.create("read before");
    d.ctl(&["transition", "SELECT"]).ok();
    d.ctl(&["event", "progress", r#"{"n":1}"#]).ok();
    let other = d.create("with a view to rebuild");
    let state = d.ctl(&["state", "-t", &id]).json();
    let other_state = d.ctl(&["state", "-t", &other]).json();
    d.stop();
    // Repairs a writable start would make: a torn final line, a lost view.
    let log = d.txn_dir("ttm", &id).join("events.ndjson");
    let whole_log = fs::read(&log).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(br#"{"seq":4,"ev"#).unwrap();
    drop(f);
    fs::remove_file(d.txn_dir("ttm", &other).join("state.json")).unwrap();

    let bound = make_read_only(&mnt, test);
    assert!(
        fs::write(d.root.join(".probe"), "x").is_err_and(|e| e.raw_os_error() == Some(30)),
        "the tree is not read-only"
    );
    let tree = snapshot(&d.root);
    d.start();
    assert!(
        d.daemon_stderr().contains("read-only"),
        "the start-up line does not say read-only:\n{}",
        d.daemon_stderr()
    );
    assert_eq!(d.ctl(&["state", "-t", &id]).json(), state);
    assert_eq!(d.ctl(&["state", "-t", &other]).json(), other_state);
    reads_work(d, &id);
    reads_work(d, &other);
    let list = d.ctl(&["list"]).ok();
    assert!(list.contains(&id) && list.contains(&other), "{list}");
    assert!(!list.contains("quarantined"), "{list}");
    let events = d.ctl(&["events", "-t", &id]).ok();
    assert!(events.contains("progress"), "{events}");
    let status = d.ctl(&["daemon", "status"]).ok();
    assert!(status.contains("read-only"), "{status}");
    assert!(
        status.contains("pending") && status.contains("torn"),
        "{status}"
    );

    let evidence = d.tmp().join("evidence.txt");
    fs::write(&evidence, "evidence\n").unwrap();
    let evidence = evidence.to_str().unwrap().to_owned();
    for args in [
        vec![
            "ctx",
            "add",
            evidence.as_str(),
            "evidence",
            "-t",
            id.as_str(),
        ],
        vec!["event", "refused", "{}", "-t", id.as_str()],
        vec!["transition", "ASSEMBLE", "-t", id.as_str()],
        vec!["create", "on a read-only tree"],
    ] {
        let out = d.ctl(&args);
        refused(&out, &["Read-only file system"]);
        assert!(out.stderr.contains("restart"), "{}", out.stderr);
    }
    // Still one daemon per tree, without a lock file in it.
    let other_socket = d.tmp().join("other.sock");
    let mut cmd = clean_command(ttmd_bin());
    cmd.arg("--root")
        .arg(&d.root)
        .arg("--socket")
        .arg(&other_socket);
    let out = run(cmd, None, Duration::from_secs(10));
    assert_ne!(out.code(), 0, "a second ttmd started on the read-only tree");
    out.stderr_has(&["already running"]);
    assert!(!accepts(&other_socket));
    d.ctl(&["list"]).ok();
    assert_same_tree(&tree, &snapshot(&d.root), "a daemon on a read-only tree");

    d.stop();
    if bound {
        sys("umount", &[&mnt]).unwrap();
    } else {
        sys("mount", &["-o", "remount,rw", &mnt]).unwrap();
    }
    d.start();
    assert_eq!(
        fs::read(&log).unwrap(),
        whole_log,
        "the torn line was not dropped"
    );
    assert_eq!(d.ctl(&["state", "-t", &id]).json(), state);
    assert!(!d.ctl(&["daemon", "status"]).ok().contains("read-only"));
    d.ctl(&["event", "writable.again", "{}", "-t", &id]).ok();
    consistent(d, &id);
    consistent(d, &other);
    let third = d.create("after the tree was writable");
    consistent(d, &third);
}

/// One daemon per tree across mounts: a daemon started on a read-only view
/// (a bind mount) of a tree a daemon serves read-write is refused, and the
/// refusal names the daemon that runs.
#[test]
fn a_read_only_view_of_a_served_tree_gets_no_second_daemon() {
    let Some(mut rig) = Rig::new("4m") else {
        return;
    };
    let mnt = rig.mnt().to_owned();
    let d = rig.d();
    d.create("served read-write");
    let view = d.tmp().join("view");
    fs::create_dir(&view).unwrap();
    let view_str = view.to_str().unwrap().to_owned();
    sys("mount", &["--bind", &mnt, &view_str]).unwrap();
    let remounted = sys("mount", &["-o", "remount,bind,ro", &view_str]);
    let mut cmd = clean_command(ttmd_bin());
    cmd.arg("--root")
        .arg(&view)
        .arg("--socket")
        .arg(d.tmp().join("view.sock"));
    let out = remounted
        .as_ref()
        .ok()
        .map(|()| run(cmd, None, Duration::from_secs(10)));
    // Before any assertion: the rig cannot remove a directory mounted on.
    sys("umount", &[&view_str]).unwrap();
    remounted.unwrap();
    let out = out.unwrap();
    assert_ne!(out.code(), 0, "a second ttmd started on a view of the tree");
    out.stderr_has(&["already running", d.socket.to_str().unwrap()]);
    d.create("still served");
}
