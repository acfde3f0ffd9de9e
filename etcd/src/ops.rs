//! Builders of the comparisons and operations of [`crate::Etcd::txn`].

/// Comparisons for [`crate::Etcd::txn`].
pub mod cmp {
    use crate::pb::Compare;
    use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};

    fn compare(key: &[u8], target: CompareTarget, value: TargetUnion) -> Compare {
        Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.to_vec(),
            target_union: Some(value),
            range_end: Vec::new(),
        }
    }

    /// `key`'s version equals `version` (0: the key does not exist).
    pub fn version(key: &[u8], version: i64) -> Compare {
        compare(key, CompareTarget::Version, TargetUnion::Version(version))
    }

    /// `key` was last modified at `revision` (0: does not exist).
    pub fn mod_revision(key: &[u8], revision: i64) -> Compare {
        compare(key, CompareTarget::Mod, TargetUnion::ModRevision(revision))
    }

    /// `key` was created at `revision` (0: does not exist).
    pub fn create_revision(key: &[u8], revision: i64) -> Compare {
        compare(
            key,
            CompareTarget::Create,
            TargetUnion::CreateRevision(revision),
        )
    }

    /// `key`'s value equals `value`.
    pub fn value(key: &[u8], value: &[u8]) -> Compare {
        compare(
            key,
            CompareTarget::Value,
            TargetUnion::Value(value.to_vec()),
        )
    }
}

/// Operations for [`crate::Etcd::txn`].
pub mod op {
    use crate::client::prefix_end;
    use crate::pb::request_op::Request;
    use crate::pb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp};

    /// Set `key` to `value`, attached to the etcd lease `lease` (0: none).
    pub fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                lease,
                ..Default::default()
            })),
        }
    }

    /// Read `key`.
    pub fn get(key: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }
    }

    /// Delete `key`.
    pub fn delete(key: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }
    }

    /// Delete every key under `prefix`.
    pub fn delete_prefix(prefix: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..Default::default()
            })),
        }
    }
}
