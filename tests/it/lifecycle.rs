//! A transaction from create to commit, and what a terminal one refuses.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;
use ttm_tests::{Daemon, assert_same_tree, check_log, event_types, read_json, sha256_hex};

const DESCRIPTION: &str =
    "Deploy \"api\" v2 — naïve ünïcode ✓\nsecond line with 'quotes' and \\ backslash";

#[test]
fn full_lifecycle() {
    let mut d = Daemon::start_new();
    let started = Instant::now();
    let id = d.create(DESCRIPTION);
    // txn_start was logged before `create` returned.
    let created = Instant::now();
    let dir = d.txn_dir("ttm", &id);
    assert!(dir.is_dir(), "no directory {}", dir.display());
    assert_eq!(d.ctl(&["active"]).ok(), id);
    // `active` is a relative symlink, so the tree can be moved.
    let link = fs::read_link(d.root.join("ttm/txns/active")).unwrap();
    assert_eq!(link, std::path::Path::new(&id));
    for name in [
        "ctx/000_policy.md",
        "ctx/010_request.md",
        "build",
        "artifacts",
    ] {
        assert!(dir.join(name).exists(), "{name} missing after create");
    }

    // The description round-trips exactly, in the state and in txn_start.
    let state = read_json(&dir.join("state.json"));
    assert_eq!(state["description"], DESCRIPTION);
    assert_eq!(state["stage"], "NEW");
    assert_eq!(state["iteration"], 1);
    let events = check_log(&dir);
    assert_eq!(event_types(&events), ["txn_start", "activated"]);
    assert_eq!(events[0]["description"], DESCRIPTION);
    assert_eq!(events[0]["txn_id"], id.as_str());

    // Two evidence files: a named file, then standard input.
    let artifact = d.tmp().join("app.tar.gz");
    let artifact_bytes: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    fs::write(&artifact, &artifact_bytes).unwrap();
    let name = d
        .ctl(&["ctx", "add", artifact.to_str().unwrap(), "artifact"])
        .ok();
    assert_eq!(name, "100_artifact.tar.gz");
    assert_eq!(
        fs::read(dir.join("ctx").join(&name)).unwrap(),
        artifact_bytes
    );

    let notes = "notes from stdin\n".as_bytes();
    let second = d.ctl_stdin(&["ctx", "add", "-", "notes"], notes).ok();
    assert!(second.starts_with("110_"), "second ctx file: {second}");
    assert_eq!(fs::read(dir.join("ctx").join(&second)).unwrap(), notes);

    let events = check_log(&dir);
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "evidence_added")
        .collect();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["file"], "100_artifact.tar.gz");
    assert_eq!(added[0]["bytes"], artifact_bytes.len());
    assert_eq!(added[0]["sha256"], sha256_hex(&artifact_bytes).as_str());
    assert_eq!(added[1]["file"], second.as_str());
    assert_eq!(added[1]["sha256"], sha256_hex(notes).as_str());
    let digest = d.ctl(&["ctx", "digest"]).ok();
    assert_eq!(added[1]["ctx_digest"], digest.as_str());
    assert_eq!(
        read_json(&dir.join("state.json"))["ctx_digest"],
        digest.as_str()
    );

    // Four transitions.
    for stage in ["SELECT", "ASSEMBLE", "EXECUTE", "VALIDATE"] {
        d.ctl(&["transition", stage]).ok();
        assert_eq!(read_json(&dir.join("state.json"))["stage"], stage);
    }

    // Commit after a measurable pause.
    std::thread::sleep(Duration::from_millis(300).saturating_sub(created.elapsed()));
    let commit = d.ctl(&["commit", "--json"]).json();
    let elapsed = started.elapsed().as_millis() as u64;
    assert_eq!(commit["state"]["stage"], "DONE");
    let events = check_log(&dir);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "txn_commit");
    let duration = last["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        (300..60_000).contains(&duration) && duration <= elapsed,
        "duration_ms {duration}, real elapsed {elapsed} ms"
    );
    assert_eq!(commit["duration_ms"].as_u64(), Some(duration));
    assert_eq!(
        event_types(&events),
        [
            "txn_start",
            "activated",
            "evidence_added",
            "evidence_added",
            "stage_transition",
            "stage_transition",
            "stage_transition",
            "stage_transition",
            // The commit's own move, written with it (issue 16 item 9).
            "stage_transition",
            "txn_commit"
        ]
    );

    // DONE is final: every mutation is refused and nothing is written.
    let extra = d.tmp().join("extra.txt");
    fs::write(&extra, "x").unwrap();
    let before = d.snapshot();
    let refused: &[&[&str]] = &[
        &["transition", "EXECUTE"],
        &["transition", "FAIL"],
        &["commit"],
        &["fail", "too late"],
        &["retry"],
        &["update", r#"{"k":1}"#],
        &["event", "progress", r#"{"pct":100}"#],
        &["ctx", "add", extra.to_str().unwrap(), "extra"],
        &["resolve"],
    ];
    for args in refused {
        let out = d.ctl(args);
        out.expect_code(4).stderr_has(&["DONE"]);
        assert_same_tree(&before, &d.snapshot(), &format!("{args:?} on a DONE txn"));
    }
    // With an explicit id too.
    d.ctl(&["transition", "VALIDATE", "-t", &id]).expect_code(4);
    assert_same_tree(&before, &d.snapshot(), "transition -t on a DONE txn");

    check_log(&dir);
    d.assert_state_is_fold("ttm", &id);
}

#[test]
fn state_and_list_agree_with_the_files() {
    let d = Daemon::start_new();
    let id = d
        .ctl(&[
            "create",
            "check views",
            "--target",
            "@staging",
            "--agent",
            "cron",
        ])
        .ok();
    let dir = d.txn_dir("ttm", &id);
    let on_disk = read_json(&dir.join("state.json"));
    let shown = d.ctl(&["state"]).json();
    assert_eq!(shown, on_disk, "`ttmctl state` differs from state.json");
    assert_eq!(on_disk["target"], "@staging");
    assert_eq!(on_disk["agent"], "cron");
    assert_eq!(on_disk["module"], "ttm");
    assert_eq!(d.ctl(&["dir"]).ok(), dir.to_str().unwrap());

    let list = d.ctl(&["list", "--json"]).json();
    assert_eq!(list["active"], id.as_str());
    assert_eq!(list["txns"][0]["txn_id"], id.as_str());
    let human = d.ctl(&["list"]).ok();
    let row = human
        .lines()
        .find(|l| l.contains(&id))
        .expect("row in list");
    assert!(row.starts_with('*'), "active row not marked: {row}");
    assert!(row.contains("NEW") && row.contains("check views"), "{row}");
}

/// A brief list (what tables ask for) carries every field a row shows and
/// leaves out the rest, which makes a big tree's reply heavy.
#[test]
fn a_brief_list_has_what_a_table_shows() {
    let d = Daemon::start_new();
    let id = d.create("brief rows");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (full, brief) = rt.block_on(async {
        let mut c = ttm_tests::grpc(&d.socket).await;
        let mut list = async |brief| {
            let request = ttm_proto::v1::ListRequest {
                brief,
                ..Default::default()
            };
            c.list(request).await.unwrap().into_inner().txns
        };
        (list(false).await, list(true).await)
    });
    assert_eq!((full.len(), brief.len()), (1, 1));
    let (full, brief) = (&full[0], &brief[0]);
    assert_eq!(full.dir, d.txn_dir("ttm", &id).to_str().unwrap());
    assert_eq!(read_json(&d.txn_dir("ttm", &id).join("state.json")), {
        serde_json::from_str::<Value>(&full.json).unwrap()
    });
    assert!(
        !full.agent.is_empty() && !full.ctx_digest.is_empty(),
        "{full:?}"
    );
    let stripped = ttm_proto::v1::TxnState {
        json: String::new(),
        dir: String::new(),
        agent: String::new(),
        ctx_digest: String::new(),
        last_error: String::new(),
        ..full.clone()
    };
    assert_eq!(*brief, stripped);
}

#[test]
fn ids_are_distinct_within_one_second() {
    let d = Daemon::start_new();
    let ids: Vec<String> = (0..3).map(|_| d.create("x")).collect();
    for (i, a) in ids.iter().enumerate() {
        assert!(d.txn_dir("ttm", a).join("state.json").is_file(), "{a}");
        assert_eq!(
            read_json(&d.txn_dir("ttm", a).join("state.json"))["txn_id"],
            a.as_str()
        );
        for b in &ids[i + 1..] {
            assert_ne!(a, b, "two creations got the same id");
        }
    }
    // `x-<YYYYMMDDTHHMMSS>` then `-2`, `-3` when the second is the same.
    let stamp = |id: &str| -> String {
        let rest = id
            .strip_prefix("x-")
            .unwrap_or_else(|| panic!("bad id {id}"));
        let stamp = &rest[..15];
        assert!(
            stamp.len() == 15
                && stamp.as_bytes()[8] == b'T'
                && stamp
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 8 || b.is_ascii_digit()),
            "bad timestamp in {id}"
        );
        stamp.to_owned()
    };
    let stamps: Vec<String> = ids.iter().map(|id| stamp(id)).collect();
    if stamps.iter().all(|s| *s == stamps[0]) {
        let base = format!("x-{}", stamps[0]);
        assert_eq!(
            ids,
            [base.clone(), format!("{base}-2"), format!("{base}-3")]
        );
    }
    // The active transaction is the last one created.
    assert_eq!(d.ctl(&["active"]).ok(), ids[2]);
}

#[test]
fn user_events_and_updates_are_logged_and_folded() {
    let mut d = Daemon::start_new();
    let id = d.create("events");
    let dir = d.txn_dir("ttm", &id);
    d.ctl(&["event", "deploy.step", r#"{"step":"pull","n":1}"#])
        .ok();
    d.ctl(&["update", r#"{"tes_plan":"p","nested":{"a":[1,2]}}"#])
        .ok();
    d.ctl_stdin(&["update", "-"], br#"{"from_stdin":true}"#)
        .ok();
    let events = check_log(&dir);
    let user = &events[2];
    assert_eq!(user["event"], "deploy.step");
    assert_eq!(user["data"]["step"], "pull");
    assert_eq!(user["data"]["n"], 1);
    let state = read_json(&dir.join("state.json"));
    assert_eq!(state["tes_plan"], "p");
    assert_eq!(state["nested"]["a"][1], 2);
    assert_eq!(state["from_stdin"], true);

    // --type filters; --from is inclusive.
    let only = d.ctl(&["events", "--json", "--type", "deploy.step"]).ok();
    assert_eq!(only.lines().count(), 1, "{only}");
    let from: Vec<Value> = d
        .ctl(&["events", "--json", "--from", "3"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = from.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    d.assert_state_is_fold("ttm", &id);
}
