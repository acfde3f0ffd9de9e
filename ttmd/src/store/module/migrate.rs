//! `ttmctl migrate`: moving transactions an older version left in a stage
//! the module's FSM does not know, or cannot leave, to one they can
//! continue from. Where each goes is [`crate::core::migrate::target`]'s
//! decision; here it is asked under each transaction's lock and logged
//! through the one mutation path, as a `stage_migrated` event.

use super::Module;
use crate::core::event::Body;
use crate::core::migrate;
use crate::core::{Error, Result};
use crate::store::txn::{Client, Guards, Txn};

/// One transaction's move: id, from, to.
pub type Migration = (String, String, String);

/// The field the original RAG wrapper's `rag_stage` lines name the real
/// stage in.
const RAG_STAGE: &str = "rag_stage";

impl Module {
    /// The live transactions that are stuck, and where each goes; with
    /// `apply`, moves them. Each is decided again under its own lock, so
    /// one moved meanwhile is left alone.
    pub fn migrate(&self, apply: bool, client: &Client) -> Result<Vec<Migration>> {
        let fsm = self.fsm();
        let mut moves = Vec::new();
        for listed in self.list(None) {
            let Some(txn) = listed.txn else {
                continue; // finished, kept as a summary
            };
            let recorded = recorded_stage(&txn);
            if !apply {
                if let Some(Body::Migrated { from, to }) =
                    migrate::target(&fsm, &txn.state(), recorded.as_deref())
                {
                    moves.push((txn.id.clone(), from, to));
                }
                continue;
            }
            let outcome = txn.mutate(&fsm, &Guards::default(), client, |state, _| {
                migrate::target(&fsm, state, recorded.as_deref())
                    .ok_or_else(|| Error::Refused("no longer stuck".into()))
            });
            match outcome {
                Ok(outcome) => {
                    if let Some(Body::Migrated { from, to }) = outcome.body() {
                        tracing::info!(module = %self.name, txn = %txn.id, %from, %to,
                            "migrated a transaction an older version left stuck");
                        moves.push((txn.id.clone(), from.clone(), to.clone()));
                    }
                    self.announce(&outcome);
                }
                // Moved or finished since it was listed: nothing to do.
                Err(Error::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moves)
    }
}

/// The last stage the original RAG wrapper recorded in a `rag_stage` line
/// of the log, if any.
fn recorded_stage(txn: &Txn) -> Option<String> {
    let end = txn.committed().len;
    let (lines, _) = txn.read_lines(0, end, 1).ok()?;
    lines.iter().rev().find_map(|line| {
        let o = line.object.as_ref()?;
        (o.get("event")?.as_str()? == RAG_STAGE)
            .then(|| o.get(RAG_STAGE)?.as_str().map(str::to_string))
            .flatten()
    })
}
