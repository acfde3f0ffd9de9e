//! Store tests of the audit's hand edits: a log cut or overwritten under
//! what ttmd wrote, a request id reused for another request, a copied
//! transaction directory, ids unique among archived transactions.

use std::fs;
use std::path::Path;

use super::module::NewTxn;
use super::txn::{EVENTS_FILE, Guards};
use super::*;
use crate::core::Error;
use crate::core::event::Body;

fn new_txn(desc: &str) -> NewTxn {
    NewTxn {
        time: Default::default(),
        description: desc.into(),
        target: "@local".into(),
        agent: "human".into(),
        activate: false,
        request_id: None,
    }
}

fn open(root: &Path) -> Store {
    Store::open(root, Durability::Fsync, Default::default()).unwrap()
}

fn user(kind: &str) -> Body {
    Body::User {
        event: kind.into(),
        data: Default::default(),
    }
}

fn cut(path: &Path, by: u64) {
    let len = fs::metadata(path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - by).unwrap();
}

#[test]
fn a_shrunk_log_refuses_writes_and_reads_and_quarantines_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let m = store.module("ttm", true).unwrap();
    let t = m.create(&new_txn("t"), &None).unwrap();
    let fsm = m.fsm();
    t.mutate(&fsm, &Guards::default(), &None, |_, _| Ok(user("e")))
        .unwrap();
    let log = t.dir.join(EVENTS_FILE);
    cut(&log, 20);
    let cut_bytes = fs::read(&log).unwrap();
    let err = t
        .mutate(&fsm, &Guards::default(), &None, |_, _| Ok(user("x")))
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(t.log_damaged());
    // Refused again, also once the log has grown past where it was.
    fs::write(&log, vec![b'{'; 4096]).unwrap();
    assert!(
        t.mutate(&fsm, &Guards::default(), &None, |_, _| Ok(user("x")))
            .is_err()
    );
    fs::write(&log, &cut_bytes).unwrap();
    let end = t.committed();
    assert!(
        t.read_lines(0, end.len, 1).is_err(),
        "a short read is an error"
    );
    drop(t);
    let id = m.list(None)[0].id.clone();
    drop(m);
    drop(store);
    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    assert!(m.txn(&id).is_err());
    assert!(
        m.quarantined()[&id].contains("removed"),
        "{:?}",
        m.quarantined()
    );
}

#[test]
fn a_log_that_lost_only_its_last_newline_gets_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let m = store.module("ttm", true).unwrap();
    let t = m.create(&new_txn("t"), &None).unwrap();
    let log = t.dir.join(EVENTS_FILE);
    cut(&log, 1);
    let out = t
        .mutate(&m.fsm(), &Guards::default(), &None, |_, _| Ok(user("x")))
        .unwrap();
    assert_eq!(out.state.seq, 2);
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.ends_with('\n'));
}

#[test]
fn a_request_id_reused_for_another_request_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let store = open(tmp.path());
        let m = store.module("ttm", true).unwrap();
        let t = m.create(&new_txn("t"), &None).unwrap();
        let g = |what: &str| Guards {
            request_id: Some("deploy-1".into()),
            request_digest: Some(crate::core::event::request_digest(what)),
            ..Default::default()
        };
        let first = t.mutate(&m.fsm(), &g("a"), &None, |_, _| Ok(user("e")));
        assert!(!first.unwrap().replayed);
        let again = t.mutate(&m.fsm(), &g("a"), &None, |_, _| Ok(user("e")));
        assert!(again.unwrap().replayed);
        let other = t.mutate(&m.fsm(), &g("b"), &None, |_, _| Ok(user("f")));
        assert!(matches!(other, Err(Error::RequestIdReused(_))), "{other:?}");
        t.id.clone()
    };
    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    let t = m.txn(&id).unwrap();
    let g = Guards {
        request_id: Some("deploy-1".into()),
        request_digest: Some(crate::core::event::request_digest("b")),
        ..Default::default()
    };
    let other = t.mutate(&m.fsm(), &g, &None, |_, _| Ok(user("f")));
    assert!(
        matches!(other, Err(Error::RequestIdReused(_))),
        "after reopen: {other:?}"
    );
    assert_eq!(t.state().seq, 2);
}

#[test]
fn a_copied_directory_is_loaded_under_its_own_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, copy) = {
        let store = open(tmp.path());
        let m = store.module("ttm", true).unwrap();
        let mut new = new_txn("t");
        new.request_id = Some("create-1".into());
        let t = m.create(&new, &None).unwrap();
        let copy = m.txns_dir.join("copy-20250101T000000");
        fs::create_dir_all(copy.join("ctx")).unwrap();
        for f in ["events.ndjson", "state.json"] {
            fs::copy(t.dir.join(f), copy.join(f)).unwrap();
        }
        (t.id.clone(), "copy-20250101T000000".to_string())
    };
    let store = open(tmp.path());
    let m = store.module("ttm", false).unwrap();
    let c = m.txn(&copy).unwrap();
    assert_eq!(c.state().txn_id, copy);
    assert_eq!(c.state().extra["copied_from"], original.as_str());
    assert_eq!(
        c.create_request, None,
        "the creation request is the original's"
    );
    assert_eq!(m.txn(&original).unwrap().state().txn_id, original);
    let mut ids: Vec<String> = m
        .list(None)
        .into_iter()
        .map(|l| l.summary.txn_id().to_string())
        .collect();
    ids.sort();
    let mut want = vec![copy, original];
    want.sort();
    assert_eq!(ids, want);
}
