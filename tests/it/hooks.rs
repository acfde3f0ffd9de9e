//! Hooks (SPEC §15): executables in `<module>/hooks/` run by ttmd after an
//! event is durable, with the event on stdin; their outcome logged as
//! `hook_ran`; unsafe files refused; never in a writer's way.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use ttm_tests::{Daemon, HANG, Need, read_events, wait_until};

/// Writes hook `name` of module `ttm` with `script` and `mode`.
pub(crate) fn hook(d: &Daemon, name: &str, script: &str, mode: u32) -> PathBuf {
    let dir = d.root.join("ttm/hooks");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The `hook_ran` lines of `id`'s log.
pub(crate) fn hook_runs(d: &Daemon, id: &str) -> Vec<Value> {
    read_events(&d.txn_dir("ttm", id))
        .into_iter()
        .filter(|e| e["event"] == "hook_ran")
        .collect()
}

/// Waits (bounded by [`HANG`]) until `id`'s log has `n` `hook_ran` lines.
#[track_caller]
pub(crate) fn wait_runs(d: &Daemon, id: &str, n: usize) -> Vec<Value> {
    let ok = wait_until(HANG, || hook_runs(d, id).len() >= n);
    assert!(
        ok,
        "{id} has {} hook_ran lines, not {n}:\n{}",
        hook_runs(d, id).len(),
        d.daemon_stderr()
    );
    hook_runs(d, id)
}

fn text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_hook_runs_once_after_its_event_with_the_event_on_stdin_and_env() {
    let d = Daemon::start_new();
    let out = d.tmp().join("out");
    fs::create_dir(&out).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         o={o}\n\
         cat > $o/stdin\n\
         env | grep -E '^(TTM_|TETRA_DIR=)' | sort > $o/env\n\
         grep -c '\"txn_commit\"' \"$TTM_TXN_DIR/events.ndjson\" > $o/durable\n\
         echo run >> $o/runs\n\
         echo 'said on stdout'\n\
         exit 3\n",
        o = out.display()
    );
    hook(&d, "on-commit", &script, 0o755);
    let id = d.create("hooked");
    d.ctl(&["commit", "-t", &id]).ok();
    let runs = wait_runs(&d, &id, 1);
    let events = read_events(&d.txn_dir("ttm", &id));
    let commit = events.iter().find(|e| e["event"] == "txn_commit").unwrap();
    // The line on stdin is the log's line, byte for byte.
    let log = fs::read_to_string(d.txn_dir("ttm", &id).join("events.ndjson")).unwrap();
    let line = log.lines().find(|l| l.contains("\"txn_commit\"")).unwrap();
    assert_eq!(text(&out.join("stdin")), format!("{line}\n"));
    let env = text(&out.join("env"));
    let dir = d.txn_dir("ttm", &id);
    for want in [
        "TTM_MODULE=ttm".to_string(),
        format!("TTM_TXN_ID={id}"),
        "TTM_STAGE=DONE".into(),
        "TTM_EVENT=txn_commit".into(),
        format!("TTM_TXN_DIR={}", dir.display()),
        format!("TTM_SEQ={}", commit["seq"]),
        "TTM_HOOK=on-commit".into(),
        format!("TETRA_DIR={}", d.root.display()),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in\n{env}");
    }
    // Run after the commit was in the log, once, its exit code logged.
    assert_eq!(text(&out.join("durable")).trim(), "1");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let ran = &runs[0];
    assert_eq!(ran["hook"], "on-commit");
    assert_eq!(ran["for_seq"], commit["seq"]);
    assert_eq!(ran["for_event"], "txn_commit");
    assert_eq!(
        (&ran["outcome"], &ran["exit_code"]),
        (&"exited".into(), &3.into())
    );
    assert!(ran["duration_ms"].is_u64(), "{ran}");
    assert!(d.daemon_stderr().contains("said on stdout"));
    // The annotation leaves the transaction DONE, and runs no hook itself.
    assert_eq!(d.state_json("ttm", &id)["stage"], "DONE");
    assert_eq!(text(&out.join("runs")), "run\n");
    // Nobody else can write one.
    let forged = d.create("forger");
    d.ctl(&["event", "hook_ran", "-t", &forged]).expect_code(2);
    // And a finished transaction with hook outcomes after its commit is
    // still read back as finished after a restart.
    let mut d = d;
    d.restart();
    let state: Value = serde_json::from_str(&d.ctl(&["state", "-t", &id]).ok()).unwrap();
    assert_eq!(state["stage"], "DONE");
    assert_eq!(
        text(&out.join("runs")),
        "run\n",
        "no hook re-runs at start-up"
    );
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout_with_what_it_started() {
    let d = Daemon::start_with_args(&["--hooks-timeout-secs", "1"]);
    let pid_file = d.tmp().join("child.pid");
    let script = format!(
        "#!/bin/sh\nsleep 600 &\necho $! > {}\nwait\n",
        pid_file.display()
    );
    hook(&d, "on-start", &script, 0o755);
    let id = d.create("hangs");
    let runs = wait_runs(&d, &id, 1);
    assert_eq!(runs[0]["outcome"], "timeout", "{runs:?}");
    assert!(
        runs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("hooks.timeout_secs"),
        "{runs:?}"
    );
    assert!(d.daemon_stderr().contains("killed after 1 s"));
    // The hook's own child went with it: its whole process group.
    let child = text(&pid_file).trim().to_string();
    let gone = wait_until(HANG, || !Path::new(&format!("/proc/{child}")).exists());
    assert!(gone, "the hook's child {child} outlived the timeout");
}

#[test]
fn a_hundred_events_at_once_never_run_more_hooks_than_the_bound() {
    if !Need::tool("flock", "util-linux").met() {
        return;
    }
    let d = Daemon::start_with_args(&["--hooks-concurrency", "2"]);
    let state = d.tmp().join("state");
    fs::create_dir(&state).unwrap();
    // Each run notes itself in `now` under a lock, keeps the highest count
    // seen in `max`, lingers, then leaves.
    let script = format!(
        "#!/bin/bash\nset -e\ncd {s}\n\
         exec 9>lock\n\
         flock 9; n=$(( $(cat now 2>/dev/null || echo 0) + 1 )); echo $n > now\n\
         m=$(cat max 2>/dev/null || echo 0); (( n > m )) && echo $n > max; flock -u 9\n\
         sleep 0.05\n\
         flock 9; echo $(( $(cat now) - 1 )) > now; echo x >> done; flock -u 9\n",
        s = state.display()
    );
    hook(&d, "on-event", &script, 0o755);
    let id = d.create("busy");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let cmds: Vec<_> = (0..25)
                .map(|i| {
                    d.ctl_command(&[
                        "event",
                        "progress",
                        &format!("{{\"n\":{}}}", w * 25 + i),
                        "-t",
                        &id,
                    ])
                })
                .collect();
            std::thread::spawn(move || {
                for cmd in cmds {
                    ttm_tests::run(cmd, None, ttm_tests::CTL_TIMEOUT).ok();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let runs = wait_runs(&d, &id, 100);
    assert!(
        runs.iter()
            .all(|r| r["outcome"] == "exited" && r["exit_code"] == 0),
        "{runs:?}"
    );
    assert_eq!(text(&state.join("done")).lines().count(), 100);
    let max: u32 = text(&state.join("max")).trim().parse().unwrap();
    assert!(
        (1..=2).contains(&max),
        "{max} hooks ran at once; the bound is 2"
    );
}

#[test]
fn unsafe_hooks_are_refused_with_a_logged_reason() {
    let d = Daemon::start_new();
    let ran = d.tmp().join("ran");
    let script = format!("#!/bin/sh\necho \"$TTM_HOOK\" >> {}\n", ran.display());
    hook(&d, "on-start", &script, 0o757); // world-writable
    hook(&d, "on-transition", &script, 0o644); // not executable
    hook(&d, "on-commit", &script, 0o775); // group-writable
    let id = d.create("unsafe");
    d.ctl(&["transition", "EXECUTE", "-t", &id]).ok();
    d.ctl(&["commit", "-t", &id]).ok();
    let runs = wait_runs(&d, &id, 3);
    let reason = |hook: &str| {
        let r = runs.iter().find(|r| r["hook"] == hook).unwrap();
        assert_eq!(r["outcome"], "refused", "{r}");
        r["reason"].as_str().unwrap().to_string()
    };
    assert!(reason("on-start").contains("writable by its group or others"));
    assert!(reason("on-transition").contains("not executable"));
    assert!(reason("on-commit").contains("chmod go-w"));
    assert!(!ran.exists(), "a refused hook ran: {}", text(&ran));
    let log = d.daemon_stderr();
    assert!(
        log.contains("hook refused") && log.contains("not executable"),
        "{log}"
    );
    // A hooks directory others may write to refuses every hook in it.
    hook(&d, "on-start", &script, 0o755);
    fs::set_permissions(d.root.join("ttm/hooks"), fs::Permissions::from_mode(0o777)).unwrap();
    let id = d.create("unsafe dir");
    let runs = wait_runs(&d, &id, 1);
    assert!(
        runs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("hook directory"),
        "{runs:?}"
    );
    assert!(!ran.exists());
}

#[test]
fn a_hook_owned_by_another_user_is_refused() {
    if !Need::root("chown a hook to another user").met() {
        return;
    }
    let d = Daemon::start_new();
    let ran = d.tmp().join("ran");
    let script = format!("#!/bin/sh\ntouch {}\n", ran.display());
    let path = hook(&d, "on-start", &script, 0o755);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let id = d.create("foreign hook");
    let runs = wait_runs(&d, &id, 1);
    let reason = runs[0]["reason"].as_str().unwrap();
    assert!(reason.contains("owned by uid 65534"), "{reason}");
    assert!(!ran.exists());
}

#[test]
fn a_slow_hook_does_not_block_appends() {
    let d = Daemon::start_with_args(&["--hooks-concurrency", "1"]);
    let started = d.tmp().join("started");
    let script = format!("#!/bin/sh\ntouch {}\nexec sleep 600\n", started.display());
    hook(&d, "on-event", &script, 0o755);
    let id = d.create("slow hook");
    d.ctl(&["event", "first", "-t", &id]).ok();
    assert!(
        wait_until(HANG, || started.exists()),
        "{}",
        d.daemon_stderr()
    );
    // The hook sleeps; every further append (each with its own queued hook)
    // is acknowledged, and durable, meanwhile.
    for i in 0..20 {
        d.ctl(&["event", "more", &format!("{{\"i\":{i}}}"), "-t", &id])
            .ok();
    }
    let events = read_events(&d.txn_dir("ttm", &id));
    assert_eq!(events.iter().filter(|e| e["event"] == "more").count(), 20);
    assert!(
        hook_runs(&d, &id).is_empty(),
        "the first hook is still asleep"
    );
}

#[test]
fn a_full_hook_queue_drops_hooks_with_a_warning_and_a_count() {
    let mut d = Daemon::start_with_args(&["--hooks-concurrency", "1", "--hooks-queue", "2"]);
    let started = d.tmp().join("started");
    let script = format!("#!/bin/sh\ntouch {}\nexec sleep 600\n", started.display());
    hook(&d, "on-event", &script, 0o755);
    let id = d.create("queue");
    d.ctl(&["event", "first", "-t", &id]).ok();
    assert!(
        wait_until(HANG, || started.exists()),
        "{}",
        d.daemon_stderr()
    );
    // One runs, two wait, the other seven are dropped: every append is
    // still acknowledged.
    for i in 0..9 {
        d.ctl(&["event", "more", &format!("{{\"i\":{i}}}"), "-t", &id])
            .ok();
    }
    let dropped = wait_until(HANG, || {
        d.ctl(&["metrics"])
            .ok()
            .lines()
            .any(|l| l == "ttm_hooks_dropped_total 7")
    });
    assert!(dropped, "{}", d.ctl(&["metrics"]).ok());
    let log = d.daemon_stderr();
    assert!(
        log.contains("hook not run") && log.contains("hooks.queue"),
        "{log}"
    );
    d.stop();
}
