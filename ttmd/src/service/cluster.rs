//! The RPC side of cluster mode: reads of transactions homed on another
//! host (falling back to etcd when a transaction is not on this one), the
//! home and mirror lag of listed rows, and `ListHosts`.

use tonic::{Code, Request, Response, Status};
use ttm_proto::v1 as pb;

use super::TtmService;
use super::remote;
use super::status::to_status;
use super::streams::Stream;
use crate::core::{Error, id};

impl TtmService {
    /// `module/id` of a request's transaction reference, when it names a
    /// transaction (not the active one implied).
    fn named(tref: Option<&pb::TxnRef>) -> Option<(String, String)> {
        let tref = tref?;
        if tref.txn_id.is_empty() {
            return None;
        }
        let module = if tref.module.is_empty() {
            id::DEFAULT_MODULE.to_owned()
        } else {
            tref.module.clone()
        };
        Some((module, tref.txn_id.clone()))
    }

    /// In cluster mode, the state of a transaction this host does not have
    /// (`local` said NOT_FOUND), read from etcd; else `local` as it was.
    pub(super) async fn remote_state(
        &self,
        local: Status,
        tref: Option<&pb::TxnRef>,
    ) -> Result<pb::TxnState, Status> {
        let (Some(cluster), Some((module, id))) = (self.shared.cluster(), Self::named(tref)) else {
            return Err(local);
        };
        if local.code() != Code::NotFound {
            return Err(local);
        }
        match remote::state(cluster, &module, &id).await {
            Ok(Some(state)) => Ok(state),
            Ok(None) => Err(local),
            Err(e) => Err(to_status(e)),
        }
    }

    /// In cluster mode, the evidence of a transaction this host does not
    /// have (`local` said NOT_FOUND), as etcd lists it (names, sizes; the
    /// files stay on their home host, so no path); else `local`.
    pub(super) async fn remote_context(
        &self,
        local: Status,
        tref: Option<&pb::TxnRef>,
        first_page: bool,
    ) -> Result<pb::ListContextResponse, Status> {
        let state = self.remote_state(local, tref).await?;
        let (Some(cluster), Some((module, id))) = (self.shared.cluster(), Self::named(tref)) else {
            return Err(to_status(Error::Bug(
                "remote context without a cluster".into(),
            )));
        };
        let files = match first_page {
            true => remote::context(cluster, &module, &id)
                .await
                .map_err(to_status)?,
            false => Vec::new(),
        };
        Ok(pb::ListContextResponse {
            files,
            ctx_digest: state.ctx_digest,
            next_page_token: String::new(),
        })
    }

    /// In cluster mode, the events of a transaction this host does not have
    /// (`local` said NOT_FOUND), streamed from etcd; else `local`.
    pub(super) async fn remote_events(
        &self,
        local: Status,
        pid: Option<i32>,
        req: pb::EventsRequest,
    ) -> Result<Response<Stream<pb::EventsResponse>>, Status> {
        let tref = req.txn.clone();
        self.remote_state(local, tref.as_ref()).await?;
        let (Some(cluster), Some((module, id))) =
            (self.shared.cluster(), Self::named(tref.as_ref()))
        else {
            return Err(to_status(Error::Bug(
                "remote events without a cluster".into(),
            )));
        };
        let config = self.shared.config();
        let slot = self
            .shared
            .streams
            .admit(pid, &config.limits)
            .map_err(to_status)?;
        Ok(Response::new(remote::events(
            cluster.clone(),
            module,
            id,
            req,
            config.heartbeat,
            self.shared.shutdown.clone(),
            slot,
        )))
    }

    /// In cluster mode: this host's rows get their home and mirror lag, and
    /// (on the first page) the other hosts' rows follow them.
    pub(super) async fn cluster_rows(&self, req: &pb::ListRequest, reply: &mut pb::ListResponse) {
        let Some(cluster) = self.shared.cluster() else {
            return;
        };
        let module = if req.module.is_empty() {
            id::DEFAULT_MODULE
        } else {
            &req.module
        };
        for row in &mut reply.txns {
            row.home = cluster.host_id().to_owned();
            row.mirror_lag = cluster.lag_of(module, &row.txn_id);
        }
        if req.page_token.is_empty() {
            reply
                .txns
                .extend(remote::rows(cluster, module, &req.stage).await);
        }
    }

    pub(super) async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        self.caller(&req)?;
        let Some(cluster) = self.shared.cluster() else {
            return Err(to_status(Error::Refused(
                "ttmd runs without --cluster: there is only this host; start ttmd with \
                 --cluster ENDPOINTS to join an etcd cluster (see docs/cluster.md)"
                    .into(),
            )));
        };
        remote::hosts(cluster)
            .await
            .map(Response::new)
            .map_err(to_status)
    }
}
