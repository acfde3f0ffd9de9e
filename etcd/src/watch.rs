//! [`Watch`]: a key prefix watched from a revision.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::metadata::MetadataValue;

use crate::EtcdError;
use crate::client::{Etcd, describe, prefix_end};
use crate::mvccpb::Event;
use crate::pb::watch_client::WatchClient;
use crate::pb::watch_request::RequestUnion;
use crate::pb::{WatchCreateRequest, WatchRequest, WatchResponse};

/// What a [`Watch`] reports.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// Changes, in revision order, and the store's revision after them.
    Events {
        /// The changes (puts and deletes) of one or more revisions.
        events: Vec<Event>,
        /// The store's revision when they were sent.
        revision: i64,
    },
    /// Nothing changed under the prefix up to `revision`.
    Progress {
        /// The store's revision.
        revision: i64,
    },
    /// The start revision was compacted away: nothing will follow. Read
    /// the range again and watch from its revision + 1; never skip.
    Compacted {
        /// The revision etcd compacted up to.
        compact_revision: i64,
    },
    /// etcd ended the watch (e.g. its member lost the leader): nothing
    /// will follow; open a new one from the next revision.
    Canceled {
        /// etcd's reason.
        reason: String,
    },
}

/// A prefix watched from a revision. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watch {
    stream: Streaming<WatchResponse>,
    pending: Option<WatchResponse>,
    // Keeps the request side open: closing it ends the watch.
    _requests: mpsc::Sender<WatchRequest>,
}

impl Etcd {
    /// Watches every key under `prefix` from `start_revision` (inclusive;
    /// 0: from now), on the first endpoint that accepts. A member that
    /// loses its leader cancels the watch (`hasleader`), rather than
    /// leaving it silent while the others go on.
    pub async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        self.watch_prefix_with(prefix, start_revision, false).await
    }

    /// [`Etcd::watch_prefix`]; with `prev_kv`, each event also carries the
    /// key's value before the change.
    pub async fn watch_prefix_with(
        &self,
        prefix: &[u8],
        start_revision: i64,
        prev_kv: bool,
    ) -> Result<Watch, EtcdError> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision,
                prev_kv,
                // Catching up, etcd sends many revisions in one reply; in
                // fragments it stays under its own message limit (each
                // fragment's events are in order, so each is delivered).
                fragment: true,
                ..Default::default()
            })),
        };
        let mut last = String::new();
        for (url, channel) in self.channels() {
            let opened = tokio::time::timeout(self.timeout(), open(channel, create.clone())).await;
            match opened {
                Ok(Ok(watch)) => {
                    self.prefer(&url);
                    return Ok(watch);
                }
                Ok(Err(why)) => last = format!("{url}: {why}"),
                Err(_) => last = format!("{url}: no answer within {:?}", self.timeout()),
            }
        }
        Err(self.unreachable(last))
    }
}

/// Opens a watch on `channel` and waits for etcd's creation notice.
async fn open(channel: tonic::transport::Channel, create: WatchRequest) -> Result<Watch, String> {
    let (tx, rx) = mpsc::channel(1);
    tx.send(create)
        .await
        .map_err(|_| "watch request not sent".to_owned())?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("hasleader", MetadataValue::from_static("true"));
    let reply = WatchClient::new(channel)
        .max_decoding_message_size(crate::client::MAX_REPLY)
        .watch(request)
        .await
        .map_err(|s| describe(&s))?;
    let mut stream = reply.into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| describe(&s))?
        .ok_or_else(|| "the watch ended before it was created".to_owned())?;
    // A creation notice carries nothing else; anything more is kept for
    // the first `next`.
    let plain =
        first.created && !first.canceled && first.events.is_empty() && first.compact_revision == 0;
    Ok(Watch {
        stream,
        pending: (!plain).then_some(first),
        _requests: tx,
    })
}

impl Watch {
    /// The next item. After [`WatchItem::Compacted`] or
    /// [`WatchItem::Canceled`] the watch is over. An error means the
    /// connection was lost: open a new watch from the next revision.
    pub async fn next(&mut self) -> Result<WatchItem, EtcdError> {
        loop {
            let reply = match self.pending.take() {
                Some(reply) => reply,
                None => match self.stream.message().await {
                    Ok(Some(reply)) => reply,
                    Ok(None) => return Err(lost("the watch stream ended".to_owned())),
                    Err(status) => return Err(lost(describe(&status))),
                },
            };
            let revision = reply.header.as_ref().map_or(0, |h| h.revision);
            if reply.compact_revision != 0 {
                return Ok(WatchItem::Compacted {
                    compact_revision: reply.compact_revision,
                });
            }
            if reply.canceled {
                return Ok(WatchItem::Canceled {
                    reason: reply.cancel_reason,
                });
            }
            if reply.created && reply.events.is_empty() {
                continue;
            }
            if reply.events.is_empty() {
                return Ok(WatchItem::Progress { revision });
            }
            return Ok(WatchItem::Events {
                events: reply.events,
                revision,
            });
        }
    }
}

fn lost(last: String) -> EtcdError {
    EtcdError::Unreachable {
        endpoints: "watch".to_owned(),
        last,
    }
}
