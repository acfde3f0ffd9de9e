//! Store tests on real temporary directories. (Over 500 lines on purpose:
//! one test per behaviour of the store, sharing the fixtures at the top;
//! no production code lives here.)

use std::fs;
use std::io::Write;
use std::path::Path;

use super::module::NewTxn;
use super::txn::{EVENTS_FILE, Guards, STATE_FILE};
use super::*;
use crate::core::event::Body;
use crate::core::state::State;

fn new_txn(desc: &str) -> NewTxn {
    NewTxn {
        time: Default::default(),
        description: desc.into(),
        target: "@local".into(),
        agent: "human".into(),
        activate: true,
        request_id: None,
    }
}

fn fsm() -> crate::core::fsm::Fsm {
    Default::default()
}

fn open(root: &Path) -> Store {
    Store::open(root, Durability::None, Default::default()).unwrap()
}

fn user_event(txn: &Txn, kind: &str) -> u64 {
    let out = txn
        .mutate(&fsm(), &Guards::default(), &None, |_, _| {
            Ok(Body::User {
                event: kind.into(),
                data: Default::default(),
            })
        })
        .unwrap();
    out.state.seq
}

fn disk_state(txn: &Txn) -> State {
    serde_json::from_slice(&fs::read(txn.dir.join(STATE_FILE)).unwrap()).unwrap()
}

#[test]
fn same_second_creations_get_distinct_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let m = store.module("ttm", true).unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| m.create(&new_txn("Same"), &None).unwrap().id.clone())
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    for id in &ids {
        assert!(m.txns_dir.join(id).join(EVENTS_FILE).is_file());
    }
    assert_eq!(m.active_id().unwrap().as_deref(), Some(ids[2].as_str()));
    let link = fs::read_link(m.txns_dir.join("active")).unwrap();
    assert_eq!(link.to_str(), Some(ids[2].as_str()), "active is relative");
}

#[test]
fn recovery_drops_torn_line_and_rebuilds_state() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let store = open(tmp.path());
        let m = store.module("ttm", true).unwrap();
        let t = m.create(&new_txn("t"), &None).unwrap();
        user_event(&t, "progress");
        t.id.clone()
    };
    let dir = tmp.path().join("ttm/txns").join(&id);
    let good = fs::read(dir.join(STATE_FILE)).unwrap();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(EVENTS_FILE))
        .unwrap();
    log.write_all(b"{\"ts\":\"x\",\"eve").unwrap();
    fs::remove_file(dir.join(STATE_FILE)).unwrap();

    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    assert_eq!(fs::read(dir.join(STATE_FILE)).unwrap(), good);
    let log = fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
    assert!(log.ends_with("}\n"));
    assert_eq!(log.lines().count() as u64, t.state().seq);
}

#[test]
fn a_contradicting_state_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, good) = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("t"), &None)
            .unwrap();
        (t.id.clone(), disk_state(&t))
    };
    let path = tmp.path().join("ttm/txns").join(&id).join(STATE_FILE);
    let mut edited = good.clone();
    edited.stage = "DONE".into();
    fs::write(&path, edited.to_pretty_json()).unwrap();
    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    assert_eq!(disk_state(&t), good);
}

#[test]
fn lines_appended_by_others_take_their_line_number() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = store
        .module("ttm", true)
        .unwrap()
        .create(&new_txn("t"), &None)
        .unwrap();
    let before = t.state().seq;
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(t.dir.join(EVENTS_FILE))
        .unwrap();
    log.write_all(b"{\"event\":\"note\",\"ts\":\"2025-01-01T00:00:00Z\"}\nnot json\n")
        .unwrap();
    assert_eq!(user_event(&t, "progress"), before + 3);
    let (lines, _) = t.read_lines(0, t.committed().len, 1).unwrap();
    assert_eq!(lines.last().unwrap().seq, before + 3);
    assert_eq!(disk_state(&t).seq, before + 3);
}

#[test]
fn guards_refuse_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = store
        .module("ttm", true)
        .unwrap()
        .create(&new_txn("t"), &None)
        .unwrap();
    let before = fs::read(t.dir.join(EVENTS_FILE)).unwrap();
    for g in [
        Guards {
            expect_stage: Some("SELECT".into()),
            ..Default::default()
        },
        Guards {
            expect_seq: Some(99),
            ..Default::default()
        },
    ] {
        let err = t
            .mutate(&fsm(), &g, &None, |_, _| Ok(Body::Activated))
            .unwrap_err();
        assert!(matches!(err, crate::core::Error::Conflict(_)), "{err}");
    }
    assert_eq!(fs::read(t.dir.join(EVENTS_FILE)).unwrap(), before);
}

#[test]
fn request_ids_answer_once_even_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Guards {
        request_id: Some("r1".into()),
        ..Default::default()
    };
    let id = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("t"), &None)
            .unwrap();
        let first = t
            .mutate(&fsm(), &g, &None, |_, _| Ok(Body::Activated))
            .unwrap();
        user_event(&t, "later");
        let again = t
            .mutate(&fsm(), &g, &None, |_, _| Ok(Body::Activated))
            .unwrap();
        assert!(again.replayed && !first.replayed);
        assert_eq!(first.event, again.event);
        assert_eq!(
            first.state, again.state,
            "the first answer, not the current state"
        );
        t.id.clone()
    };
    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    let seq = t.state().seq;
    let again = t
        .mutate(&fsm(), &g, &None, |_, _| Ok(Body::Activated))
        .unwrap();
    assert!(again.replayed);
    assert_eq!(t.state().seq, seq);
}

#[test]
fn evidence_is_numbered_and_digested() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let t = store
        .module("ttm", true)
        .unwrap()
        .create(&new_txn("t"), &None)
        .unwrap();
    let mut names = Vec::new();
    for (desc, file, body) in [("artifact", "app.tar.gz", "A"), ("", "config.yaml", "BB")] {
        let (temp, mut f) = t.create_temp_evidence().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        let path = temp.path().to_path_buf();
        let evidence = txn::NewEvidence {
            bytes: body.len() as u64,
            sha256: crate::core::ctx::sha256_hex(body.as_bytes()),
            description: desc.into(),
            file_name: file.into(),
        };
        let out = t
            .add_evidence(&fsm(), 100, temp, &evidence, &Guards::default(), &None)
            .unwrap();
        let Some(Body::EvidenceAdded { file, .. }) = out.body() else {
            panic!("not evidence: {out:?}");
        };
        names.push(file.clone());
        assert!(!path.exists());
    }
    assert_eq!(names, ["100_artifact.tar.gz", "110_config.yaml"]);
    let scanned = txn::scan_ctx(&t.dir.join("ctx")).unwrap();
    assert_eq!(
        t.state().ctx_digest.as_deref(),
        Some(crate::core::ctx::digest(&scanned).as_str())
    );
}

#[test]
fn a_malformed_fsm_refuses_the_module() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("rag/txns")).unwrap();
    fs::write(tmp.path().join("rag/fsm.json"), "{\"stages\": [}").unwrap();
    let store = open(tmp.path());
    let err = store.module("rag", false).unwrap_err().to_string();
    assert!(
        err.contains("fsm.json") && err.contains("invalid FSM"),
        "{err}"
    );
}

// ------------------------------------------------ recovery: damaged trees --

/// Every file under `dir` (not following symlinks) with its content, for
/// "left exactly as it was".
fn listing(dir: &Path) -> Vec<(std::path::PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(list) = fs::read_dir(&d) else {
            continue;
        };
        for e in list.flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.push((p.clone(), None));
                stack.push(p);
            } else if t.is_symlink() {
                out.push((
                    p.clone(),
                    Some(
                        fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                    ),
                ));
            } else {
                out.push((p.clone(), Some(fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn update(txn: &Txn, patch: serde_json::Value) -> u64 {
    let serde_json::Value::Object(patch) = patch else {
        panic!("not an object");
    };
    txn.mutate(&fsm(), &Guards::default(), &None, |_, _| {
        Ok(Body::Updated { patch })
    })
    .unwrap()
    .state
    .seq
}

#[test]
fn a_stale_state_json_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, stale) = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("t"), &None)
            .unwrap();
        let stale = fs::read(t.dir.join(STATE_FILE)).unwrap();
        user_event(&t, "one");
        update(&t, serde_json::json!({"owner": "ops"}));
        (t.id.clone(), stale)
    };
    let dir = tmp.path().join("ttm/txns").join(&id);
    let log = fs::read(dir.join(EVENTS_FILE)).unwrap();
    fs::write(dir.join(STATE_FILE), &stale).unwrap();
    let stale: State = serde_json::from_slice(&stale).unwrap();

    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    let lines = log.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(stale.seq < lines);
    assert_eq!(t.state().seq, lines);
    let rebuilt = disk_state(&t);
    assert_eq!(rebuilt, *t.state());
    assert_eq!(rebuilt.extra.get("owner"), Some(&serde_json::json!("ops")));
    assert_eq!(
        fs::read(dir.join(EVENTS_FILE)).unwrap(),
        log,
        "recovery must not touch a whole log"
    );
}

#[test]
fn an_unparsable_state_json_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, good) = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("t"), &None)
            .unwrap();
        user_event(&t, "one");
        (t.id.clone(), fs::read(t.dir.join(STATE_FILE)).unwrap())
    };
    let path = tmp.path().join("ttm/txns").join(&id).join(STATE_FILE);
    for garbage in [
        &b""[..],
        b"{\"txn_id\": \"x\", \"sta",
        b"\xff\xfe not json\n",
        b"[]\n",
    ] {
        fs::write(&path, garbage).unwrap();
        let store = open(tmp.path());
        store.module("ttm", false).unwrap().txn(&id).unwrap();
        assert_eq!(fs::read(&path).unwrap(), good, "after {garbage:?}");
    }
}

#[test]
fn leftover_temp_files_of_a_crash_are_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("t"), &None)
            .unwrap();
        user_event(&t, "one");
        t.id.clone()
    };
    let txns = tmp.path().join("ttm/txns");
    let dir = txns.join(&id);
    let state = fs::read(dir.join(STATE_FILE)).unwrap();
    let log = fs::read(dir.join(EVENTS_FILE)).unwrap();
    let temp = |d: &Path, hint: &str| fsio::temp_path(d, hint);
    // An interrupted creation: a whole directory under a temporary name.
    let half = temp(&txns, "create");
    fs::create_dir_all(half.join(txn::CTX_DIR)).unwrap();
    fs::write(half.join(txn::CTX_DIR).join("000_policy.md"), "# Policy\n").unwrap();
    fs::write(half.join(EVENTS_FILE), "{\"ts\":").unwrap();
    // An interrupted `active` swap, state.json replacement, evidence upload.
    std::os::unix::fs::symlink(&id, temp(&txns, module::ACTIVE_LINK)).unwrap();
    fs::write(temp(&dir, STATE_FILE), "{\"half\":").unwrap();
    fs::write(temp(&dir.join(txn::CTX_DIR), "evidence"), vec![1u8; 10_000]).unwrap();

    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    for d in [&txns, &dir, &dir.join(txn::CTX_DIR)] {
        let left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(fsio::TEMP_PREFIX))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", d.display());
    }
    assert_eq!(
        m.list(None)
            .iter()
            .map(|t| t.id.clone())
            .collect::<Vec<_>>(),
        [id.as_str()]
    );
    assert_eq!(m.active_id().unwrap().as_deref(), Some(id.as_str()));
    assert_eq!(fs::read(dir.join(STATE_FILE)).unwrap(), state);
    assert_eq!(fs::read(dir.join(EVENTS_FILE)).unwrap(), log);
    let t = m.txn(&id).unwrap();
    assert_eq!(t.ctx_entries().unwrap().len(), 2, "000 and 010 only");
}

#[test]
fn a_garbage_line_in_the_middle_is_kept_counted_and_skipped_by_the_fold() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("t"), &None)
            .unwrap();
        update(&t, serde_json::json!({"lost": 1})); // line 3: garbled below
        update(&t, serde_json::json!({"kept": 2})); // line 4
        user_event(&t, "tail"); // line 5
        t.id.clone()
    };
    let dir = tmp.path().join("ttm/txns").join(&id);
    let text = fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[2].contains("\"lost\""));
    lines[2] = "#%! not json, not even close {".into();
    let damaged = lines.join("\n") + "\n";
    fs::write(dir.join(EVENTS_FILE), &damaged).unwrap();

    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    let s = t.state();
    assert_eq!(s.seq, 5, "the garbage line keeps its number");
    assert_eq!(s.extra.get("lost"), None, "the fold skips the garbage line");
    assert_eq!(s.extra.get("kept"), Some(&serde_json::json!(2)));
    assert_eq!(disk_state(&t), *s, "state.json is the fold");
    assert_eq!(
        fs::read_to_string(dir.join(EVENTS_FILE)).unwrap(),
        damaged,
        "the garbage line is kept, the log untouched"
    );
    assert_eq!(user_event(&t, "next"), 6, "the next append gets seq 6");
    let after = fs::read_to_string(dir.join(EVENTS_FILE)).unwrap();
    assert!(after.starts_with(&damaged));
    let last: serde_json::Value = serde_json::from_str(after.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"], 6);
    assert_eq!(after.lines().count(), 6);
    // And a reopen agrees.
    drop(t);
    drop(store);
    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    assert_eq!(t.state().seq, 6);
    assert_eq!(disk_state(&t).seq, 6);
}

/// A log that is empty, starts with something other than `txn_start`, is a
/// directory, or is a symlink (dangling, or to a good log outside the tree):
/// that transaction is not served and left as it is; the module still opens
/// and serves its other transactions.
#[test]
fn an_unusable_log_takes_out_its_transaction_only() {
    let cases = [
        "empty",
        "no-start",
        "directory",
        "dangling-symlink",
        "symlink-to-a-good-log",
    ];
    for how in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (good, bad) = {
            let store = open(tmp.path());
            let m = store.module("ttm", true).unwrap();
            let bad = m.create(&new_txn("bad"), &None).unwrap();
            user_event(&bad, "one");
            let good = m.create(&new_txn("good"), &None).unwrap();
            user_event(&good, "one");
            (good.id.clone(), bad.id.clone())
        };
        let dir = tmp.path().join("ttm/txns").join(&bad);
        let log = dir.join(EVENTS_FILE);
        let outside = tmp.path().join("outside.ndjson");
        match how {
            "empty" => fs::write(&log, "").unwrap(),
            "no-start" => {
                let text = fs::read_to_string(&log).unwrap();
                let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
                fs::write(
                    &log,
                    format!("{{\"ts\":\"2025-01-01T00:00:00.000Z\",\"event\":\"note\",\"seq\":1}}\n{rest}"),
                )
                .unwrap();
            }
            "directory" => {
                fs::remove_file(&log).unwrap();
                fs::create_dir(&log).unwrap();
            }
            "dangling-symlink" => {
                fs::remove_file(&log).unwrap();
                std::os::unix::fs::symlink(tmp.path().join("nowhere"), &log).unwrap();
            }
            "symlink-to-a-good-log" => {
                fs::rename(&log, &outside).unwrap();
                std::os::unix::fs::symlink(&outside, &log).unwrap();
            }
            _ => unreachable!(),
        }
        let before = listing(&dir);

        let store = Store::open(tmp.path(), Durability::None, Default::default())
            .unwrap_or_else(|e| panic!("{how}: the store does not open: {e}"));
        let m = store
            .module("ttm", false)
            .unwrap_or_else(|e| panic!("{how}: the module does not open: {e}"));
        assert!(
            m.txn(&bad).is_err(),
            "{how}: the broken transaction is served"
        );
        assert!(m.txn(&bad).is_err(), "{how}: served on the second try");
        let listed: Vec<String> = m.list(None).iter().map(|t| t.id.clone()).collect();
        assert_eq!(listed, [good.as_str()], "{how}");
        let t = m.txn(&good).unwrap();
        let seq = t.state().seq;
        assert_eq!(user_event(&t, "still.served"), seq + 1, "{how}");
        assert_eq!(disk_state(&t).seq, seq + 1, "{how}");
        let fresh = m.create(&new_txn("fresh"), &None).unwrap();
        assert_eq!(m.active_id().unwrap().as_deref(), Some(fresh.id.as_str()));
        assert_eq!(
            listing(&dir),
            before,
            "{how}: the broken directory was changed"
        );
        if how == "symlink-to-a-good-log" {
            assert!(outside.is_file(), "the file outside the tree is untouched");
        }
    }
}

#[test]
fn followers_seek_near_their_start_instead_of_scanning() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let store = open(tmp.path());
        let t = store
            .module("ttm", true)
            .unwrap()
            .create(&new_txn("long"), &None)
            .unwrap();
        for _ in 0..600 {
            user_event(&t, "tick");
        }
        let (offset, seq) = t.seek(520);
        assert_eq!(seq, 513);
        let (lines, _) = t.read_lines(offset, t.committed().len, seq).unwrap();
        assert_eq!(lines[0].seq, 513);
        assert_eq!(lines[0].object.as_ref().unwrap()["seq"], 513);
        t.id.clone()
    };
    // The index is rebuilt at load, from the file.
    let store = open(tmp.path());
    let t = store.module("ttm", false).unwrap().txn(&id).unwrap();
    let (offset, seq) = t.seek(600);
    let (lines, _) = t.read_lines(offset, t.committed().len, seq).unwrap();
    assert_eq!(
        (seq, lines[0].object.as_ref().unwrap()["seq"].as_u64()),
        (513, Some(513))
    );
    assert_eq!(t.seek(3), (0, 1));
}

/// A committed transaction made through the store, its directory, and the
/// request id its creation carried.
fn finished_txn(root: &Path, rid: Option<&str>) -> (String, std::path::PathBuf) {
    let store = open(root);
    let m = store.module("ttm", true).unwrap();
    let mut new = new_txn("finished");
    new.request_id = rid.map(str::to_string);
    let t = m.create(&new, &None).unwrap();
    user_event(&t, "progress");
    t.mutate(&fsm(), &Guards::default(), &None, |_, _| {
        Ok(Body::Commit {
            from: "NEW".into(),
            duration_ms: 5,
        })
    })
    .unwrap();
    (t.id.clone(), t.dir.clone())
}

#[test]
fn only_a_finished_transaction_whose_files_agree_is_probed() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, dir) = finished_txn(tmp.path(), Some("make-it-once"));
    let (summary, rid) = txn::probe_finished(&dir).expect("a clean finished transaction");
    assert_eq!((summary.txn_id(), summary.stage()), (id.as_str(), "DONE"));
    // start, activated, progress, the commit's stage_transition, commit
    assert_eq!(summary.seq, 5);
    assert_eq!(rid.as_deref(), Some("make-it-once"));

    let log = fs::read(dir.join(EVENTS_FILE)).unwrap();
    let state = fs::read(dir.join(STATE_FILE)).unwrap();
    let text = String::from_utf8(state.clone()).unwrap();
    let damaged: [(&str, Vec<u8>, Vec<u8>); 6] = [
        (
            "live per state.json",
            log.clone(),
            text.replace("\"DONE\"", "\"EXECUTE\"").into(),
        ),
        (
            "state.json behind",
            log.clone(),
            text.replace("\"seq\": 5", "\"seq\": 4").into(),
        ),
        ("torn tail", [&log[..], b"{\"ts\""].concat(), state.clone()),
        (
            "foreign line last",
            [&log[..], b"{\"event\":\"bash.note\"}\n"].concat(),
            text.replace("\"seq\": 5", "\"seq\": 6").into(),
        ),
        ("no state.json", log.clone(), Vec::new()),
        (
            "stage edited to FAIL",
            log.clone(),
            text.replace("\"DONE\"", "\"FAIL\"").into(),
        ),
    ];
    for (how, log_bytes, state_bytes) in damaged {
        fs::write(dir.join(EVENTS_FILE), &log_bytes).unwrap();
        fs::write(dir.join(STATE_FILE), &state_bytes).unwrap();
        assert!(txn::probe_finished(&dir).is_none(), "{how}: trusted");
    }
}

#[test]
fn a_finished_transaction_with_hook_outcomes_after_its_commit_is_probed() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, dir) = finished_txn(tmp.path(), None);
    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    let t = m.txn(&id).unwrap();
    for seq in [4, 5] {
        let ran = Body::HookRan {
            hook: "on-commit".into(),
            for_seq: seq,
            for_event: "txn_commit".into(),
            outcome: "exited".into(),
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            reason: String::new(),
        };
        t.mutate(&fsm(), &Guards::default(), &None, |_, _| Ok(ran))
            .unwrap();
    }
    drop((t, m, store));
    let (summary, _) = txn::probe_finished(&dir).expect("still a finished transaction");
    assert_eq!((summary.stage(), summary.seq), ("DONE", 7));
}

#[test]
fn finished_transactions_are_summaries_until_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, dir) = finished_txn(tmp.path(), Some("rid-1"));
    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    assert!(m.knows(&id) && !m.is_loaded(&id), "loaded at start");
    assert_eq!(m.count(), 1);
    let listed = m.list(None);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].txn.is_none());
    assert_eq!(
        *m.listed_state(&listed[0]).unwrap(),
        serde_json::from_slice::<State>(&fs::read(dir.join(STATE_FILE)).unwrap()).unwrap()
    );
    // A retried creation finds it without loading anything else.
    let again = m.create(
        &NewTxn {
            request_id: Some("rid-1".into()),
            ..new_txn("finished")
        },
        &None,
    );
    assert_eq!(again.unwrap().id, id);
    assert!(m.is_loaded(&id));
    // Loaded while used; let go by the checkpoint once nobody holds it.
    let held = m.txn(&id).unwrap();
    m.checkpoint();
    assert!(m.is_loaded(&id), "evicted while held");
    drop(held);
    m.checkpoint();
    assert!(!m.is_loaded(&id) && m.knows(&id));
    assert_eq!(m.list(Some("DONE")).len(), 1);
    // Removed by hand: forgotten and announced.
    let mut changes = store.watch("ttm").unwrap();
    fs::remove_dir_all(&dir).unwrap();
    m.reconcile_dir(&id);
    assert!(!m.knows(&id));
    let change = changes.try_recv().unwrap();
    assert_eq!(change.kind, module::ChangeKind::Removed);
    assert_eq!(change.from, "DONE");
    assert!(m.list(None).is_empty());
}

#[test]
fn a_live_transaction_is_never_let_go() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let m = store.module("ttm", true).unwrap();
    let id = m.create(&new_txn("live"), &None).unwrap().id.clone();
    m.checkpoint();
    assert!(m.is_loaded(&id));
}

#[test]
fn a_summary_whose_files_broke_since_start_is_quarantined_not_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, dir) = finished_txn(tmp.path(), None);
    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    assert!(m.knows(&id) && !m.is_loaded(&id));
    fs::write(dir.join(EVENTS_FILE), b"{\"event\":\"progress\"}\n").unwrap();
    assert!(m.txn(&id).is_err());
    assert!(m.list(None).is_empty(), "still listed as finished");
    assert!(m.quarantined().contains_key(&id));
}

#[test]
fn a_foreign_fragment_ended_by_a_write_is_folded_like_any_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let m = store.module("ttm", true).unwrap();
    let t = m.create(&new_txn("t"), &None).unwrap();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(t.dir.join(EVENTS_FILE))
        .unwrap();
    // A bash `printf` without its newline, then a write of ours.
    log.write_all(
        br#"{"ts":"2026-11-26T00:00:00.000Z","event":"state_updated","patch":{"owner":"bash"}}"#,
    )
    .unwrap();
    drop(log);
    let seq = user_event(&t, "after");
    let text = fs::read_to_string(t.dir.join(EVENTS_FILE)).unwrap();
    assert_eq!(text.lines().count() as u64, seq);
    assert!(text.contains("{\"owner\":\"bash\"}}\n"), "{text}");
    assert_eq!(
        t.state().extra.get("owner"),
        Some(&serde_json::json!("bash"))
    );
    assert_eq!(disk_state(&t), *t.state());
    // The fold of the file agrees: a fresh load changes nothing.
    let id = t.id.clone();
    drop((t, m, store));
    let again = open(tmp.path())
        .module("ttm", false)
        .unwrap()
        .txn(&id)
        .unwrap();
    assert_eq!(
        again.state().extra.get("owner"),
        Some(&serde_json::json!("bash"))
    );
}

/// An activation racing a commit never logs `activated` after the commit:
/// whether the transaction is finished is decided under its lock, not from
/// the snapshot readers see (which waits for the commit's sync).
#[test]
fn an_activation_racing_a_commit_never_writes_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Durability::Fsync, Default::default()).unwrap();
    let m = store.module("ttm", true).unwrap();
    for round in 0..40 {
        let mut new = new_txn("race");
        new.activate = false;
        let t = m.create(&new, &None).unwrap();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                t.mutate(&fsm(), &Guards::default(), &None, |_, _| {
                    Ok(Body::Commit {
                        from: "NEW".into(),
                        duration_ms: 1,
                    })
                })
                .unwrap();
            });
            barrier.wait();
            m.activate(&t.id, &Guards::default(), &None).unwrap();
        });
        let log = fs::read_to_string(t.dir.join(EVENTS_FILE)).unwrap();
        let last = log.lines().last().unwrap();
        assert!(last.contains("\"txn_commit\""), "round {round}: {log}");
    }
}

/// Archiving racing a retry never moves a transaction that came back to
/// life: either the retry wins and it stays, or the archive wins and the
/// retry is refused.
#[test]
fn archiving_racing_a_retry_never_archives_a_live_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Durability::Fsync, Default::default()).unwrap();
    let m = store.module("ttm", true).unwrap();
    let (mut archived, mut retried) = (0, 0);
    for round in 0..40 {
        let mut new = new_txn(&format!("race {round}"));
        new.activate = false;
        let t = m.create(&new, &None).unwrap();
        t.mutate(&fsm(), &Guards::default(), &None, |_, _| {
            Ok(Body::Fail {
                from: "NEW".into(),
                error: "boom".into(),
            })
        })
        .unwrap();
        let barrier = std::sync::Barrier::new(2);
        let retry = std::thread::scope(|scope| {
            let retry = scope.spawn(|| {
                barrier.wait();
                t.mutate(&fsm(), &Guards::default(), &None, |_, _| {
                    Ok(Body::Retry {
                        to: "NEW".into(),
                        iteration: 2,
                    })
                })
            });
            barrier.wait();
            m.archive(0, None, true).unwrap();
            retry.join().unwrap()
        });
        let moved = m.archive_dir().join(&t.id);
        if moved.is_dir() {
            archived += 1;
            let log = fs::read_to_string(moved.join(EVENTS_FILE)).unwrap();
            assert!(
                log.lines().last().unwrap().contains("\"txn_fail\""),
                "round {round}: a live transaction was archived: {log}"
            );
            assert!(
                retry.is_err(),
                "round {round}: a retry was acknowledged into the archive"
            );
        } else {
            retried += 1;
            assert!(retry.is_ok(), "round {round}: neither archived nor retried");
            assert!(m.is_loaded(&t.id));
        }
    }
    assert_eq!(archived + retried, 40);
}

#[test]
fn a_finished_transaction_refuses_evidence_and_the_upload_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let module = store.module("ttm", true).unwrap();
    let t = module.create(&new_txn("t"), &None).unwrap();
    t.mutate(&fsm(), &Guards::default(), &None, |s, now| {
        Ok(crate::core::admit::commit(s, now))
    })
    .unwrap();
    let log = fs::read(t.dir.join(EVENTS_FILE)).unwrap();
    let (temp, mut f) = t.create_temp_evidence().unwrap();
    f.write_all(b"late").unwrap();
    let path = temp.path().to_path_buf();
    let evidence = txn::NewEvidence {
        bytes: 4,
        sha256: crate::core::ctx::sha256_hex(b"late"),
        description: "late".into(),
        file_name: "late.txt".into(),
    };
    let err = t
        .add_evidence(&fsm(), 100, temp, &evidence, &Guards::default(), &None)
        .unwrap_err();
    assert!(err.to_string().contains("DONE, which is final"), "{err}");
    assert!(!path.exists(), "the refused upload stays behind");
    assert_eq!(fs::read(t.dir.join(EVENTS_FILE)).unwrap(), log);
    let names: Vec<_> = fs::read_dir(t.dir.join("ctx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // An abandoned upload (its guard dropped) leaves nothing either.
    let (temp, _) = t.create_temp_evidence().unwrap();
    let path = temp.path().to_path_buf();
    assert!(path.exists());
    drop(temp);
    assert!(!path.exists());

    // Activating it moves only the pointer: its log is final.
    let out = module.activate(&t.id, &Guards::default(), &None).unwrap();
    assert!(out.event.is_none() && !out.replayed);
    assert_eq!(fs::read(t.dir.join(EVENTS_FILE)).unwrap(), log);
    assert_eq!(module.active_id().unwrap().as_deref(), Some(t.id.as_str()));
}
