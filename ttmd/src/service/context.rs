//! Evidence (ctx files) and connectors: taking files in, listing them.

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};
use ttm_proto::v1 as pb;

use super::page;
use super::status::to_status;
use super::{TtmService, blocking, checked_guards};
use crate::core::event::{self, Body};
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
        self.evidence_is_local(header.txn.as_ref()).await?;
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
        let mut g = g;
        g.request_digest = Some(event::request_digest(&format!(
            "ctx\0{}\0{}\0{sha256}",
            h.description, h.file_name
        )));
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
        let (tref, first_page) = (r.txn.clone(), r.page_token.is_empty());
        let local = blocking(move || {
            let (_, txn) = this.txn(r.txn)?;
            let entries = txn.ctx_entries()?;
            let dir = txn.dir.join(txn::CTX_DIR);
            let sizes: std::collections::HashMap<String, u64> =
                entries.iter().map(|e| (e.name.clone(), e.bytes)).collect();
            let order = ctx::evidence_order(entries.into_iter().map(|e| e.name).collect());
            let start = page::ctx_files_after(&order, &r.page_token)?;
            let size = page::page_size(r.page_size, page::DEFAULT_CTX_PAGE_SIZE);
            let name_of = |(name, _): &(String, u32)| name.clone();
            let (files, next) = page::fill(&order, start, size, name_of, |(name, index)| {
                Ok(pb::ContextFile {
                    number: ctx::number_of(name).unwrap_or(0),
                    bytes: sizes.get(name).copied().unwrap_or(0),
                    path: dir.join(name).to_string_lossy().into_owned(),
                    evidence_index: *index,
                    name: name.clone(),
                })
            })?;
            Ok(pb::ListContextResponse {
                files,
                ctx_digest: txn.state().ctx_digest.clone().unwrap_or_default(),
                next_page_token: next.unwrap_or_default(),
            })
        })
        .await;
        match local {
            Ok(resp) => Ok(Response::new(resp)),
            Err(local) => self
                .remote_context(local, tref.as_ref(), first_page)
                .await
                .map(Response::new),
        }
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
        None => Err(to_status(incomplete(0))),
        _ => Err(to_status(Error::invalid(
            "AddContext must start with a header message",
        ))),
    }
}

/// Writes an incoming evidence stream to `temp`, hashing as it goes, with
/// memory bounded by one chunk. Returns the size and sha256 once the client
/// has sent `AddContextEnd` matching what arrived and then closed its side:
/// a stream that stops without it (cancelled, reset, cut off, or a client
/// whose cancel half-closes first) is refused, and the caller's guard
/// removes the partial file.
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
    let end = loop {
        let chunk = match stream.message().await?.and_then(|m| m.part) {
            Some(Part::Chunk(chunk)) => chunk,
            Some(Part::End(end)) => break end,
            Some(Part::Header(_)) => {
                return Err(to_status(Error::invalid(
                    "AddContext sends one header, then chunks, then one AddContextEnd",
                )));
            }
            None => return Err(to_status(incomplete(bytes))),
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
    };
    // The end marker must be the last message: only the close after it
    // says the client did not cancel in between.
    if stream.message().await?.is_some() {
        return Err(to_status(Error::invalid(
            "AddContext takes nothing after AddContextEnd; nothing was stored",
        )));
    }
    let sha256 = ctx::hex(&hasher.finalize());
    check_end(&end, bytes, &sha256).map_err(to_status)?;
    file.flush()
        .await
        .map_err(|e| to_status(Error::io("writing", temp, e)))?;
    if durability.syncs() {
        file.sync_all()
            .await
            .map_err(|e| to_status(Error::io("syncing", temp, e)))?;
    }
    Ok((bytes, sha256))
}

fn incomplete(bytes: u64) -> Error {
    Error::UploadIncomplete(format!(
        "the upload ended after {bytes} bytes without AddContextEnd, so it may be cut short \
         (cancelled, or a client older than this API); nothing was stored. Send the file \
         again with a client that ends uploads with AddContextEnd (ttmctl does)"
    ))
}

/// Whether what the client says it sent is what arrived.
fn check_end(end: &pb::AddContextEnd, bytes: u64, sha256: &str) -> Result<(), Error> {
    if end.bytes != bytes {
        return Err(Error::UploadIncomplete(format!(
            "the client says it sent {} bytes but {bytes} arrived; nothing was stored. \
             Send the file again",
            end.bytes
        )));
    }
    if !end.sha256.is_empty() && !end.sha256.eq_ignore_ascii_case(sha256) {
        return Err(Error::UploadIncomplete(format!(
            "the client's sha256 {} differs from that of the {bytes} bytes that arrived \
             ({sha256}); nothing was stored. Send the file again",
            end.sha256
        )));
    }
    Ok(())
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
