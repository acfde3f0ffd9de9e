//! The gRPC metadata keys client and daemon exchange beside the messages.
//! Both sides name them from here, so a rename cannot leave one side behind.

/// The API generation the client speaks (`1` for `ttm.v1`), on every request.
pub const API_VERSION: &str = "ttm-api-version";

/// The client's package version, on every request, for messages that say
/// which side to upgrade.
pub const CLIENT_VERSION: &str = "ttm-client-version";

/// The tree (`$TETRA_DIR`, raw bytes) the user named, when they named one;
/// a daemon serving another tree refuses the request.
pub const ROOT: &str = "ttm-root-bin";

/// On a refusal, a machine-readable word for why (e.g. `wrong-tree`,
/// `api-version`), so the client can pick an exit code and a hint.
pub const ERROR: &str = "ttm-error";

/// The value of [`ERROR`] when the daemon serves another tree than the one
/// the request named: for this call, no daemon answered.
pub const WRONG_TREE: &str = "wrong-tree";

/// The value of [`ERROR`] on the UNAVAILABLE that ends a stream because
/// ttmd is stopping: a restart explains it, so a follower reconnects and
/// resumes instead of failing (UNAVAILABLE alone also means "the tree
/// cannot be written").
pub const SHUTTING_DOWN: &str = "shutting-down";

/// Value of [`ERROR`] on a refusal because a lease is held by another
/// transaction and the caller would not wait (ttmctl exit 10).
pub const LEASE_BUSY: &str = "lease-busy";

/// Value of [`ERROR`] when a wait for a lease ran out (ttmctl exit 11).
pub const WAIT_TIMEOUT: &str = "wait-timeout";

/// Value of [`ERROR`] when an operation needs the etcd cluster (or the home
/// host of a transaction) and cannot reach it (ttmctl exit 12, SPEC §17).
pub const NO_COORDINATION: &str = "no-coordination";
