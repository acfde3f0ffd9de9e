//! The daemon itself, retention and migration: archive, gc, migrate,
//! status, reload, stop.

use tonic::{Request, Response, Status};
use ttm_proto::v1 as pb;

use super::status::to_status;
use super::{TtmService, blocking};
use crate::core::Error;
use crate::core::fsm;
use crate::core::id::quote;

impl TtmService {
    pub(super) async fn archive(
        &self,
        req: Request<pb::ArchiveRequest>,
    ) -> Result<Response<pb::ArchiveResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let txn_ids = blocking(move || {
            let stage = Some(r.stage.as_str()).filter(|s| !s.is_empty());
            if let Some(s) = stage
                && !fsm::is_terminal(s)
            {
                return Err(Error::invalid(format!(
                    "only finished transactions are archived: --stage is DONE or FAIL, not {}",
                    quote(s)
                )));
            }
            match this.module(&r.module, false) {
                Ok(module) => module.archive(r.older_than_secs, stage, r.apply),
                // A module nobody created a transaction in has nothing to archive.
                Err(Error::Unknown(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })
        .await?;
        Ok(Response::new(pb::ArchiveResponse {
            txn_ids,
            applied: r.apply,
        }))
    }

    pub(super) async fn gc(
        &self,
        req: Request<pb::GcRequest>,
    ) -> Result<Response<pb::GcResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let txn_ids = blocking(move || match this.module(&r.module, false) {
            Ok(module) => module.gc(r.older_than_secs, r.keep as usize, r.apply),
            Err(Error::Unknown(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        })
        .await?;
        Ok(Response::new(pb::GcResponse {
            txn_ids,
            applied: r.apply,
        }))
    }

    pub(super) async fn migrate(
        &self,
        req: Request<pb::MigrateRequest>,
    ) -> Result<Response<pb::MigrateResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let moves = blocking(move || match this.module(&r.module, false) {
            Ok(module) => {
                let moves = module.migrate(r.apply, &client)?;
                // A moved transaction is in a new stage, timed afresh.
                for (id, _, _) in &moves {
                    if let (true, Ok(txn)) = (r.apply, module.txn(id)) {
                        this.showed_life(&module, &txn.state());
                    }
                }
                Ok(moves)
            }
            // A module nobody created a transaction in has nothing to move.
            Err(Error::Unknown(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        })
        .await?;
        Ok(Response::new(pb::MigrateResponse {
            migrations: moves
                .into_iter()
                .map(|(txn_id, from, to)| pb::Migration { txn_id, from, to })
                .collect(),
            applied: r.apply,
        }))
    }

    pub(super) async fn daemon_status(
        &self,
        req: Request<pb::DaemonStatusRequest>,
    ) -> Result<Response<pb::DaemonStatusResponse>, Status> {
        self.caller(&req)?;
        let s = &self.shared;
        let modules = s.store.modules();
        Ok(Response::new(pb::DaemonStatusResponse {
            pid: std::process::id(),
            version: ttm_proto::VERSION.to_string(),
            api_version: ttm_proto::API_VERSION,
            uptime_secs: s.started.elapsed().as_secs(),
            root: s.store.root.to_string_lossy().into_owned(),
            socket: s.socket.to_string_lossy().into_owned(),
            transactions: modules.iter().map(|m| m.count() as u64).sum(),
            modules: modules.len() as u32,
            open_streams: s.streams.open(),
            durability: format!("{:?}", s.config().durability).to_lowercase(),
            read_only: s.store.read_only().unwrap_or_default().to_string(),
            pending_repairs: s.store.pending_repairs(),
        }))
    }

    pub(super) async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        self.caller(&req)?;
        let shared = self.shared.clone();
        let report = tokio::task::spawn_blocking(move || shared.reload())
            .await
            .map_err(|e| to_status(Error::Bug(format!("reload failed: {e}"))))?;
        for line in &report {
            tracing::info!("reload: {line}");
        }
        Ok(Response::new(pb::ReloadResponse { report }))
    }

    pub(super) async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        self.caller(&req)?;
        tracing::info!("shutdown requested by a client");
        self.shared.shutdown.trigger();
        Ok(Response::new(pb::ShutdownResponse {}))
    }

    pub(super) async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        self.caller(&req)?;
        let text = self.shared.metrics_text().await;
        Ok(Response::new(pb::MetricsResponse { text }))
    }
}
