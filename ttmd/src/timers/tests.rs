//! The timer's bookkeeping: which state an entry was computed from, a
//! retry after the disk failed a rule, the longest sleep.

use super::*;
use crate::core::event::{Body, Event, Logged};
use crate::core::state::fold_logged;
use crate::store::Durability;

const FSM: &str = r#"{
    "stages": ["NEW", "EXECUTE"],
    "timeouts": {"EXECUTE": {"after": "30m", "on_timeout": "note"}}
}"#;

fn timers(root: &std::path::Path) -> Timers {
    let store = Arc::new(Store::open(root, Durability::None, Default::default()).unwrap());
    let leases = crate::leases::Local::open(store.clone(), "test".into(), None).unwrap();
    Timers::open(store, Arc::new(leases))
}

/// A transaction in EXECUTE since now, with `extra` user events after.
fn state(extra: usize) -> State {
    let ts = Some(crate::core::state::timestamp(Utc::now()));
    let line = |event| Logged {
        ts: ts.clone(),
        request_id: None,
        event: Event::Body(event),
    };
    let mut lines = vec![
        line(Body::Start {
            txn_id: "t-20301201T000000".into(),
            description: String::new(),
            target: "@local".into(),
            agent: "cron".into(),
            module: "ttm".into(),
            stage: "NEW".into(),
            ctx_digest: String::new(),
            time: Default::default(),
        }),
        line(Body::Transition {
            from: "NEW".into(),
            to: "EXECUTE".into(),
            iteration: None,
        }),
    ];
    for _ in 0..extra {
        lines.push(line(Body::User {
            event: "progress".into(),
            data: Default::default(),
        }));
    }
    let numbered = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l));
    fold_logged(numbered, "ttm").unwrap()
}

#[test]
fn an_unchanged_due_time_still_takes_the_newer_seq() {
    let dir = tempfile::tempdir().unwrap();
    let t = timers(dir.path());
    let fsm = Fsm::from_json(FSM).unwrap();
    let key: TxnKey = ("ttm".into(), "t-20301201T000000".into());
    let (old, new) = (state(0), state(2));
    t.arm(&key, &old, &fsm);
    t.arm(&key, &new, &fsm);
    let at = t.lock().at.get(&key).copied();
    assert_eq!(at.map(|(_, seq)| seq), Some(new.seq));
    assert_eq!(t.pending(), 1);
}

#[test]
fn a_rule_the_disk_failed_is_queued_again_unless_armed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let t = timers(dir.path());
    let key: TxnKey = ("ttm".into(), "t-20301201T000000".into());
    let later = Utc::now() + chrono::TimeDelta::seconds(30);
    t.requeue(&key, later);
    assert_eq!(t.pending(), 1);
    assert_eq!(t.lock().at.get(&key).copied(), Some((later, 0)));
    // Armed from a real state, which replaces the retry.
    let fsm = Fsm::from_json(FSM).unwrap();
    t.arm(&key, &state(0), &fsm);
    assert_eq!(t.pending(), 1);
    t.requeue(&key, later);
    assert_eq!(t.pending(), 1, "armed meanwhile: not queued twice");
}

#[test]
fn the_timer_sleeps_a_minute_at_most() {
    assert_eq!(nap(Duration::from_secs(3600)), Duration::from_secs(60));
    assert_eq!(nap(Duration::from_secs(5)), Duration::from_secs(5));
}

#[test]
fn a_transaction_gone_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let t = timers(dir.path());
    let fsm = Fsm::from_json(FSM).unwrap();
    let key: TxnKey = ("ttm".into(), "t-20301201T000000".into());
    t.heard(&key, &state(0), &fsm);
    assert_eq!(t.pending(), 1);
    t.forget(&key);
    assert_eq!(t.pending(), 0);
    let inner = t.lock();
    assert!(inner.heard.is_empty() && inner.at.is_empty());
}
