//! Evidence (ctx files) and connectors: taking files in, listing them.

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};
use ttm_proto::v1 as pb;

use super::status::to_status;
use super::{TtmService, blocking, checked_guards};
use crate::core::event::Body;
use crate::core::{Error, ctx};
use crate::store::Durability;
use crate::store::txn::{self, Outcome};

impl TtmService {
    pub(super) async fn add_context(
        &self,
        req: Request<Streaming<pb::AddContextRequest>>,
    ) -> Result<Response<pb::AddContextResponse>, Status> {
        let client = self.peer(&req)?;
        let mut stream = req.into_inner();
        let header = first_header(&mut stream).await?;
        // Refuse bad names, bad guards and unknown transactions before
        // taking any bytes. Whether the transaction still takes evidence is
        // decided with the change itself, under its lock.
        let this = self.clone();
        let (h, g, module, txn, temp, file) = blocking(move || {
            ctx::validate_source_name(&header.file_name)?;
            ctx::evidence_name(ctx::FIRST_EVIDENCE, &header.description, &header.file_name)?;
            this.check_payload(&header.description, "the description")?;
            let g = checked_guards(header.pre.clone())?;
            let (module, txn) = this.txn(header.txn.clone())?;
            let (temp, file) = txn.create_temp_evidence()?;
            Ok((header, g, module, txn, temp, file))
        })
        .await?;
        // `temp` removes the file whenever this request ends without
        // storing it, including when the client goes away mid-upload and
        // this future is dropped.
        let config = self.shared.config();
        let (bytes, sha256) = receive_file(
            temp.path(),
            file,
            &mut stream,
            config.limits.ctx_file,
            config.durability,
        )
        .await?;
        let this = self.clone();
        let outcome = blocking(move || {
            let evidence = txn::NewEvidence {
                bytes,
                sha256,
                description: h.description,
                file_name: h.file_name,
            };
            let limit = this.shared.config().limits.ctx_files;
            let outcome = txn.add_evidence(&module.fsm(), limit, temp, &evidence, &g, &client)?;
            module.announce(&outcome);
            this.showed_life(&module, &outcome.state);
            Ok(outcome)
        })
        .await?;
        Ok(Response::new(evidence_reply(&outcome)))
    }

    pub(super) async fn list_context(
        &self,
        req: Request<pb::ListContextRequest>,
    ) -> Result<Response<pb::ListContextResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let resp = blocking(move || {
            let (_, txn) = this.txn(r.txn)?;
            let entries = txn.ctx_entries()?;
            let dir = txn.dir.join(txn::CTX_DIR);
            let sizes: std::collections::HashMap<String, u64> =
                entries.iter().map(|e| (e.name.clone(), e.bytes)).collect();
            let order = ctx::evidence_order(entries.into_iter().map(|e| e.name).collect());
            let files = order
                .into_iter()
                .map(|(name, index)| pb::ContextFile {
                    number: ctx::number_of(&name).unwrap_or(0),
                    bytes: sizes.get(&name).copied().unwrap_or(0),
                    path: dir.join(&name).to_string_lossy().into_owned(),
                    evidence_index: index,
                    name,
                })
                .collect();
            Ok(pb::ListContextResponse {
                files,
                ctx_digest: txn.state().ctx_digest.clone().unwrap_or_default(),
            })
        })
        .await?;
        Ok(Response::new(resp))
    }

    pub(super) async fn get_connector(
        &self,
        req: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::GetConnectorResponse>, Status> {
        self.caller(&req)?;
        let target = req.into_inner().target;
        let shared = self.shared.clone();
        let connector = blocking(move || shared.store.topology()?.connector(&target)).await?;
        Ok(Response::new(pb::GetConnectorResponse {
            connector_json: serde_json::to_string_pretty(&connector).unwrap_or_default(),
        }))
    }
}

/// The header an AddContext stream must open with.
async fn first_header(
    stream: &mut Streaming<pb::AddContextRequest>,
) -> Result<pb::AddContextHeader, Status> {
    use pb::add_context_request::Part;
    match stream.message().await? {
        Some(pb::AddContextRequest {
            part: Some(Part::Header(h)),
        }) => Ok(h),
        _ => Err(to_status(Error::invalid(
            "AddContext must start with a header message",
        ))),
    }
}

/// Writes an incoming evidence stream to `temp`, hashing as it goes, with
/// memory bounded by one chunk. Returns the size and sha256.
async fn receive_file(
    temp: &std::path::Path,
    file: std::fs::File,
    stream: &mut Streaming<pb::AddContextRequest>,
    limit: u64,
    durability: Durability,
) -> Result<(u64, String), Status> {
    use pb::add_context_request::Part;
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(msg) = stream.message().await? {
        let Some(Part::Chunk(chunk)) = msg.part else {
            return Err(to_status(Error::invalid(
                "AddContext sends one header, then only chunks",
            )));
        };
        bytes += chunk.len() as u64;
        if bytes > limit {
            return Err(to_status(Error::OverLimit(format!(
                "ctx file is larger than the limit of {limit} bytes (limits.ctx_file)"
            ))));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| to_status(Error::io("writing", temp, e)))?;
    }
    file.flush()
        .await
        .map_err(|e| to_status(Error::io("writing", temp, e)))?;
    if durability.syncs() {
        file.sync_all()
            .await
            .map_err(|e| to_status(Error::io("syncing", temp, e)))?;
    }
    Ok((bytes, ctx::hex(&hasher.finalize())))
}

/// What `AddContext` answers: the stored file as its event records it.
fn evidence_reply(outcome: &Outcome) -> pb::AddContextResponse {
    let seq = outcome.seq();
    let Some(Body::EvidenceAdded {
        file,
        bytes,
        sha256,
        ctx_digest,
        ..
    }) = outcome.body()
    else {
        // A request id first used for another change is answered with that
        // change (SPEC §4, the first answer): no file was stored.
        return pb::AddContextResponse {
            seq,
            ..Default::default()
        };
    };
    pb::AddContextResponse {
        file: file.clone(),
        bytes: *bytes,
        sha256: sha256.clone(),
        ctx_digest: ctx_digest.clone(),
        seq,
    }
}
