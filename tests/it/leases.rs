//! Leases on targets (SPEC §13, §17): real `ttmctl` scripts contend for
//! `@prod`; holders die, pause and come back; the daemon is killed during
//! grants. Checked from the logs: one holder at a time, grants in queue
//! order, tokens strictly increasing and never repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use serde_json::Value;
use ttm_proto::v1::{AcquireLeaseRequest, Fence, Preconditions, UpdateRequest};
use ttm_tests::{
    Daemon, HANG, Progress, STALL, Spawned, clean_command, grpc, read_events, run_watched, signal,
    tree_activity, ttmctl_bin, txn_ref, wait_progressing,
};

/// Every transaction directory of module `ttm`, with its events.
fn all_logs(d: &Daemon) -> BTreeMap<String, Vec<Value>> {
    let txns = d.root.join("ttm/txns");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&txns).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            let id = e.file_name().to_string_lossy().into_owned();
            out.insert(id, read_events(&e.path()));
        }
    }
    out
}

/// One holding of a lease, read back from a log: granted with `token` at
/// line `from`, ended at line `to` (release, expiry, commit or failure).
#[derive(Debug)]
struct Holding {
    txn: String,
    ticket: u64,
    token: u64,
    start: String,
    end: Option<String>,
}

fn holdings(logs: &BTreeMap<String, Vec<Value>>, name: &str) -> Vec<Holding> {
    let mut out = Vec::new();
    for (txn, events) in logs {
        let mut ticket = 0;
        let mut open: Option<Holding> = None;
        for e in events {
            let kind = e["event"].as_str().unwrap_or("");
            let ts = e["ts"].as_str().unwrap_or("").to_owned();
            let mine = e["name"] == name;
            match kind {
                "lease_requested" if mine => ticket = e["ticket"].as_u64().unwrap(),
                "lease_acquired" if mine => {
                    open = Some(Holding {
                        txn: txn.clone(),
                        ticket,
                        token: e["token"].as_u64().unwrap(),
                        start: ts,
                        end: None,
                    })
                }
                "lease_released" | "lease_expired" if mine => {
                    if let Some(mut h) = open.take() {
                        h.end = Some(ts);
                        out.push(h);
                    }
                }
                "txn_commit" | "txn_fail" => {
                    if let Some(mut h) = open.take() {
                        h.end = Some(ts);
                        out.push(h);
                    }
                }
                _ => {}
            }
        }
        out.extend(open);
    }
    out.sort_by_key(|h| h.token);
    out
}

/// The overlap checker: ordered by token, each holding starts no earlier
/// than the one before ended (log times, ms), and only the last may be
/// open. Tokens are unique and strictly increasing in grant order.
fn assert_one_holder_at_a_time(hs: &[Holding]) {
    let tokens: BTreeSet<u64> = hs.iter().map(|h| h.token).collect();
    assert_eq!(tokens.len(), hs.len(), "a token was granted twice: {hs:#?}");
    for pair in hs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let end = a
            .end
            .as_ref()
            .unwrap_or_else(|| panic!("{} still holds while {} was granted", a.txn, b.txn));
        assert!(
            b.start >= *end,
            "overlap: {} (token {}) held until {end}, {} (token {}) granted at {}",
            a.txn,
            a.token,
            b.txn,
            b.token,
            b.start
        );
    }
}

/// A bash script with `ttmctl` on its PATH, pointed at `d`.
pub(crate) fn script(d: &Daemon, body: &str) -> std::process::Command {
    let bin = ttmctl_bin();
    let dir = bin.parent().unwrap().to_path_buf();
    let path = format!("{}:/usr/bin:/bin", dir.display());
    let mut cmd = clean_command("bash");
    cmd.args(["-c", body])
        .env("PATH", path)
        .env("TETRA_DIR", &d.root)
        .env("TTM_SOCKET", &d.socket)
        .env("TTM_NO_AUTOSTART", "1");
    cmd
}

#[test]
fn sixteen_scripts_take_turns_on_prod() {
    const SCRIPTS: usize = 16;
    const ROUNDS: usize = 3;
    let d = Daemon::start_new();
    let flag = d.tmp().join("held");
    // Each round: create with the lease (waits in the queue), prove
    // exclusivity with an atomic mkdir while holding, commit (releases).
    let body = format!(
        r#"set -u
for r in $(seq {ROUNDS}); do
  id=$(ttmctl create "w$W-$r" --no-activate --lease @prod) || exit 20
  mkdir "{flag}" || {{ echo OVERLAP; exit 21; }}
  ttmctl event deploy -t "$id" '{{"step":1}}' || exit 22
  rmdir "{flag}"
  ttmctl commit -t "$id" || exit 23
done
echo ok"#,
        flag = flag.display()
    );
    let root = d.root.clone();
    let children: Vec<_> = (0..SCRIPTS)
        .map(|w| {
            let mut cmd = script(&d, &body);
            cmd.env("W", w.to_string());
            std::thread::spawn({
                let root = root.clone();
                move || run_watched(cmd, None, STALL, || tree_activity(&root))
            })
        })
        .collect();
    for c in children {
        let out = c.join().unwrap();
        assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
        assert_eq!(out.stdout.trim(), "ok");
    }
    let logs = all_logs(&d);
    let hs = holdings(&logs, "@prod");
    assert_eq!(hs.len(), SCRIPTS * ROUNDS);
    assert_one_holder_at_a_time(&hs);
    // Grants follow the queue: ordered by ticket, the tokens increase too.
    let mut by_ticket: Vec<&Holding> = hs.iter().collect();
    by_ticket.sort_by_key(|h| h.ticket);
    let tokens: Vec<u64> = by_ticket.iter().map(|h| h.token).collect();
    let mut sorted = tokens.clone();
    sorted.sort_unstable();
    assert_eq!(tokens, sorted, "a grant jumped the queue");
    let listed = d.ctl(&["leases", "--json"]).json();
    assert_eq!(listed["leases"], Value::Array(vec![]), "nothing left held");
}

fn acquired_token(d: &Daemon, id: &str) -> u64 {
    let events = read_events(&d.txn_dir("ttm", id));
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "lease_acquired")
        .and_then(|e| e["token"].as_u64())
        .unwrap_or_else(|| panic!("{id} was never granted: {events:#?}"))
}

fn has_event(d: &Daemon, id: &str, kind: &str) -> bool {
    read_events(&d.txn_dir("ttm", id))
        .iter()
        .any(|e| e["event"] == kind)
}

#[test]
fn a_killed_holder_loses_the_lease_after_its_ttl_and_the_next_proceeds() {
    let d = Daemon::start_new();
    // The holder keeps its lease alive with heartbeats while it lives.
    let holder = Spawned::spawn(script(
        &d,
        r#"id=$(ttmctl create holder --no-activate --lease @prod --lease-ttl 3s) || exit 1
echo "$id"
while true; do ttmctl heartbeat -t "$id" || exit 2; sleep 0.2; done"#,
    ));
    let a = holder.line(HANG);
    let b = d.ctl(&["create", "next", "--no-activate"]).ok();
    // Alive: a bounded wait runs out (exit 11) and leaves the queue.
    d.ctl(&[
        "lease",
        "acquire",
        "@prod",
        "-t",
        &b,
        "--wait-timeout",
        "2s",
    ])
    .expect_code(11)
    .stderr_has(&["@prod", &b]);
    assert!(!has_event(&d, &a, "lease_expired"), "a live holder kept it");
    let waiter = d.spawn_ctl(&["lease", "acquire", "@prod", "-t", &b]);
    // kill -9 the whole script: no heartbeat, no release.
    assert!(signal(holder.pid(), "KILL"));
    holder.kill();
    let token_b: u64 = waiter.line(HANG).parse().unwrap();
    assert!(has_event(&d, &a, "lease_expired"));
    assert!(token_b > acquired_token(&d, &a));
    assert_one_holder_at_a_time(&holdings(&all_logs(&d), "@prod"));
}

#[test]
fn a_paused_holder_finds_its_fenced_writes_refused() {
    let d = Daemon::start_new();
    let paused = Spawned::spawn(script(
        &d,
        r#"id=$(ttmctl create paused --no-activate --lease @prod --lease-ttl 2s) || exit 1
eval "$(ttmctl ctx env -t "$id")"
echo "$id $TTM_FENCE_PROD"
kill -STOP $$
ttmctl event deploy -t "$id" --fence "@prod=$TTM_FENCE_PROD"
echo "rc=$?""#,
    ));
    let first = paused.line(HANG);
    let (id, token) = first.split_once(' ').unwrap();
    assert_eq!(token.parse::<u64>().unwrap(), acquired_token(&d, id));
    let progress = Progress::new();
    progress.wait("the paused holder's lease to expire", || {
        has_event(&d, id, "lease_expired").then_some(())
    });
    // Someone else holds it now.
    let other = d
        .ctl(&["create", "other", "--no-activate", "--lease", "@prod"])
        .ok();
    assert!(acquired_token(&d, &other) > token.parse().unwrap());
    assert!(signal(paused.pid(), "CONT"));
    let out = paused.wait(HANG);
    assert!(
        out.stdout.contains("rc=5"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("not current"), "{}", out.stderr);
    assert!(!has_event(&d, id, "deploy"), "a fenced write got through");
    // The current holder's fenced write goes through.
    let t = acquired_token(&d, &other).to_string();
    d.ctl(&[
        "event",
        "deploy",
        "-t",
        &other,
        "--fence",
        &format!("@prod={t}"),
    ])
    .ok();
}

#[test]
fn busy_skip_and_timeout_exit_codes() {
    let d = Daemon::start_new();
    let a = d.ctl(&["create", "a", "--lease", "@prod"]).ok();
    let before = d.ctl(&["list", "--json"]).stdout;
    let busy = d.ctl(&["create", "b", "--lease", "@prod", "--no-wait"]);
    busy.expect_code(10).stderr_has(&[&a, "since", "host"]);
    let skip = d.ctl(&["create", "c", "--lease", "@prod", "--skip-if-busy"]);
    skip.expect_code(0).stderr_has(&["skipped"]);
    assert_eq!(skip.stdout.trim(), "");
    assert_eq!(skip.stderr.trim().lines().count(), 1);
    assert_eq!(d.ctl(&["list", "--json"]).stdout, before, "nothing created");
    let late = d.ctl(&["create", "d", "--lease", "@prod", "--wait-timeout", "300ms"]);
    late.expect_code(11);
    // The one that timed out left the queue; the holder is untouched.
    let listed = d.ctl(&["leases", "--json"]).json();
    assert_eq!(listed["leases"][0]["holder"]["txn_id"], a.as_str());
    assert_eq!(listed["leases"][0]["queue"], Value::Array(vec![]));
    let c = d.ctl(&["create", "e", "--no-activate"]).ok();
    d.ctl(&["lease", "acquire", "@prod", "-t", &c, "--no-wait"])
        .expect_code(10);
    d.ctl(&["lease", "acquire", "@prod", "-t", &c, "--skip-if-busy"])
        .expect_code(0);
    // Released: the next acquire is immediate and its token higher.
    d.ctl(&["lease", "release", "@prod", "-t", &a]).ok();
    let t: u64 = d
        .ctl(&["lease", "acquire", "@prod", "-t", &c, "--no-wait"])
        .ok()
        .parse()
        .unwrap();
    assert!(t > acquired_token(&d, &a));
    let env = d.ctl(&["ctx", "env", "-t", &c]).ok();
    assert!(env.contains(&format!("TTM_FENCE_PROD={t}")), "{env}");
}

#[test]
fn leases_on_finished_transactions_and_bad_names_are_refused() {
    let d = Daemon::start_new();
    let done = d.create("done");
    d.ctl(&["commit", "-t", &done]).ok();
    d.ctl(&["lease", "acquire", "@prod", "-t", &done])
        .expect_code(4)
        .stderr_has(&["DONE"]);
    let live = d.create("live");
    for bad in ["../x", "@../prod", "a/b", "@", "", "Prod"] {
        d.ctl(&["lease", "acquire", bad, "-t", &live])
            .expect_code(2);
        d.ctl(&["create", "x", "--lease", bad]).expect_code(2);
    }
    d.ctl(&["event", "x", "-t", &live, "--fence", "../a=1"])
        .expect_code(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = grpc(&d.socket).await;
        for bad in ["a\0b".to_owned(), "a".repeat(1 << 20)] {
            let asked = c
                .acquire_lease(AcquireLeaseRequest {
                    txn: txn_ref("ttm", &live),
                    name: bad.clone(),
                    ..Default::default()
                })
                .await;
            let Err(err) = asked else {
                panic!("a lease named {:?} was accepted", &bad[..bad.len().min(8)]);
            };
            assert!(
                matches!(
                    err.code(),
                    tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
                ),
                "{err:?}"
            );
            let err = c
                .update(UpdateRequest {
                    txn: txn_ref("ttm", &live),
                    patch_json: "{}".into(),
                    pre: Some(Preconditions {
                        fences: vec![Fence {
                            name: bad,
                            token: 1,
                        }],
                        ..Default::default()
                    }),
                })
                .await
                .unwrap_err();
            assert_ne!(err.code(), tonic::Code::Ok);
        }
    });
    assert!(!d.root.join("x").exists() && !d.root.join("ttm/x").exists());
}

/// Kills ttmd during grants and releases, round after round: after each
/// restart no lease has two holders, every waiting transaction is still
/// queued or holds, and tokens never repeat.
#[test]
fn kill9_of_ttmd_during_grants_keeps_one_holder_and_every_waiter() {
    const ROUNDS: usize = 6;
    let mut d = Daemon::start_new();
    for round in 0..ROUNDS {
        // Three more waiters join, ttmctl processes left waiting.
        let waiters: Vec<Spawned> = (0..3)
            .map(|i| {
                d.spawn_ctl(&[
                    "create",
                    &format!("r{round}-{i}"),
                    "--no-activate",
                    "--lease",
                    "@prod",
                    "--json",
                ])
            })
            .collect();
        // Release the current holder (a grant follows) while they join,
        // and kill the daemon somewhere in the middle of it all.
        let committer = holder_of(&d).map(|h| d.spawn_ctl(&["commit", "-t", &h]));
        std::thread::sleep(Duration::from_millis(15 * round as u64));
        d.kill9();
        drop(waiters);
        drop(committer);
        d.start();
        check_after_restart(&d, &live_txns(&d));
    }
    // Drain: each holder commits; every waiter is granted in turn.
    let progress = Progress::new();
    wait_progressing(
        "the queue to drain",
        STALL,
        || progress.get(),
        || match holder_of(&d) {
            Some(h) => {
                d.ctl(&["commit", "-t", &h]).ok();
                progress.bump();
                None
            }
            None => Some(()),
        },
    );
    let logs = all_logs(&d);
    assert_one_holder_at_a_time(&holdings(&logs, "@prod"));
}

fn holder_of(d: &Daemon) -> Option<String> {
    let listed = d.ctl(&["leases", "--json"]).json();
    listed["leases"][0]["holder"]["txn_id"]
        .as_str()
        .map(str::to_owned)
}

/// The transactions not yet finished, from their state files.
fn live_txns(d: &Daemon) -> Vec<String> {
    all_logs(d)
        .keys()
        .filter(|id| {
            let s = d.state_json("ttm", id);
            s["stage"] != "DONE" && s["stage"] != "FAIL"
        })
        .cloned()
        .collect()
}

fn check_after_restart(d: &Daemon, live: &[String]) {
    let listed = d.ctl(&["leases", "--json"]).json();
    let mut seen: Vec<String> = Vec::new();
    for l in listed["leases"].as_array().unwrap() {
        if let Some(h) = l["holder"]["txn_id"].as_str() {
            seen.push(h.to_owned());
        }
        for w in l["queue"].as_array().unwrap() {
            seen.push(w["txn_id"].as_str().unwrap().to_owned());
        }
    }
    let holders = live
        .iter()
        .filter(|id| {
            let s = d.state_json("ttm", id);
            s["leases"]["held"]["@prod"].is_object()
        })
        .count();
    assert!(holders <= 1, "{holders} transactions hold @prod");
    for id in live {
        let s = d.state_json("ttm", id);
        let asked =
            s["leases"]["held"]["@prod"].is_object() || s["leases"]["awaited"]["@prod"].is_object();
        // A create killed before its lease was asked for waits for nothing.
        if asked {
            assert!(seen.contains(id), "{id} lost its place: {listed}");
        }
    }
    let hs = holdings(&all_logs(d), "@prod");
    let tokens: BTreeSet<u64> = hs.iter().map(|h| h.token).collect();
    assert_eq!(tokens.len(), hs.len(), "a token repeated: {hs:#?}");
}

#[test]
fn shims_lease_heartbeat_and_release() {
    let d = Daemon::start_new();
    let script = r#"set -euo pipefail
source "$TTM_SHELL/ttm.sh"
trap 'echo earlier-trap-ran' EXIT
id=$(txn_create "shim holder")
tok=$(TTM_LEASE_FLAGS="--lease-ttl 2s" txn_lease @prod "$id")
txn_heartbeat_start "$id" 0.2
echo "id=$id tok=$tok hb=$_TTM_HEARTBEAT_PID"
sleep 3
"$TTMCTL" --json leases | tr -d "\n"; echo
txn_release @prod "$id"
txn_heartbeat_start "$id" 0.2
echo "hb2=$_TTM_HEARTBEAT_PID"
"#;
    let out = crate::shims::bash(&d, script, &[]);
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    let mut lines = out.stdout.lines();
    let head = lines.next().unwrap();
    let id = head
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .unwrap();
    let hb: u32 = head
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hb="))
        .unwrap()
        .parse()
        .unwrap();
    let listed: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    // Heartbeats kept the 2 s lease alive through 3 s.
    assert_eq!(listed["leases"][0]["holder"]["txn_id"], id);
    assert!(!has_event(&d, id, "lease_expired"));
    assert!(has_event(&d, id, "lease_released"));
    let hb2: u32 = lines
        .next()
        .unwrap()
        .strip_prefix("hb2=")
        .unwrap()
        .parse()
        .unwrap();
    // The EXIT trap stopped the heartbeat and still ran the earlier trap.
    assert_eq!(lines.last(), Some("earlier-trap-ran"));
    assert!(!signal(hb, "0"), "the first heartbeat outlived its stop");
    assert!(!signal(hb2, "0"), "the heartbeat outlived the shell");
    // Usage errors are exit 2, like ttmctl's.
    let bad = crate::shims::bash(
        &d,
        "source \"$TTM_SHELL/ttm.sh\"; txn_lease; echo rc=$?; txn_heartbeat_start x soon; echo rc=$?",
        &[],
    );
    assert_eq!(bad.stdout.trim(), "rc=2\nrc=2");
}

#[test]
fn leases_show_in_list_status_and_the_watch_feed() {
    let d = Daemon::start_new();
    let watch = d.spawn_ctl(&["watch", "--json"]);
    let a = d.ctl(&["create", "a", "--lease", "@prod"]).ok();
    let b = d.ctl(&["create", "b", "--no-activate"]).ok();
    let waiter = d.spawn_ctl(&["lease", "acquire", "@prod", "-t", &b]);
    let progress = Progress::new();
    progress.wait("b to join the queue", || {
        has_event(&d, &b, "lease_requested").then_some(())
    });
    let list = d.ctl(&["list"]).ok();
    assert!(
        list.contains("holds @prod") && list.contains("awaits @prod"),
        "{list}"
    );
    let status = d.ctl(&["status", "-t", &a]).ok();
    assert!(status.contains("holds @prod"), "{status}");
    let human = d.ctl(&["leases"]).ok();
    assert!(human.contains(&a) && human.contains(&b), "{human}");
    d.ctl(&["lease", "release", "@prod", "-t", &a]).ok();
    let token: u64 = waiter.line(HANG).parse().unwrap();
    // Piped, the wait is told in plain lines: who holds it, where we stand.
    let told = waiter.stderr_so_far();
    assert!(
        told.contains(&format!("waiting for @prod: held by {a}")) && told.contains("position 1"),
        "{told}"
    );
    // A holder that goes silent: its expiry is announced too.
    d.ctl(&["create", "c", "--lease", "@dev", "--lease-ttl", "200ms"])
        .ok();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(k, n, _)| k == "lease_expired" && n == "@dev")
    {
        let change = watch.json_line(HANG);
        if let Some(name) = change["lease"].as_str() {
            let kind = change["kind"].as_str().unwrap().to_owned();
            if kind == "lease_acquired" && change["txn_id"] == b.as_str() {
                assert_eq!(change["token"], token);
            }
            seen.push((kind, name.to_owned(), change["txn_id"].clone()));
        }
    }
    for k in ["lease_requested", "lease_acquired", "lease_released"] {
        assert!(
            seen.iter().any(|(x, n, _)| x == k && n == "@prod"),
            "{k} not announced: {seen:?}"
        );
    }
}

/// Any mutation is a sign of life, also the ones that do not go through
/// the common mutation helper (evidence uploads, activation).
#[test]
fn evidence_and_activation_renew_the_lease() {
    let d = Daemon::start_new();
    let id = d
        .ctl(&["create", "busy", "--lease", "@prod", "--lease-ttl", "2s"])
        .ok();
    let file = d.tmp().join("part.txt");
    fs::write(&file, "x").unwrap();
    let f = file.to_str().unwrap();
    for i in 0..8 {
        if i % 2 == 0 {
            d.ctl(&["ctx", "add", f, "part", "-t", &id]).ok();
        } else {
            d.ctl(&["activate", &id]).ok();
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(!has_event(&d, &id, "lease_expired"), "renewed by its work");
    let listed = d.ctl(&["leases", "--json"]).json();
    assert_eq!(listed["leases"][0]["holder"]["txn_id"], id.as_str());
}

/// Tokens keep growing after the transactions that held them are archived
/// and deleted, and across restarts: the ledger outlives them.
#[test]
fn tokens_outlive_archive_gc_and_restart() {
    let mut d = Daemon::start_new();
    let mut last = 0;
    for round in 0..3 {
        let id = d
            .ctl(&["create", &format!("r{round}"), "--lease", "db-migrations"])
            .ok();
        let token = acquired_token(&d, &id);
        assert!(token > last, "token {token} after {last}");
        last = token;
        d.ctl(&["commit", "-t", &id]).ok();
        d.create("keeps the active pointer elsewhere");
        d.ctl(&["archive", "--yes"]).ok();
        d.ctl(&["gc", "--yes"]).ok();
        assert!(!d.txn_dir("ttm", &id).exists());
        assert!(
            !d.root.join("ttm/archive").join(&id).exists(),
            "gc left {id}"
        );
        d.restart();
    }
}

/// A holder whose directory is removed by hand (`rm -r`) lets the next
/// waiter in at once, not only after its TTL.
#[test]
fn a_holder_removed_by_hand_passes_the_lease_on() {
    let d = Daemon::start_new();
    let a = d.ctl(&["create", "a", "--lease", "@prod"]).ok();
    let b = d.ctl(&["create", "b", "--no-activate"]).ok();
    let waiter = d.spawn_ctl(&[
        "lease",
        "acquire",
        "@prod",
        "-t",
        &b,
        "--wait-timeout",
        "30s",
    ]);
    let progress = Progress::new();
    progress.wait("b to join the queue", || {
        has_event(&d, &b, "lease_requested").then_some(())
    });
    fs::remove_dir_all(d.txn_dir("ttm", &a)).unwrap();
    let out = waiter.wait(HANG);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let token: u64 = out.stdout.trim().parse().unwrap();
    assert_eq!(token, acquired_token(&d, &b));
}
