//! A minimal etcd v3 client for ttmd's cluster mode (SPEC §16).
//!
//! The messages come from our own copies of the parts of etcd's API that
//! ttmd uses (`proto/`), compiled with protox: the `etcd-client` crate's
//! build script needs `protoc`, which a fresh machine does not have (see
//! ARCHITECTURE.md, Decisions).
//!
//! - [`Etcd`]: endpoints tried in order with failover, a bound on every
//!   unary call; key-value reads ([`Etcd::get`], [`Etcd::prefix`]), writes
//!   ([`Etcd::put`], [`Etcd::delete_prefix`]) and compare-and-set
//!   ([`Etcd::txn`] with [`cmp`] and [`op`]).
//! - [`Watch`] (`watch.rs`): a prefix watched from a revision, reporting
//!   compaction and cancellation as items rather than ending silently.
//! - [`LeaseKeeper`] (`lease.rs`): an etcd lease kept alive by a task that
//!   reports when it is lost.

mod client;
mod lease;
mod ops;
mod watch;

pub use client::{Etcd, Range, prefix_end};
pub use lease::{LeaseKeeper, LeaseState};
pub use ops::{cmp, op};
pub use watch::{Watch, WatchItem};

/// Generated etcd v3 messages and clients (`package etcdserverpb`).
#[allow(missing_docs, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

/// Generated etcd storage messages (`package mvccpb`).
#[allow(missing_docs, missing_debug_implementations)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub use mvccpb::KeyValue;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered in time (down, partitioned, without a leader).
    #[error("etcd is unreachable ({endpoints}): {last}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// Why the last one failed.
        last: String,
    },
    /// etcd answered and refused (a bug of ours or a misconfigured cluster).
    #[error("etcd refused the request: {0}")]
    Refused(String),
    /// The revision asked for was compacted away; re-read from a range.
    #[error("etcd revision {requested} was compacted (compacted up to {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The revision etcd compacted up to (0 when it did not say).
        compact_revision: i64,
    },
    /// An endpoint that cannot be used as given.
    #[error("bad etcd endpoint {endpoint:?}: {why}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it and what to give instead.
        why: String,
    },
}

impl EtcdError {
    /// True when trying again later (or elsewhere) may succeed: etcd was
    /// not reachable, as opposed to a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EtcdError::Unreachable { .. })
    }
}
