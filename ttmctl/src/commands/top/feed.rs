//! The streams behind `ttmctl top`: the module's `Watch` (plus one `List`
//! to start from and a `GetState` per change), and the selected
//! transaction's followed `Events`. Nothing here reads the tree's files.
//!
//! A lost daemon is retried every second (the channel dials the socket
//! anew); a refusal (unknown module, transaction gone) ends the feed.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{
    ChangeKind, Event, EventsRequest, GetStateRequest, ListRequest, TxnRef, WatchRequest,
    WatchResponse,
};

use super::app::Msg;
use crate::connect::Daemon;
use crate::exit::{Exit, Failure};

/// Pause before trying a lost daemon again.
const RETRY: Duration = Duration::from_secs(1);

/// A spawned task that ends when this handle is dropped.
#[derive(Debug)]
pub struct Task(JoinHandle<()>);

impl Task {
    pub fn spawn(future: impl Future<Output = ()> + 'static) -> Task {
        Task(tokio::task::spawn_local(future))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a failure is worth retrying: the daemon went away or cannot
/// write right now; anything else is an answer that will not change.
fn transient(failure: &Failure) -> bool {
    matches!(
        failure.exit,
        Exit::Unreachable | Exit::Storage | Exit::Other
    )
}

/// Feeds `module`'s transactions and their changes into `tx` until the
/// receiver is gone.
pub async fn module(mut daemon: Daemon, module: String, tx: UnboundedSender<Msg>) {
    loop {
        let failure = match module_once(&mut daemon, &module, &tx).await {
            Ok(()) => Failure::new(Exit::Unreachable, "ttmd ended the watch"),
            Err(failure) => failure,
        };
        let retry = transient(&failure);
        let message = if retry {
            format!("{}; retrying", failure.message)
        } else {
            failure.message
        };
        if tx
            .send(Msg::Lost {
                module: module.clone(),
                message,
            })
            .is_err()
            || !retry
        {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn module_once(
    daemon: &mut Daemon,
    module: &str,
    tx: &UnboundedSender<Msg>,
) -> Result<(), Failure> {
    // Watch first, then list: a change between the two is applied twice,
    // which is harmless; none is missed.
    let request = WatchRequest {
        module: module.to_owned(),
    };
    let mut watch = daemon.call(async move |c| c.watch(request).await).await?;
    let request = ListRequest {
        module: module.to_owned(),
        stage: String::new(),
        brief: true,
        ..Default::default()
    };
    let list = crate::commands::pages::txns(daemon, request).await?;
    let latest: Vec<(String, u64)> = list
        .txns
        .iter()
        .rev()
        .map(|t| (t.txn_id.clone(), t.seq))
        .collect();
    let sent = tx.send(Msg::Snapshot {
        module: module.to_owned(),
        txns: list.txns,
        quarantined: list.quarantined.len(),
    });
    if sent.is_err() {
        return Ok(());
    }
    // Each transaction's latest event, newest transactions first, while
    // changes keep flowing.
    let _backfill = Task::spawn(backfill(
        daemon.clone(),
        module.to_owned(),
        latest,
        tx.clone(),
    ));
    loop {
        let change = match watch.message().await {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(()),
            Err(status) => return Err(daemon.explain(status).await),
        };
        if change.heartbeat.is_some() {
            continue;
        }
        let Some(message) = change_message(daemon, module, change, tx).await? else {
            continue;
        };
        if tx.send(message).is_err() {
            return Ok(());
        }
    }
}

/// What the monitor is told about one change: a removal, or the changed
/// transaction's fresh state (after its latest event, and its activation,
/// when that is what changed). `None` when it is gone again already: its
/// removal follows on the feed.
async fn change_message(
    daemon: &mut Daemon,
    module: &str,
    change: WatchResponse,
    tx: &UnboundedSender<Msg>,
) -> Result<Option<Msg>, Failure> {
    let txn_id = change.txn_id;
    let kind = ChangeKind::try_from(change.kind);
    if let Ok(ChangeKind::Removed | ChangeKind::Archived) = kind {
        let module = module.to_owned();
        return Ok(Some(Msg::Removed { module, txn_id }));
    }
    if kind == Ok(ChangeKind::Activated) {
        let _ = tx.send(Msg::Activated {
            module: module.to_owned(),
            txn_id: txn_id.clone(),
        });
    }
    let request = GetStateRequest {
        txn: txn_ref(module, &txn_id),
    };
    let state = match daemon.call(async move |c| c.get_state(request).await).await {
        Ok(reply) => reply.state,
        Err(failure) if failure.exit == Exit::NotFound => None,
        Err(failure) => return Err(failure),
    };
    let Some(state) = state else {
        return Ok(None);
    };
    if let Some(event) = last_event(daemon, module, &txn_id, state.seq).await {
        let _ = tx.send(Msg::LastEvent {
            module: module.to_owned(),
            txn_id,
            event,
        });
    }
    Ok(Some(Msg::State {
        module: module.to_owned(),
        state: Box::new(state),
    }))
}

fn txn_ref(module: &str, id: &str) -> Option<TxnRef> {
    Some(TxnRef {
        module: module.to_owned(),
        txn_id: id.to_owned(),
    })
}

/// The event with sequence number `seq` (a transaction's latest).
async fn last_event(daemon: &mut Daemon, module: &str, id: &str, seq: u64) -> Option<Event> {
    let request = EventsRequest {
        txn: txn_ref(module, id),
        from_seq: seq.max(1),
        event: String::new(),
        follow: false,
    };
    let mut stream = daemon
        .call(async move |c| c.events(request).await)
        .await
        .ok()?;
    let mut last = None;
    while let Ok(Some(message)) = stream.message().await {
        if let Some(Kind::Event(event)) = message.kind {
            last = Some(event);
        }
    }
    last
}

async fn backfill(
    mut daemon: Daemon,
    module: String,
    txns: Vec<(String, u64)>,
    tx: UnboundedSender<Msg>,
) {
    for (txn_id, seq) in txns {
        if let Some(event) = last_event(&mut daemon, &module, &txn_id, seq).await {
            let message = Msg::LastEvent {
                module: module.clone(),
                txn_id,
                event,
            };
            if tx.send(message).is_err() {
                return;
            }
        }
    }
}

/// Follows one transaction's events from `from` into `tx`, resuming after
/// the last one received when ttmd goes away and comes back.
pub async fn events(
    mut daemon: Daemon,
    module: String,
    txn_id: String,
    from: u64,
    tx: UnboundedSender<Msg>,
) {
    let mut next = from;
    loop {
        let request = EventsRequest {
            txn: txn_ref(&module, &txn_id),
            from_seq: next,
            event: String::new(),
            follow: true,
        };
        let failure = match daemon.call(async move |c| c.events(request).await).await {
            Err(failure) => failure,
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        if let Some(Kind::Event(event)) = message.kind {
                            next = event.seq + 1;
                            let message = Msg::Event {
                                txn_id: txn_id.clone(),
                                event,
                            };
                            if tx.send(message).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break Failure::new(Exit::Unreachable, "stream ended"),
                    Err(status) => break daemon.explain(status).await,
                }
            },
        };
        if !transient(&failure) {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}
