//! Disk faults (issue #6, item 3; SPEC §10): a full disk, a read-only tree
//! and a tree the daemon may not write refuse mutations cleanly — exit 8
//! (RESOURCE_EXHAUSTED / UNAVAILABLE) with the OS error, nothing torn,
//! reads still served — and writes work again once the fault is gone,
//! without a restart.
//!
//! Each test mounts a small tmpfs as the tree (the socket and the daemon's
//! log stay outside it), so these need root; without it they print why they
//! skip and pass — except under CI, which runs as root, where they fail
//! (`ttm_tests::Need`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use ttm_tests::{Daemon, Need, Out, assert_same_tree, check_log, read_json, snapshot};

mod read_only;

// -------------------------------------------------------------- the rig --

/// Runs a system command; `Err(stderr)` unless it exits 0.
fn sys(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether something is mounted on `path` (its device differs from its
/// parent's).
fn is_mountpoint(path: &Path) -> bool {
    let (Ok(here), Some(Ok(up))) = (fs::metadata(path), path.parent().map(fs::metadata)) else {
        return false;
    };
    here.dev() != up.dev()
}

/// A daemon whose tree is a fresh tmpfs of `size`. Dropping it stops the
/// daemon, then unmounts everything mounted on the tree (lazily if it must)
/// and removes the temporary directory.
#[derive(Debug)]
struct Rig {
    d: Option<Daemon>,
    mnt: PathBuf,
    tmp: PathBuf,
}

impl Rig {
    /// `None` (with the reason printed; under CI it fails instead) when
    /// this cannot run here.
    fn new(size: &str) -> Option<Rig> {
        if !Need::root("mounting a tmpfs as the tree").met() {
            return None;
        }
        let d = Daemon::stopped();
        let mnt = d.root.clone();
        let tmp = d.tmp().to_path_buf();
        let opts = format!("size={size},mode=0755");
        let mnt_str = mnt.to_str().unwrap().to_owned();
        let mounted = sys("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", &mnt_str]);
        if !Need::check(
            "a tmpfs mount",
            "CI runs as root with CAP_SYS_ADMIN",
            mounted.map_err(|e| format!("cannot mount a tmpfs: {e}")),
        )
        .met()
        {
            return None;
        }
        // From here on, Drop unmounts.
        let mut rig = Rig {
            d: Some(d),
            mnt,
            tmp,
        };
        rig.d().start();
        Some(rig)
    }

    fn d(&mut self) -> &mut Daemon {
        self.d.as_mut().expect("daemon")
    }

    fn mnt(&self) -> &str {
        self.mnt.to_str().unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The daemon first (SIGTERM; Daemon's own drop), so nothing holds
        // the mount; its temporary directory cannot go while mounted.
        drop(self.d.take());
        for _ in 0..8 {
            if !is_mountpoint(&self.mnt) {
                break;
            }
            // Undo whatever a failed test left (immutable flags do not
            // stop an unmount; read-only does not either).
            if sys("umount", &[self.mnt()]).is_err() {
                let _ = sys("umount", &["-l", self.mnt()]);
            }
        }
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

// ----------------------------------------------------------- assertions --

/// Asserts exit 8 and that stderr carries one of `os_error` (the OS's
/// own words).
#[track_caller]
fn refused(out: &Out, os_error: &[&str]) {
    out.expect_code(8);
    assert!(
        os_error.iter().any(|e| out.stderr.contains(e)),
        "`{}`: the message does not carry the OS error {os_error:?}: {}",
        out.what,
        out.stderr
    );
}

/// The files a transaction's readers see are whole and agree with the
/// daemon: every log line parses with seq == line number, state.json
/// parses, its seq is the line count and it equals what `ttmctl state`
/// serves; reads answer.
#[track_caller]
fn consistent(d: &Daemon, id: &str) {
    let dir = d.txn_dir("ttm", id);
    check_log(&dir);
    let served = d.ctl(&["state", "-t", id]).json();
    assert_eq!(
        read_json(&dir.join("state.json")),
        served,
        "state.json differs from the daemon's state"
    );
    reads_work(d, id);
}

#[track_caller]
fn reads_work(d: &Daemon, id: &str) {
    for args in [
        vec!["state", "-t", id],
        vec!["status", "-t", id],
        vec!["list"],
        vec!["events", "-t", id],
        vec!["ctx", "list", "-t", id],
        vec!["active"],
    ] {
        d.ctl(&args).ok();
    }
}

/// The entries of `txns/` (transaction directories, `active`, anything
/// else).
fn txns_entries(d: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(d.root.join("ttm/txns"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ------------------------------------------------------------ full disk --

const PAGE: u64 = 4096;

/// Appends padded user events until events.ndjson ends on a page boundary,
/// so that the next append needs a fresh tmpfs page: with the disk full,
/// every append then fails, whatever its size.
fn align_log(d: &Daemon, id: &str) {
    let log = d.txn_dir("ttm", id).join("events.ndjson");
    let mut overhead: Option<u64> = None;
    for _ in 0..12 {
        let size = fs::metadata(&log).unwrap().len();
        if size.is_multiple_of(PAGE) {
            return;
        }
        let pad = match overhead {
            None => 0,
            Some(o) => {
                let mut need = PAGE - size % PAGE;
                while need < o {
                    need += PAGE;
                }
                need - o
            }
        };
        let data = format!(r#"{{"p":"{}"}}"#, "a".repeat(pad as usize));
        d.ctl(&["event", "pad", &data, "-t", id]).ok();
        let grown = fs::metadata(&log).unwrap().len() - size;
        overhead = Some(grown - pad);
    }
    panic!("could not align {} on a page", log.display());
}

/// Fills the filesystem of `path` with the file `path` until it is full;
/// returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [256 * 1024, 4096, 1] {
        let buf = vec![0x5au8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    written
}

/// With the disk full, `event`, `transition`, `update`, `ctx add` and
/// `create` exit 8 naming the OS error; nothing in the tree changes, no
/// temporary file or half-made directory is left, reads keep working; once
/// space is freed the same mutations succeed without a restart.
#[test]
fn a_full_disk_refuses_writes_cleanly_and_recovers_without_restart() {
    let Some(mut rig) = Rig::new("2m") else {
        return;
    };
    let d = rig.d();
    let id = d.create("the disk fills up");
    d.ctl(&["transition", "SELECT"]).ok();
    align_log(d, &id);
    let evidence = d.tmp().join("evidence.bin");
    fs::write(&evidence, vec![7u8; 20_000]).unwrap();
    let evidence = evidence.to_str().unwrap().to_owned();

    let filler = d.root.join(".filler");
    let filled = fill(&filler);
    assert!(filled > 0);
    let probe = d.root.join(".probe");
    let err = fs::write(&probe, b"x").expect_err("the tmpfs is not full");
    assert_eq!(err.raw_os_error(), Some(28), "{err}");
    let _ = fs::remove_file(&probe);

    let tree = snapshot(&d.root);
    let entries = txns_entries(d);
    let mutations: [Vec<&str>; 4] = [
        vec!["event", "progress", r#"{"pct":50}"#],
        vec!["transition", "ASSEMBLE"],
        vec!["update", r#"{"owner":"ops"}"#],
        vec!["ctx", "add", &evidence, "evidence"],
    ];
    for args in &mutations {
        let out = d.ctl(args);
        refused(&out, &["No space left on device"]);
        assert_same_tree(&tree, &snapshot(&d.root), &format!("`{}`", args.join(" ")));
        consistent(d, &id);
    }
    let out = d.ctl(&["create", "while the disk is full"]);
    refused(&out, &["No space left on device"]);
    assert_eq!(
        txns_entries(d),
        entries,
        "a failed creation left something in txns/"
    );
    assert_same_tree(&tree, &snapshot(&d.root), "a failed create");
    assert!(ttm_tests::temp_leftovers(&d.root).is_empty());
    consistent(d, &id);

    fs::remove_file(&filler).unwrap();
    for args in &mutations {
        d.ctl(args).ok();
        consistent(d, &id);
    }
    let state = d.ctl(&["state"]).json();
    assert_eq!(state["stage"], "ASSEMBLE");
    assert_eq!(state["owner"], "ops");
    let files = d.ctl(&["ctx", "list"]).ok();
    assert!(files.contains("100_evidence.bin"), "{files}");
    let other = d.create("after the disk was freed");
    consistent(d, &other);
    assert!(ttm_tests::temp_leftovers(&d.root).is_empty());
}

/// When the log still has room in its last page but nothing else fits, an
/// append can succeed while `state.json` cannot be replaced: the change is
/// acknowledged (the log is the truth), the old state.json stays whole, and
/// the view catches up with the next write once there is space — and at
/// start-up.
#[test]
fn a_full_disk_that_only_stops_the_view_keeps_the_log_the_truth() {
    let test = "faults::a_full_disk_that_only_stops_the_view_keeps_the_log_the_truth";
    let Some(mut rig) = Rig::new("2m") else {
        return;
    };
    let d = rig.d();
    let id = d.create("view lags");
    let dir = d.txn_dir("ttm", &id);
    align_log(d, &id);
    // One small line on a fresh page: the rest of that page is room.
    d.ctl(&["event", "opens.a.page", "{}"]).ok();
    let filler = d.root.join(".filler");
    fill(&filler);
    let lines_before = check_log(&dir).len();

    let out = d.ctl(&["event", "fits", r#"{"small":1}"#]);
    let view = read_json(&dir.join("state.json"));
    let text = fs::read_to_string(dir.join("events.ndjson")).unwrap();
    assert!(text.ends_with('\n'), "a torn line");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).expect("every line parses");
    }
    println!("{test}: the small append exited {}", out.code());
    match out.code() {
        0 => {
            assert_eq!(text.lines().count(), lines_before + 1);
            assert_eq!(
                view["seq"].as_u64(),
                Some(lines_before as u64),
                "state.json could not have been replaced on a full disk"
            );
            let served = d.ctl(&["state"]).json();
            assert_eq!(served["seq"].as_u64(), Some(lines_before as u64 + 1));
        }
        _ => {
            refused(&out, &["No space left on device"]);
            assert_eq!(text.lines().count(), lines_before);
        }
    }
    reads_work(d, &id);
    fs::remove_file(&filler).unwrap();
    d.ctl(&["event", "after", "{}"]).ok();
    consistent(d, &id);
    d.restart();
    consistent(d, &id);
}

// ------------------------------------------------------------ read-only --

/// A mutation that appends to an already open log may still succeed on a
/// tree made read-only behind the daemon's back (the kernel checks the
/// mount at open, not on each write to an open descriptor): then the line
/// is in the log and state.json, if it could not be replaced, is a whole
/// older view. Either that, or a clean refusal with the OS error.
#[track_caller]
fn refused_or_logged(d: &Daemon, id: &str, args: &[&str], os_error: &[&str]) -> bool {
    let dir = d.txn_dir("ttm", id);
    let before = fs::read(dir.join("events.ndjson")).unwrap();
    let out = d.ctl(args);
    let after = fs::read(dir.join("events.ndjson")).unwrap();
    let lines = String::from_utf8(after.clone()).unwrap();
    for line in lines.lines() {
        serde_json::from_str::<Value>(line).expect("every line parses");
    }
    let view = read_json(&dir.join("state.json"));
    assert!(view["seq"].as_u64().unwrap() as usize <= lines.lines().count());
    if out.code() == 0 {
        assert!(after.starts_with(&before) && after.len() > before.len());
        true
    } else {
        refused(&out, os_error);
        assert_eq!(after, before, "a refused mutation changed the log");
        false
    }
}

/// A read-only tree: creating a transaction and storing evidence exit 8
/// with "Read-only file system"; appends either do the same or land in the
/// log (see `refused_or_logged`); reads keep working; once writable again,
/// everything works and state.json catches up, without a restart.
///
/// `mount -o remount,ro` of the tree's filesystem is refused (EBUSY) while
/// ttmd holds its logs open for writing, so the fault is made with a
/// read-only bind mount of the tree over itself, which refuses every new
/// creation, rename and open for writing in the tree.
#[test]
fn a_read_only_tree_refuses_writes_and_recovers_without_restart() {
    let test = "faults::a_read_only_tree_refuses_writes_and_recovers_without_restart";
    let Some(mut rig) = Rig::new("4m") else {
        return;
    };
    let mnt = rig.mnt().to_owned();
    let d = rig.d();
    let id = d.create("read only");
    d.ctl(&["transition", "SELECT"]).ok();
    let evidence = d.tmp().join("evidence.txt");
    fs::write(&evidence, "evidence\n").unwrap();
    let evidence = evidence.to_str().unwrap().to_owned();

    let whole_fs = sys("mount", &["-o", "remount,ro", &mnt]);
    let bound = whole_fs.is_err();
    if let Err(e) = &whole_fs {
        println!("{test}: whole-filesystem remount refused ({e}); using a read-only bind mount");
        sys("mount", &["--bind", &mnt, &mnt]).unwrap();
        sys("mount", &["-o", "remount,bind,ro", &mnt]).unwrap();
    }
    assert!(
        fs::write(d.root.join(".probe"), "x").is_err_and(|e| e.raw_os_error() == Some(30)),
        "the tree is not read-only"
    );

    let tree = snapshot(&d.root);
    let out = d.ctl(&["ctx", "add", &evidence, "evidence"]);
    refused(&out, &["Read-only file system"]);
    let out = d.ctl(&["create", "on a read-only tree"]);
    refused(&out, &["Read-only file system"]);
    assert_same_tree(&tree, &snapshot(&d.root), "refused mutations");
    let ro = ["Read-only file system"];
    let mut logged = 0;
    logged += usize::from(refused_or_logged(d, &id, &["event", "progress", "{}"], &ro));
    logged += usize::from(refused_or_logged(d, &id, &["transition", "ASSEMBLE"], &ro));
    logged += usize::from(refused_or_logged(
        d,
        &id,
        &["update", r#"{"owner":"ops"}"#],
        &ro,
    ));
    println!("{test}: {logged} of 3 appends landed in the open log while read-only");
    reads_work(d, &id);

    if bound {
        sys("umount", &[&mnt]).unwrap();
    } else {
        sys("mount", &["-o", "remount,rw", &mnt]).unwrap();
    }
    d.ctl(&["ctx", "add", &evidence, "evidence"]).ok();
    d.ctl(&["event", "writable.again", "{}"]).ok();
    consistent(d, &id);
    let other = d.create("after the tree was writable");
    consistent(d, &other);
    assert!(ttm_tests::temp_leftovers(&d.root).is_empty());
}

// ---------------------------------------------------- permission denied --

/// Permission bits do not stop root, so "the daemon may not write here" is
/// made with the immutable attribute (`chattr +i`): storing evidence into
/// an immutable ctx/ and creating in an immutable txns/ exit 8 with
/// "Operation not permitted", nothing changes, reads work; appends to the
/// open log may still land (see `refused_or_logged`); after `chattr -i`
/// everything works and state.json catches up, without a restart.
#[test]
fn an_unwritable_tree_refuses_writes_and_recovers_without_restart() {
    let test = "faults::an_unwritable_tree_refuses_writes_and_recovers_without_restart";
    let Some(mut rig) = Rig::new("4m") else {
        return;
    };
    let d = rig.d();
    let probe = d.root.join(".attr-probe");
    fs::create_dir(&probe).unwrap();
    let probe_str = probe.to_str().unwrap().to_owned();
    let immutable = sys("chattr", &["+i", &probe_str]);
    if !Need::check(
        "chattr +i on tmpfs",
        "`.ci/run` installs e2fsprogs (chattr); tmpfs takes the attribute since Linux 6.0",
        immutable.map_err(|e| format!("chattr +i does not work on tmpfs here: {e}")),
    )
    .met()
    {
        return;
    }
    sys("chattr", &["-i", &probe_str]).unwrap();
    fs::remove_dir(&probe).unwrap();

    let id = d.create("immutable");
    let dir = d.txn_dir("ttm", &id);
    let txns = d.root.join("ttm/txns");
    let evidence = d.tmp().join("evidence.txt");
    fs::write(&evidence, "evidence\n").unwrap();
    let evidence = evidence.to_str().unwrap().to_owned();
    let locked = [
        txns.to_str().unwrap().to_owned(),
        dir.to_str().unwrap().to_owned(),
        dir.join("ctx").to_str().unwrap().to_owned(),
    ];
    for path in &locked {
        sys("chattr", &["+i", path]).unwrap();
    }

    let tree = snapshot(&d.root);
    let denied = ["Operation not permitted", "Permission denied"];
    refused(&d.ctl(&["ctx", "add", &evidence, "evidence"]), &denied);
    refused(&d.ctl(&["create", "in an immutable txns"]), &denied);
    assert_same_tree(&tree, &snapshot(&d.root), "refused mutations");
    let mut logged = 0;
    logged += usize::from(refused_or_logged(
        d,
        &id,
        &["event", "progress", "{}"],
        &denied,
    ));
    logged += usize::from(refused_or_logged(
        d,
        &id,
        &["transition", "SELECT"],
        &denied,
    ));
    println!("{test}: {logged} of 2 appends landed in the open log while immutable");
    reads_work(d, &id);

    for path in &locked {
        sys("chattr", &["-i", path]).unwrap();
    }
    d.ctl(&["ctx", "add", &evidence, "evidence"]).ok();
    d.ctl(&["event", "writable.again", "{}"]).ok();
    consistent(d, &id);
    let other = d.create("after chattr -i");
    consistent(d, &other);
    assert!(ttm_tests::temp_leftovers(&d.root).is_empty());
}
