//! Creations (issue 20, item "create"): only the log and the directories
//! are synced before a creation is acknowledged. The files derived from
//! `txn_start` — the initial ctx files and `state.json` — are synced by the
//! checkpoint, and when a crash lost them first, start-up rebuilds them
//! from the log before anything can read them. Concurrent creations in one
//! module overlap (they share the `txns/` sync) and never share an id or a
//! request id.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use tonic::transport::Channel;
use ttm_proto::v1::CreateRequest;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_tests::{
    Daemon, HANG, Need, Progress, STALL, clean_command, grpc, runtime, wait_progressing,
};

const CREATORS: usize = 64;

/// One creation; `i` picks the module (`ttm` writes 2 initial ctx files,
/// `rag` 3) and whether it activates.
fn request(i: usize, request_id: &str) -> CreateRequest {
    CreateRequest {
        module: if i.is_multiple_of(2) { "ttm" } else { "rag" }.into(),
        description: format!("concurrent creation {i}"),
        no_activate: i.is_multiple_of(3),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Runs `requests` at once over 8 connections; returns each acknowledged
/// one's (module, id), in request order (`None`: not acknowledged). With
/// `acked`, each acknowledgement is counted there as it comes.
async fn create_all(
    socket: &Path,
    requests: Vec<CreateRequest>,
    acked: &Progress,
) -> Vec<Option<(String, String)>> {
    let mut clients: Vec<TtmClient<Channel>> = Vec::new();
    for _ in 0..8 {
        clients.push(grpc(socket).await);
    }
    let tasks: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, req)| {
            let mut c = clients[i % clients.len()].clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let module = req.module.clone();
                let reply = tokio::time::timeout(HANG, c.create(req)).await;
                let reply = reply.unwrap_or_else(|_| panic!("creation {i} hung for {HANG:?}"));
                let id = reply.ok()?.into_inner().state?.txn_id;
                acked.bump();
                Some((module, id))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            acked
                .guard("a creation", t)
                .await
                .expect("a creator panicked"),
        );
    }
    out
}

/// The files a creation derives from `txn_start`: `state.json` and every
/// ctx file, by path inside the transaction's directory.
fn derived(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "state.json".to_string(),
        fs::read(dir.join("state.json")).unwrap_or_default(),
    );
    for e in fs::read_dir(dir.join("ctx")).unwrap().flatten() {
        let name = format!("ctx/{}", e.file_name().to_string_lossy());
        files.insert(name, fs::read(e.path()).unwrap());
    }
    files
}

fn active(d: &Daemon, module: &str) -> Option<PathBuf> {
    fs::read_link(d.root.join(module).join("txns/active")).ok()
}

/// What a power cut may do to the files not synced before the answer:
/// one way per transaction, by its place `i`.
fn lose_unsynced_files(dir: &Path, i: usize) {
    let ctx = dir.join("ctx");
    let view = dir.join("state.json");
    match i % 5 {
        0 => fs::remove_file(&view).unwrap(),
        1 => fs::write(ctx.join("010_request.md"), "").unwrap(),
        2 => {
            for e in fs::read_dir(&ctx).unwrap().flatten() {
                fs::remove_file(e.path()).unwrap();
            }
        }
        3 => {
            let len = fs::metadata(ctx.join("000_policy.md")).unwrap().len();
            fs::write(ctx.join("000_policy.md"), vec![0u8; len as usize]).unwrap();
            let half = fs::read(&view).unwrap();
            fs::write(&view, &half[..half.len() / 2]).unwrap();
        }
        _ => {}
    }
}

#[test]
fn acknowledged_creates_survive_kill9_and_files_a_crash_lost_are_rebuilt() {
    let rt = runtime();
    let mut d = Daemon::start_new();
    let requests = (0..CREATORS).map(|i| request(i, "")).collect();
    let acked = rt.block_on(create_all(&d.socket, requests, &Progress::new()));
    let acked: Vec<(String, String)> = acked
        .into_iter()
        .map(|a| a.expect("every creation is acknowledged"))
        .collect();
    let ids: BTreeSet<&String> = acked.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), CREATORS, "two creations got the same id");
    // What a clean creation gives: the files as the daemon wrote them.
    let clean: Vec<BTreeMap<String, Vec<u8>>> = acked
        .iter()
        .map(|(m, id)| derived(&d.txn_dir(m, id)))
        .collect();
    let pointed = (active(&d, "ttm"), active(&d, "rag"));
    assert!(pointed.0.is_some() && pointed.1.is_some());
    d.kill9();
    for (i, (m, id)) in acked.iter().enumerate() {
        lose_unsynced_files(&d.txn_dir(m, id), i);
    }
    d.start();
    for (i, (m, id)) in acked.iter().enumerate() {
        let now = derived(&d.txn_dir(m, id));
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            clean[i].keys().collect::<Vec<_>>(),
            "{m}/{id}: its files after recovery are not those of a clean creation"
        );
        for (name, bytes) in &now {
            assert!(
                *bytes == clean[i][name],
                "{m}/{id}: {name} after recovery differs from a clean creation's:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let shown = d.ctl(&["-m", m, "state", "-t", id]).json();
        assert_eq!(shown["txn_id"], id.as_str(), "{shown}");
    }
    assert_eq!((active(&d, "ttm"), active(&d, "rag")), pointed);
    let stderr = d.daemon_stderr();
    assert!(
        stderr.contains("rebuilt initial ctx file"),
        "recovery does not say what it rebuilt:\n{stderr}"
    );
}

/// A transaction created and finished before the checkpoint synced its
/// initial files is not trusted as a finished summary at start-up when
/// those files are short: it is loaded, so rebuilt, too.
#[test]
fn a_finished_transaction_whose_initial_files_a_crash_lost_is_rebuilt() {
    let mut d = Daemon::start_new();
    let id = d.create("finished at once");
    d.ctl(&["commit", "-t", &id]).ok();
    let dir = d.txn_dir("ttm", &id);
    let clean = derived(&dir);
    d.kill9();
    fs::remove_file(dir.join("ctx/010_request.md")).unwrap();
    let policy = fs::read(dir.join("ctx/000_policy.md")).unwrap();
    fs::write(dir.join("ctx/000_policy.md"), &policy[..policy.len() / 2]).unwrap();
    d.start();
    assert_eq!(derived(&dir), clean, "{id}: not rebuilt");
    assert_eq!(d.ctl(&["state", "-t", &id]).json()["stage"], "DONE");
}

#[test]
fn a_kill9_amid_creations_keeps_every_acknowledged_one_whole() {
    let rt = runtime();
    let mut d = Daemon::start_new();
    let acked = Progress::new();
    let requests = (0..CREATORS).map(|i| request(i, "")).collect();
    let socket = d.socket.clone();
    let counter = acked.clone();
    let run = rt.spawn(async move { create_all(&socket, requests, &counter).await });
    wait_progressing(
        "the first creations",
        STALL,
        || acked.get(),
        || (acked.get() >= 8).then_some(()),
    );
    d.kill9();
    let answers = rt.block_on(run).unwrap();
    d.start();
    for (m, id) in answers.into_iter().flatten() {
        let listed = d.ctl(&["-m", &m, "list"]).ok();
        let dir = d.txn_dir(&m, &id);
        assert!(
            dir.is_dir(),
            "acknowledged {m}/{id} is gone after the crash"
        );
        assert!(listed.contains(&id), "{m}/{id} is not listed:\n{listed}");
        let n = fs::read_dir(dir.join("ctx")).unwrap().count();
        assert_eq!(n, if m == "rag" { 3 } else { 2 }, "{m}/{id}: ctx files");
    }
    for m in ["ttm", "rag"] {
        for e in fs::read_dir(d.root.join(m).join("txns")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".ttmd-tmp-"), "{m}: leftover {name}");
        }
    }
}

#[test]
fn concurrent_creations_with_one_request_id_create_one_transaction() {
    let rt = runtime();
    let d = Daemon::start_new();
    let requests = (0..16)
        .map(|_| request(0, "same-creation"))
        .collect::<Vec<_>>();
    let answers = rt.block_on(create_all(&d.socket, requests, &Progress::new()));
    let ids: BTreeSet<String> = answers
        .into_iter()
        .map(|a| a.expect("acknowledged").1)
        .collect();
    assert_eq!(ids.len(), 1, "one request id created {ids:?}");
    let dirs = fs::read_dir(d.root.join("ttm/txns"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "active")
        .count();
    assert_eq!(dirs, 1);
}

/// Starts `d`'s ttmd under `strace` counting fsync and fdatasync into
/// `out`, and waits until it answers.
fn traced(d: &Daemon, out: &Path) -> Child {
    let ttmd = d.ttmd_command();
    let mut cmd = clean_command("strace");
    cmd.args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(out)
        .arg("--")
        .arg(ttmd.get_program())
        .args(ttmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in ttmd.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let child = cmd.spawn().expect("spawn strace");
    // Start-up progresses as the trace grows.
    let grown = || fs::metadata(out).map_or(0, |m| m.len());
    wait_progressing("ttmd under strace to answer", STALL, grown, || {
        (d.ctl(&["list"]).code() != 7).then_some(())
    });
    child
}

/// fsync + fdatasync calls of a whole ttmd run (start, `creates` creations
/// with `ttmctl create`, SIGTERM).
fn fsyncs_of_a_run(creates: usize) -> usize {
    let d = Daemon::stopped();
    let out = d.tmp().join("strace.out");
    let mut strace = traced(&d, &out);
    for i in 0..creates {
        d.create(&format!("counted {i}"));
    }
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
        .expect("strace's child");
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert!(ttm_tests::signal(pid, "TERM"));
    let exited = wait_progressing("ttmd to stop", STALL, || 0, || strace.try_wait().unwrap());
    assert!(exited.success(), "strace/ttmd exited with {exited}");
    fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .count()
}

#[test]
fn a_creation_costs_at_most_three_fsyncs() {
    let traces = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .status()
        .map_err(|e| format!("cannot run strace: {e}"))
        .and_then(|s| s.success().then_some(()).ok_or(format!("strace true: {s}")));
    let how = "`.ci/run` installs it with `apt-get install strace` (ptrace allowed)";
    if !Need::check("strace", how, traces).met() {
        return;
    }
    const CREATES: usize = 20;
    let none = fsyncs_of_a_run(0);
    let some = fsyncs_of_a_run(CREATES);
    let per_create = some.saturating_sub(none) as f64 / CREATES as f64;
    assert!(
        per_create <= 3.0,
        "{per_create} fsyncs per creation ({some} with {CREATES} creations, {none} without)"
    );
}

/// Watchers hear one `created` per creation, also while creations race
/// the reconciler (which announces directories that appear behind the
/// daemon's back): a creation is served before its module lock is let go.
#[test]
fn concurrent_creations_are_announced_once_each() {
    let rt = runtime();
    let d = Daemon::start_new();
    let watch = d.spawn_ctl(&["watch", "--json"]);
    ttm_tests::sync_watch(&d, &watch);
    let requests = (0..CREATORS).map(|i| request(2 * i, "")).collect();
    let acked = rt.block_on(create_all(&d.socket, requests, &Progress::new()));
    let marker = d.ctl(&["create", "last", "--no-activate"]).ok();
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let change = watch.json_line(HANG);
        let id = change["txn_id"].as_str().unwrap_or_default().to_string();
        if id == marker {
            break;
        }
        if change["kind"] == "created" {
            *created.entry(id).or_default() += 1;
        }
    }
    for (_, id) in acked.into_iter().flatten() {
        assert_eq!(
            created.get(&id),
            Some(&1),
            "{id}: `created` heard {created:?}"
        );
    }
}

/// A creation whose `active` pointer cannot be replaced fails, but the
/// transaction exists: a retry with the same request id answers with it
/// instead of creating a second one.
#[test]
fn a_creation_whose_activation_failed_is_found_by_its_retry() {
    let d = Daemon::start_new();
    let txns = d.root.join("ttm/txns");
    fs::create_dir_all(&txns).unwrap();
    // A non-empty directory where the link goes: renaming the new link
    // over it fails.
    fs::create_dir_all(txns.join("active/blocker")).unwrap();
    let first = d.ctl(&["create", "Blocked activation", "--request-id", "act-1"]);
    assert_ne!(first.code(), 0, "{}", first.stdout);
    let made = || {
        fs::read_dir(&txns)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "active")
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<BTreeSet<_>>()
    };
    let before = made();
    assert_eq!(before.len(), 1, "the first creation left {before:?}");
    let again = d.ctl(&["create", "Blocked activation", "--request-id", "act-1"]);
    assert_eq!(made(), before, "the retry made another transaction");
    let id = before.iter().next().unwrap();
    assert!(
        again.stdout.contains(id.as_str()) || again.stderr.contains(id.as_str()),
        "the retry does not name {id}: {} {}",
        again.stdout,
        again.stderr
    );
}
