//! [`Etcd`]: the connection to a cluster, with failover across endpoints.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::EtcdError;
use crate::mvccpb::KeyValue;
use crate::pb::kv_client::KvClient;
use crate::pb::lease_client::LeaseClient;
use crate::pb::maintenance_client::MaintenanceClient;
use crate::pb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, StatusRequest,
    StatusResponse, TxnRequest, TxnResponse,
};

/// How long one unary call may take on one endpoint before the next one is
/// tried. etcd answers in milliseconds when it has a leader; a member
/// without quorum holds a request for seconds before refusing it, and
/// callers that need coordination must refuse at once (SPEC §16).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys read per page of a prefix range: a value may be as large as etcd's
/// request limit (1.5 MiB by default), so a page stays under [`MAX_REPLY`].
const PAGE: i64 = 64;

/// The largest reply decoded. tonic's default (4 MiB) refused a page of a
/// few hundred mirrored log lines, and with it every read of a long log.
pub(crate) const MAX_REPLY: usize = 128 * 1024 * 1024;

/// A closure for [`Etcd::call`]: `$client::new(channel).$method($request)`
/// with a clone of the request per try.
macro_rules! rpc {
    ($client:ident, $method:ident, $request:expr) => {
        |ch| {
            let request = $request.clone();
            async move {
                $client::new(ch)
                    .max_decoding_message_size(MAX_REPLY)
                    .$method(request)
                    .await
            }
        }
    };
}

/// A connection to an etcd cluster. Cheap to clone (shared channels).
///
/// Every unary call goes to the endpoint that answered last, and on a
/// transport failure or an "unavailable" answer (no leader, timed out) to
/// the next one, each endpoint at most once per call. A call is retried
/// elsewhere only when etcd may not have applied it, so only idempotent
/// writes and compare-guarded transactions are issued through here.
#[derive(Debug, Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<(String, Channel)>,
    preferred: AtomicUsize,
    timeout: Duration,
}

/// The keys of a range, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// The keys and values, in key order.
    pub kvs: Vec<KeyValue>,
    /// The store's revision the range was read at: watch from
    /// `revision + 1` to see every later change exactly once.
    pub revision: i64,
}

impl Etcd {
    /// A client of the cluster at `endpoints` (`http://host:port` or
    /// `host:port`). Connections are made lazily, so this succeeds while
    /// etcd is down; it fails only on endpoints that cannot be used.
    /// Must be called inside a Tokio runtime.
    pub fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Etcd, EtcdError> {
        Etcd::connect_with(endpoints, DEFAULT_TIMEOUT)
    }

    /// [`Etcd::connect`] with `timeout` per call and endpoint.
    pub fn connect_with<S: AsRef<str>>(
        endpoints: &[S],
        timeout: Duration,
    ) -> Result<Etcd, EtcdError> {
        let mut channels = Vec::new();
        for given in endpoints {
            let url = normalize(given.as_ref())?;
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| EtcdError::BadEndpoint {
                    endpoint: given.as_ref().to_owned(),
                    why: format!("{e}; give http://HOST:PORT"),
                })?
                .connect_timeout(timeout)
                // A member that stopped answering (paused, cut off) is
                // noticed on an idle watch too, not only on the next call.
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push((url, endpoint.connect_lazy()));
        }
        if channels.is_empty() {
            return Err(EtcdError::BadEndpoint {
                endpoint: String::new(),
                why: "no endpoint given; give http://HOST:PORT[,…]".to_owned(),
            });
        }
        Ok(Etcd {
            inner: Arc::new(Inner {
                endpoints: channels,
                preferred: AtomicUsize::new(0),
                timeout,
            }),
        })
    }

    /// The endpoints, as URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// The per-call bound on one endpoint.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs `call` on the preferred endpoint, then on each other one while
    /// the failure says "not reachable". `what` names the call in errors.
    pub(crate) async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let index = (start + i) % n;
            let (url, channel) = &self.inner.endpoints[index];
            match tokio::time::timeout(self.inner.timeout, call(channel.clone())).await {
                Ok(Ok(reply)) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) if retryable(&status) => {
                    last = format!("{url}: {}", describe(&status));
                }
                Ok(Err(status)) => return Err(refusal(status)),
                Err(_) => {
                    last = format!("{url}: no answer within {:?}", self.inner.timeout);
                }
            }
        }
        Err(self.unreachable(last))
    }

    /// The error for "no endpoint answered", `last` saying why.
    pub(crate) fn unreachable(&self, last: String) -> EtcdError {
        EtcdError::Unreachable {
            endpoints: self.endpoints().join(","),
            last,
        }
    }

    /// The channels in the order calls try them.
    pub(crate) fn channels(&self) -> Vec<(String, Channel)> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        (0..n)
            .map(|i| self.inner.endpoints[(start + i) % n].clone())
            .collect()
    }

    /// Notes that the endpoint `url` answered, so calls try it first.
    pub(crate) fn prefer(&self, url: &str) {
        if let Some(i) = self.inner.endpoints.iter().position(|(u, _)| u == url) {
            self.inner.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// The value of `key`, if it exists (a linearizable read).
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        let request = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let reply = self.call(rpc!(KvClient, range, request)).await?;
        Ok(reply.kvs.into_iter().next())
    }

    /// Every key under `prefix`, read at one revision (in pages).
    pub async fn prefix(&self, prefix: &[u8]) -> Result<Range, EtcdError> {
        self.range(prefix, &prefix_end(prefix)).await
    }

    /// Every key from `key` (inclusive) to `end` (exclusive), read at one
    /// revision (in pages).
    pub async fn range(&self, key: &[u8], end: &[u8]) -> Result<Range, EtcdError> {
        let end = end.to_vec();
        let mut range = Range::default();
        let mut from = key.to_vec();
        loop {
            let request = RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: PAGE,
                revision: range.revision,
                ..Default::default()
            };
            let reply = self
                .call(rpc!(KvClient, range, request))
                .await
                .map_err(|e| compacted(e, range.revision))?;
            if range.revision == 0 {
                range.revision = reply.header.map_or(0, |h| h.revision);
            }
            let more = reply.more;
            range.kvs.extend(reply.kvs);
            match (more, range.kvs.last()) {
                (true, Some(last)) => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok(range),
            }
        }
    }

    /// Sets `key` to `value`, attached to the etcd lease `lease` (0: none).
    /// Returns the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let request = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let reply = self.call(rpc!(KvClient, put, request)).await?;
        Ok(reply.header.map_or(0, |h| h.revision))
    }

    /// Deletes every key under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &[u8]) -> Result<i64, EtcdError> {
        let request = DeleteRangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let reply = self.call(rpc!(KvClient, delete_range, request)).await?;
        Ok(reply.deleted)
    }

    /// One transaction: if every comparison holds, `success` is applied,
    /// else `failure`. Retried on another endpoint only when unreachable,
    /// so give comparisons that make a second application fail.
    pub async fn txn(
        &self,
        compare: Vec<Compare>,
        success: Vec<RequestOp>,
        failure: Vec<RequestOp>,
    ) -> Result<TxnResponse, EtcdError> {
        let request = TxnRequest {
            compare,
            success,
            failure,
        };
        self.call(rpc!(KvClient, txn, request)).await
    }

    /// Compacts the key-value history up to `revision`.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let request = CompactionRequest {
            revision,
            physical: true,
        };
        self.call(rpc!(KvClient, compact, request)).await.map(drop)
    }

    /// The status of the first member that answers.
    pub async fn status(&self) -> Result<StatusResponse, EtcdError> {
        self.call(rpc!(MaintenanceClient, status, StatusRequest {}))
            .await
    }

    /// A new etcd lease of `ttl` seconds; returns its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        let request = LeaseGrantRequest { ttl, id: 0 };
        let reply = self.call(rpc!(LeaseClient, lease_grant, request)).await?;
        if reply.error.is_empty() {
            Ok(reply.id)
        } else {
            Err(EtcdError::Refused(reply.error))
        }
    }

    /// Renews the etcd lease `id` once; returns its remaining TTL in
    /// seconds, 0 when it no longer exists.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, EtcdError> {
        let reply = self
            .call(|ch| async move {
                let request = tokio_stream::once(LeaseKeepAliveRequest { id });
                let reply = LeaseClient::new(ch).lease_keep_alive(request).await?;
                let (meta, mut stream, ext) = reply.into_parts();
                let first = stream.message().await?;
                let first = first.ok_or_else(|| Status::unavailable("keep-alive stream ended"))?;
                Ok(tonic::Response::from_parts(meta, first, ext))
            })
            .await?;
        Ok(reply.ttl)
    }

    /// The remaining TTL of the etcd lease `id` in seconds, without
    /// renewing it; -1 when it no longer exists.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<i64, EtcdError> {
        let request = LeaseTimeToLiveRequest { id, keys: false };
        let reply = self
            .call(rpc!(LeaseClient, lease_time_to_live, request))
            .await?;
        Ok(reply.ttl)
    }

    /// Ends the etcd lease `id` now, deleting the keys attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let request = LeaseRevokeRequest { id };
        match self.call(rpc!(LeaseClient, lease_revoke, request)).await {
            Ok(_) => Ok(()),
            // Already gone: what revoking wanted.
            Err(EtcdError::Refused(why)) if why.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `http://host:port` for `given`; TLS (`https://`) is not supported yet.
fn normalize(given: &str) -> Result<String, EtcdError> {
    let given = given.trim();
    let bad = |why: &str| EtcdError::BadEndpoint {
        endpoint: given.to_owned(),
        why: why.to_owned(),
    };
    if given.is_empty() {
        return Err(bad("empty; give http://HOST:PORT"));
    }
    if given.starts_with("https://") {
        return Err(bad(
            "TLS to etcd is not supported yet; reach etcd over http:// on a trusted network \
             (see docs/cluster.md)",
        ));
    }
    if given.starts_with("http://") {
        Ok(given.to_owned())
    } else if given.contains("://") {
        Err(bad("unknown scheme; give http://HOST:PORT"))
    } else {
        Ok(format!("http://{given}"))
    }
}

/// Whether another endpoint (or a later try) may succeed where `status`
/// failed: transport errors, and etcd's "no leader", "timed out", "leader
/// changed", which it sends as UNAVAILABLE.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

/// A status for an error message: its text, or its code when empty.
pub(crate) fn describe(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// The error for a status that is not worth retrying.
fn refusal(status: Status) -> EtcdError {
    if status.code() == Code::OutOfRange && status.message().contains("compacted") {
        return EtcdError::Compacted {
            requested: 0,
            compact_revision: 0,
        };
    }
    EtcdError::Refused(describe(&status))
}

/// `error` with the revision that was asked for filled in.
fn compacted(error: EtcdError, requested: i64) -> EtcdError {
    match error {
        EtcdError::Compacted {
            compact_revision, ..
        } => EtcdError::Compacted {
            requested,
            compact_revision,
        },
        other => other,
    }
}

/// The end of the key range holding every key that starts with `prefix`:
/// `prefix` with its last byte below 0xff incremented (and what follows
/// dropped); `[0]` (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"/ttm/"), b"/ttm0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn endpoints_are_normalized_and_tls_is_refused_with_a_reason() {
        assert_eq!(
            normalize("127.0.0.1:2379").ok().as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            normalize(" http://h:1 ").ok().as_deref(),
            Some("http://h:1")
        );
        assert!(normalize("https://h:1").is_err_and(|e| e.to_string().contains("TLS")));
        assert!(normalize("unix://x").is_err());
        assert!(normalize("").is_err());
    }
}
