//! Folding a log read from disk, and what the fold refused: lines other
//! programs wrote that break the FSM are kept in the log, folded as
//! refused (`State::refusal`) and reported once, with a
//! `foreign_line_refused` event.

use std::collections::HashSet;

use super::EVENTS_FILE;
use super::Line;
use super::open::{RecoveredLog, append_line};
use super::reconcile::{FOREIGN_REFUSED, refused_report};
use crate::core::Result;
use crate::core::event::{Body, Event};
use crate::core::fsm::Fsm;
use crate::core::state::{self, State};
use crate::store::fsio::Durability;

/// A line another program wrote: its `seq` is not its line number (the
/// daemon writes every line's own). Such lines are also checked against
/// the module's FSM; the daemon's own were admitted by it when written.
pub(super) fn by_others(l: &Line) -> bool {
    l.object.as_ref().and_then(|o| o.get("seq")?.as_u64()) != Some(l.seq)
}

/// A line whose change of stage the fold refused: its seq, its event type
/// and why.
pub(super) type Refused = (u64, String, String);

/// Folds parsed lines from the start of a log; with `fsm`, lines other
/// programs wrote must also name stages it knows. Returns the state and
/// the lines whose change of stage was refused ([`State::refusal`]).
pub(super) fn fold_lines(
    lines: &[Line],
    module: &str,
    fsm: Option<&Fsm>,
) -> Result<(State, Vec<Refused>), state::FoldError> {
    let mut rest = lines.iter();
    let first = rest.next().ok_or(state::FoldError::Empty)?;
    let mut state = State::start_logged(&first.logged(), module)?;
    let mut refused = Vec::new();
    for l in rest {
        let logged = l.logged();
        if let Some(why) = state.apply_checked(l.seq, &logged, fsm.filter(|_| by_others(l))) {
            refused.push((l.seq, logged.event.kind().to_string(), why));
        }
    }
    Ok((state, refused))
}

/// Reports lines other programs wrote whose change of stage the fold
/// refused (a DONE transaction reopened, an unknown stage): one
/// [`FOREIGN_REFUSED`] event each, unless the log already has it (from the
/// run that first saw the line, or an earlier start). Returns whether it
/// appended any.
pub(super) fn report_refused(
    log: &mut RecoveredLog,
    folded: &mut State,
    refused: Vec<(u64, String, String)>,
    durability: Durability,
    repairs: &mut Vec<String>,
    read_only: bool,
) -> Result<bool> {
    let reported: HashSet<u64> = log
        .lines
        .iter()
        .filter_map(|l| match l.logged().event {
            Event::Body(Body::User { event, data }) if event == FOREIGN_REFUSED => {
                data.get("seq")?.as_u64()
            }
            _ => None,
        })
        .collect();
    let mut appended = false;
    for (seq, kind, why) in refused {
        repairs.push(format!(
            "line {seq} of {EVENTS_FILE} ({kind}) breaks the FSM: {why}; kept in the log, \
             folded as refused"
        ));
        if !reported.contains(&seq) && !read_only {
            append_line(log, folded, refused_report(seq, &kind, &why), durability)?;
            appended = true;
        }
    }
    Ok(appended)
}
