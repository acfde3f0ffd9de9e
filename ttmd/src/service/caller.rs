//! Who is calling and whether to serve them: the API generation, the tree
//! the client means, the request size and the peer's credentials.

use std::path::PathBuf;

use serde_json::json;
use tonic::{Request, Status};

use super::status::to_status;
use super::{TtmService, access};
use crate::core::{Error, Result};
use crate::store::txn::Client;

impl TtmService {
    /// Checks a unary request's size against `limits.request_bytes`, then
    /// the caller (see [`TtmService::peer`]).
    pub(super) fn caller<T: prost::Message>(&self, req: &Request<T>) -> Result<Client, Status> {
        let limit = self.shared.config().limits.request_bytes;
        let size = req.get_ref().encoded_len();
        if size > limit {
            return Err(to_status(Error::OverLimit(format!(
                "the request is {size} bytes; the limit is {limit} (limits.request_bytes)"
            ))));
        }
        self.peer(req)
    }

    /// Checks the caller's API generation, tree and credentials, and
    /// describes it for the log.
    pub(super) fn peer<T>(&self, req: &Request<T>) -> Result<Client, Status> {
        self.identify(req).map_err(to_status)
    }

    fn identify<T>(&self, req: &Request<T>) -> Result<Client> {
        check_api_version(req)?;
        self.check_tree(req)?;
        let cred = req
            .extensions()
            .get::<crate::conns::ConnInfo>()
            .and_then(|info| info.uds.peer_cred);
        let Some(c) = cred else {
            // In-process callers over other transports (tests) carry none.
            return Ok(None);
        };
        let pid = c.pid();
        if access::allowed(
            self.uid,
            &self.shared.config().access,
            c.uid(),
            c.gid(),
            pid,
        ) {
            return Ok(Some(json!({ "pid": pid, "uid": c.uid() })));
        }
        tracing::warn!(uid = c.uid(), pid = ?pid, "refused a peer that is not allowed");
        Err(Error::NotAllowed(format!(
            "uid {} may not use this ttmd (it serves uid {} and the uids/groups in its config); \
             run ttmctl as that user, add the uid to [access] in ttmd.toml, or start your own ttmd",
            c.uid(),
            self.uid
        )))
    }

    /// Refuses a request meant for another tree (the client names it when
    /// the user set `TETRA_DIR`), so a shared default socket never lets a
    /// script write into the wrong tree.
    fn check_tree<T>(&self, req: &Request<T>) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let Some(bytes) = req
            .metadata()
            .get_bin(ttm_proto::headers::ROOT)
            .and_then(|v| v.to_bytes().ok())
        else {
            return Ok(());
        };
        let wanted = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        // Scripts name the tree the way ttmd was started with it: answer
        // those without touching the file system on every request.
        if wanted == self.shared.canonical_root || wanted == self.shared.store.root {
            return Ok(());
        }
        let wanted = std::fs::canonicalize(&wanted).unwrap_or(wanted);
        if wanted == self.shared.canonical_root {
            return Ok(());
        }
        Err(Error::WrongTree(format!(
            "the ttmd on this socket serves {}, not {}; give that tree its own daemon with \
             TTM_SOCKET={}/run/ttmd.sock (ttmctl starts one there), or unset TETRA_DIR",
            self.shared.canonical_root.display(),
            wanted.display(),
            wanted.display()
        )))
    }
}

/// Refuses a client that speaks another API generation, in words that say
/// what to do.
fn check_api_version<T>(req: &Request<T>) -> Result<()> {
    let meta = req.metadata();
    let Some(api) = meta
        .get(ttm_proto::headers::API_VERSION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    if api.trim() == ttm_proto::API_VERSION.to_string() {
        return Ok(());
    }
    let client = meta
        .get(ttm_proto::headers::CLIENT_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    Err(Error::ApiMismatch(format!(
        "this client ({client}) speaks API ttm.v{api} but ttmd {} speaks ttm.v{}; restart ttmd \
         with the matching version (`ttmctl daemon stop`; the next call starts the installed one)",
        ttm_proto::VERSION,
        ttm_proto::API_VERSION
    )))
}
