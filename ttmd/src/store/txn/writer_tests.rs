//! The writer's rounds: a batch applied in order, each request answered on
//! its own, a failed write taking back exactly the batch it held.

use std::fs;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::super::{EVENTS_FILE, Guards, Outcome, STATE_FILE, Txn, lock};
use crate::core::event::Body;
use crate::core::fsm::Fsm;
use crate::core::{Error, Result};
use crate::store::module::NewTxn;
use crate::store::{Durability, Store};

fn new_txn() -> NewTxn {
    NewTxn {
        time: Default::default(),
        description: "w".into(),
        target: "@local".into(),
        agent: "human".into(),
        activate: false,
        request_id: None,
    }
}

fn user(kind: &str) -> Body {
    Body::User {
        event: kind.into(),
        data: Default::default(),
    }
}

fn txn(root: &std::path::Path) -> (Store, Arc<Txn>) {
    let store = Store::open(root, Durability::Fsync, Default::default()).unwrap();
    let t = store
        .module("ttm", true)
        .unwrap()
        .create(&new_txn(), &None)
        .unwrap();
    (store, t)
}

fn queue(t: &Txn, guards: Guards, kind: &'static str) -> oneshot::Receiver<Result<Outcome>> {
    let fsm = Arc::new(Fsm::default());
    t.submit(fsm, guards, None, move |_, _| Ok(user(kind)))
}

fn seqs(t: &Txn) -> Vec<u64> {
    let text = fs::read_to_string(t.dir.join(EVENTS_FILE)).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_round_applies_its_batch_in_order_and_refuses_one_without_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    // Hold the turn so the requests wait in one queue, then run them as
    // one round.
    t.take_turn();
    let first = queue(&t, Guards::default(), "a");
    let after_first = Guards {
        expect_seq: Some(start + 1),
        ..Default::default()
    };
    let second = queue(&t, after_first, "b");
    let wrong_stage = Guards {
        expect_stage: Some("SELECT".into()),
        ..Default::default()
    };
    let refused = queue(&t, wrong_stage, "c");
    let stale = Guards {
        expect_seq: Some(start),
        ..Default::default()
    };
    let also_refused = queue(&t, stale, "d");
    let last = queue(&t, Guards::default(), "e");
    t.pass_turn();
    assert_eq!(first.blocking_recv().unwrap().unwrap().seq(), start + 1);
    assert_eq!(second.blocking_recv().unwrap().unwrap().seq(), start + 2);
    let err = refused.blocking_recv().unwrap().unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    let err = also_refused.blocking_recv().unwrap().unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert_eq!(last.blocking_recv().unwrap().unwrap().seq(), start + 3);
    // Durable, published and viewed as one: the file, the snapshot, the
    // followers' mark and state.json agree.
    assert_eq!(seqs(&t), (1..=start + 3).collect::<Vec<_>>());
    assert_eq!(t.state().seq, start + 3);
    assert_eq!(t.committed().seq, start + 3);
    let len = fs::metadata(t.dir.join(EVENTS_FILE)).unwrap().len();
    assert_eq!(t.committed().len, len);
    let view: serde_json::Value =
        serde_json::from_slice(&fs::read(t.dir.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(view["seq"].as_u64(), Some(start + 3));
    // The writer ended with its queue.
    assert!(!lock(&t.queue).is_busy());
}

#[test]
fn a_request_id_repeated_in_one_round_is_answered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    let once = Guards {
        request_id: Some("r-1".into()),
        request_digest: Some("d".into()),
        ..Default::default()
    };
    t.take_turn();
    let first = queue(&t, once.clone(), "a");
    let retry = queue(&t, once, "a");
    t.pass_turn();
    let first = first.blocking_recv().unwrap().unwrap();
    let retry = retry.blocking_recv().unwrap().unwrap();
    assert!(!first.replayed && retry.replayed);
    assert_eq!((first.seq(), retry.seq()), (start + 1, start + 1));
    assert_eq!(retry.state.seq, start + 1);
    assert_eq!(seqs(&t).len() as u64, start + 1);
}

#[test]
fn a_failed_write_fails_its_batch_and_takes_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    let log = t.dir.join(EVENTS_FILE);
    let saved = tmp.path().join("saved");
    fs::hard_link(&log, &saved).unwrap();
    // Another file in the log's place: ttmd refuses to write to it.
    let copy = tmp.path().join("copy");
    fs::copy(&log, &copy).unwrap();
    fs::rename(&copy, &log).unwrap();
    let keyed = |id: &str| Guards {
        request_id: Some(id.into()),
        ..Default::default()
    };
    t.take_turn();
    let lost = [queue(&t, keyed("k-1"), "a"), queue(&t, keyed("k-2"), "b")];
    t.pass_turn();
    for answer in lost {
        let err = answer.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
    // The real log back: the same requests are new requests, numbered on
    // from where the written log ends.
    fs::rename(&saved, &log).unwrap();
    let again = queue(&t, keyed("k-1"), "a")
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert!(!again.replayed);
    assert_eq!(again.seq(), start + 1);
    let next = queue(&t, keyed("k-2"), "b")
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert_eq!(next.seq(), start + 2);
    assert_eq!(seqs(&t), (1..=start + 2).collect::<Vec<_>>());
}

#[test]
fn a_synchronous_caller_waits_its_turn_behind_queued_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    t.take_turn();
    let queued = queue(&t, Guards::default(), "queued");
    let sync = {
        let t = t.clone();
        std::thread::spawn(move || {
            t.mutate(&Fsm::default(), &Guards::default(), &None, |_, _| {
                Ok(user("sync"))
            })
        })
    };
    // Wait until the caller stands in the queue (lack of progress would
    // hang here; the harness's timeout reports it).
    while lock(&t.queue).entries.len() < 2 {
        std::thread::yield_now();
    }
    t.pass_turn();
    assert_eq!(queued.blocking_recv().unwrap().unwrap().seq(), start + 1);
    assert_eq!(sync.join().unwrap().unwrap().seq(), start + 2);
    assert!(!lock(&t.queue).is_busy());
}

#[test]
fn writes_held_for_a_creation_wait_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    t.hold_writes();
    let mut held = queue(&t, Guards::default(), "held");
    // Nothing runs while the turn is held: no answer, no line.
    assert!(held.try_recv().is_err());
    assert_eq!(t.state().seq, start);
    t.release_writes();
    let done = held.try_recv().unwrap().unwrap();
    assert_eq!(done.seq(), start + 1);
    assert_eq!(seqs(&t).last(), Some(&(start + 1)));
}

#[test]
fn a_round_that_panics_gives_the_turn_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    let fsm = Arc::new(Fsm::default());
    // No runtime here, so the writer runs on this thread and the panic
    // comes back to it.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.submit(fsm, Guards::default(), None, |_, _| {
            panic!("a bug in a step")
        })
    }));
    assert!(panicked.is_err());
    let mut next = queue(&t, Guards::default(), "after");
    let done = next.try_recv().unwrap().unwrap();
    assert_eq!(done.seq(), start + 1);
}

/// A synchronous caller holding the only pool thread, waiting for the turn
/// of a writer that needs a pool thread to start, takes the turn over
/// instead of waiting forever.
#[test]
fn a_caller_on_a_full_pool_takes_over_a_writer_that_cannot_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, t) = txn(tmp.path());
    let start = t.state().seq;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let _entered = rt.enter();
    t.hold_writes();
    let queued = queue(&t, Guards::default(), "queued");
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let caller = {
        let t = t.clone();
        rt.spawn_blocking(move || {
            entered_tx.send(()).unwrap();
            t.mutate(&Fsm::default(), &Guards::default(), &None, |_, _| {
                Ok(user("sync"))
            })
        })
    };
    // The caller now holds the pool's one thread (and then waits for the
    // turn); releasing spawns a writer that cannot get a thread.
    entered_rx.recv().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.release_writes();
    let hang = std::time::Duration::from_secs(60);
    let sync = rt.block_on(async { tokio::time::timeout(hang, caller).await });
    let sync = sync.expect("the caller waited forever").unwrap().unwrap();
    let queued = rt.block_on(async { tokio::time::timeout(hang, queued).await });
    let queued = queued
        .expect("the queued request waited forever")
        .unwrap()
        .unwrap();
    let mut got = vec![sync.seq(), queued.seq()];
    got.sort();
    assert_eq!(got, vec![start + 1, start + 2]);
}
