//! Creating, finding and reading transactions.

use tonic::{Request, Response, Status};
use ttm_proto::v1 as pb;

use super::convert::{txn_row, txn_state};
use super::page;
use super::{TtmService, blocking, checked_guards, or_default, validate_request_id};
use crate::core::fsm;
use crate::core::timing::Settings;
use crate::core::{Error, Result};
use crate::store::module::NewTxn;

impl TtmService {
    pub(super) async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        self.caller(&req)?;
        Ok(Response::new(pb::HelloResponse {
            daemon_version: ttm_proto::VERSION.to_string(),
            api_version: ttm_proto::API_VERSION,
            pid: std::process::id(),
            root: self.shared.store.root.to_string_lossy().into_owned(),
        }))
    }

    pub(super) async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let state = blocking(move || {
            let new = NewTxn {
                description: r.description,
                target: or_default(&r.target, crate::core::DEFAULT_TARGET).to_string(),
                agent: or_default(&r.agent, crate::core::DEFAULT_AGENT).to_string(),
                activate: !r.no_activate,
                request_id: Some(r.request_id).filter(|s| !s.is_empty()),
                time: time_settings(&r.deadline, &r.on_deadline, r.heartbeat_ms)?,
            };
            if let Some(rid) = &new.request_id {
                validate_request_id(rid)?;
            }
            crate::store::module::validate_new(&new, this.shared.config().limits.description)?;
            let module = this.module(&r.module, true)?;
            if r.leases.is_empty() {
                let txn = module.create(&new, &client)?;
                this.showed_life(&module, &txn.state());
                return Ok((this.state_msg(&module, &txn, &txn.state()), Vec::new()));
            }
            let ttl = crate::core::lease::ttl_or_default(r.lease_ttl_ms)?;
            let policy = super::leases::policy_of(r.wait_policy);
            let mut create = || {
                let txn = module.create(&new, &client)?;
                Ok((module.name.clone(), txn.id.clone()))
            };
            let (key, standings) =
                this.shared
                    .leases
                    .acquire_at_create(&r.leases, ttl, policy, &mut create)?;
            let txn = module.txn(&key.1)?;
            this.showed_life(&module, &txn.state());
            let leases = r
                .leases
                .iter()
                .zip(standings)
                .map(|(n, s)| super::leases::standing_msg(n, s))
                .collect();
            Ok((this.state_msg(&module, &txn, &txn.state()), leases))
        })
        .await?;
        let (state, leases) = state;
        Ok(Response::new(pb::CreateResponse {
            state: Some(state),
            leases,
        }))
    }

    pub(super) async fn get_active(
        &self,
        req: Request<pb::GetActiveRequest>,
    ) -> Result<Response<pb::GetActiveResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let txn_id = blocking(move || {
            let module = this.module(&r.module, false)?;
            module.active_id()?.ok_or_else(|| {
                Error::Refused(format!(
                    "no active transaction in module {}; create one with `ttmctl create`",
                    module.name
                ))
            })
        })
        .await?;
        Ok(Response::new(pb::GetActiveResponse { txn_id }))
    }

    pub(super) async fn activate(
        &self,
        req: Request<pb::ActivateRequest>,
    ) -> Result<Response<pb::ActivateResponse>, Status> {
        let client = self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let state = blocking(move || {
            let g = checked_guards(r.pre)?;
            let tref = r.txn.unwrap_or_default();
            if tref.txn_id.is_empty() {
                return Err(Error::invalid("activate needs a transaction id"));
            }
            let module = this.module(&tref.module, false)?;
            let outcome = module.activate(&tref.txn_id, &g, &client)?;
            this.showed_life(&module, &outcome.state);
            let txn = module.txn(&tref.txn_id)?;
            Ok(this.state_msg(&module, &txn, &outcome.state))
        })
        .await?;
        Ok(Response::new(pb::ActivateResponse { state: Some(state) }))
    }

    pub(super) async fn get_state(
        &self,
        req: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let tref = r.txn.clone();
        let local = blocking(move || {
            let (module, txn) = this.txn(r.txn)?;
            Ok(this.state_msg(&module, &txn, &txn.state()))
        })
        .await;
        let state = match local {
            Ok(mut state) => {
                if let Some(cluster) = self.shared.cluster() {
                    state.home = cluster.host_id().to_owned();
                    state.mirror_lag = cluster.lag_of(&state.module, &state.txn_id);
                }
                state
            }
            Err(local) => self.remote_state(local, tref.as_ref()).await?,
        };
        Ok(Response::new(pb::GetStateResponse { state: Some(state) }))
    }

    /// Brief rows come from summaries, which carry no leases: the lease
    /// backend's table says who holds and who waits.
    fn note_leases(&self, module: &str, rows: &mut [pb::TxnState]) {
        let mut by_txn: std::collections::HashMap<String, (Vec<String>, Vec<String>)> =
            std::collections::HashMap::new();
        for l in self.shared.leases.list() {
            if let Some(h) = l.holder.filter(|h| h.txn.0 == module) {
                by_txn.entry(h.txn.1).or_default().0.push(l.name.clone());
            }
            for w in l.queue.into_iter().filter(|w| w.txn.0 == module) {
                by_txn.entry(w.txn.1).or_default().1.push(l.name.clone());
            }
        }
        for row in rows {
            if let Some((held, awaited)) = by_txn.remove(&row.txn_id) {
                row.leases_held = held;
                row.leases_awaited = awaited;
            }
        }
    }

    pub(super) async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let this = self.clone();
        let request = r.clone();
        let mut reply = blocking(move || {
            if !r.stage.is_empty() {
                fsm::validate_stage_name(&r.stage)?;
            }
            let module = match this.module(&r.module, false) {
                Ok(m) => m,
                // A module nobody created a transaction in yet lists
                // nothing, as the bash version listed a missing directory.
                Err(Error::Unknown(_)) => return Ok(pb::ListResponse::default()),
                Err(e) => return Err(e),
            };
            let active = module.active_id_or_none()?;
            let stage = Some(r.stage.as_str()).filter(|s| !s.is_empty());
            let after = page::parse_token(&r.page_token)?;
            let size = page::page_size(r.page_size, page::DEFAULT_PAGE_SIZE);
            // One row past the page tells `fill` that more follow.
            let listed = module.list_after(stage, after.as_ref().map(page::After::key), size + 1);
            let (mut txns, next_page_token) =
                page::fill(&listed, 0, size, page::token_after, |listed| {
                    let active = active.as_deref() == Some(listed.id.as_str());
                    if r.brief {
                        let row = txn_row(&listed.summary, &module.name, active);
                        return Ok(match &listed.txn {
                            Some(t) => with_time(row, &t.state()),
                            None => row,
                        });
                    }
                    let state = module.listed_state(listed)?;
                    Ok(txn_state(&state, &module.txns_dir.join(&listed.id), active))
                })?;
            if r.brief {
                this.note_leases(&module.name, &mut txns);
            }
            Ok(pb::ListResponse {
                txns,
                // Quarantined directories come with the first page only.
                quarantined: match after {
                    Some(_) => Vec::new(),
                    None => quarantined(&module),
                },
                next_page_token: next_page_token.unwrap_or_default(),
            })
        })
        .await?;
        self.cluster_rows(&request, &mut reply).await;
        // The last page of a listing of several: its memory goes back.
        if !request.page_token.is_empty() && reply.next_page_token.is_empty() {
            crate::memory::trim_soon();
        }
        Ok(Response::new(reply))
    }
}

/// A module's quarantined directories, as a reply lists them.
fn quarantined(module: &crate::store::module::Module) -> Vec<pb::Quarantined> {
    module
        .quarantined()
        .into_iter()
        .map(|(txn_id, reason)| pb::Quarantined { txn_id, reason })
        .collect()
}

/// A create request's time settings (SPEC §14), checked: the deadline
/// resolved against now, a policy only with a deadline.
fn time_settings(deadline: &str, on_deadline: &str, heartbeat_ms: u64) -> Result<Settings> {
    use crate::core::timing::{OnTimeout, parse_deadline};
    let deadline = Some(deadline.trim())
        .filter(|d| !d.is_empty())
        .map(|d| parse_deadline(d, chrono::Utc::now()).map_err(Error::invalid))
        .transpose()?;
    let on_deadline = match on_deadline.trim() {
        "" => None,
        p => Some(OnTimeout::parse(p).map_err(|e| Error::invalid(format!("on_deadline {e}")))?),
    };
    if on_deadline.is_some() && deadline.is_none() {
        return Err(Error::invalid(
            "--on-deadline needs --deadline: there is no deadline to act on",
        ));
    }
    Ok(Settings {
        deadline,
        on_deadline,
        heartbeat_ms: Some(heartbeat_ms).filter(|&h| h > 0),
    })
}

/// A brief row with the loaded state's time fields (brief rows of loaded
/// transactions show their marks too; finished summaries have none).
fn with_time(row: pb::TxnState, state: &crate::core::state::State) -> pb::TxnState {
    let t = super::convert::time_fields(state);
    pb::TxnState {
        deadline: t.deadline,
        heartbeat_ms: t.heartbeat_ms,
        stalled_since: t.stalled_since,
        overdue: t.overdue,
        overdue_since: t.overdue_since,
        ..row
    }
}
