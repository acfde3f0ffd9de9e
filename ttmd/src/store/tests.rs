//! Store tests on real temporary directories.

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
        description: desc.into(),
        target: "@local".into(),
        agent: "human".into(),
        activate: true,
        request_id: None,
    }
}

fn open(root: &Path) -> Store {
    Store::open(root, Durability::None, Default::default()).unwrap()
}

fn user_event(txn: &Txn, kind: &str) -> u64 {
    let out = txn
        .mutate(&Guards::default(), &None, |_, _| {
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
        let err = t.mutate(&g, &None, |_, _| Ok(Body::Activated)).unwrap_err();
        assert!(matches!(err, crate::core::Error::Aborted(_)), "{err}");
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
        let first = t.mutate(&g, &None, |_, _| Ok(Body::Activated)).unwrap();
        user_event(&t, "later");
        let again = t.mutate(&g, &None, |_, _| Ok(Body::Activated)).unwrap();
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
    let again = t.mutate(&g, &None, |_, _| Ok(Body::Activated)).unwrap();
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
        let temp = t.temp_path();
        fs::write(&temp, body).unwrap();
        let sha = crate::core::ctx::sha256_hex(body.as_bytes());
        let out = t
            .add_evidence(
                &temp,
                body.len() as u64,
                &sha,
                desc,
                file,
                &Guards::default(),
                &None,
            )
            .unwrap();
        names.push(out.event["file"].as_str().unwrap().to_string());
        assert!(!temp.exists());
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
