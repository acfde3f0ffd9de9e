//! What a listing shows of a transaction, kept in place of the whole
//! transaction for every finished one that is not loaded. A tree of 100,000
//! finished transactions then costs a couple of hundred bytes each instead of
//! a loaded transaction's few kilobytes, and `list` needs no file reads.

use super::state::State;

/// The fields of a brief listing row, packed into one allocation: the texts
/// one after the other in `text`, each ending where `ends` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    text: Box<str>,
    ends: [u32; FIELDS - 1],
    pub iteration: u64,
    pub seq: u64,
}

/// txn_id, stage, target, created, last_checkpoint, description.
const FIELDS: usize = 6;

impl Summary {
    /// The summary of `state`.
    pub fn of(state: &State) -> Summary {
        let fields = [
            &state.txn_id,
            &state.stage,
            &state.target,
            &state.created,
            &state.last_checkpoint,
            &state.description,
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; FIELDS - 1];
        for (i, field) in fields.iter().enumerate() {
            text.push_str(field);
            if let Some(end) = ends.get_mut(i) {
                // Field sizes are capped far below 4 GiB by the limits on
                // descriptions and payloads; saturate rather than wrap.
                *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
            }
        }
        Summary {
            text: text.into_boxed_str(),
            ends,
            iteration: state.iteration,
            seq: state.seq,
        }
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    pub fn txn_id(&self) -> &str {
        self.field(0)
    }
    pub fn stage(&self) -> &str {
        self.field(1)
    }
    pub fn target(&self) -> &str {
        self.field(2)
    }
    pub fn created(&self) -> &str {
        self.field(3)
    }
    pub fn last_checkpoint(&self) -> &str {
        self.field(4)
    }
    pub fn description(&self) -> &str {
        self.field(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn state(description: &str) -> State {
        State {
            txn_id: "deploy-api-20261126T120000".into(),
            description: description.into(),
            stage: "DONE".into(),
            target: "@staging".into(),
            iteration: 3,
            agent: "cron".into(),
            ctx_digest: None,
            last_checkpoint: "2026-11-26T12:00:05.000Z".into(),
            last_error: None,
            module: "ttm".into(),
            created: "2026-11-26T12:00:00.000Z".into(),
            seq: 42,
            leases: Default::default(),
            timing: Default::default(),
            extra: Map::new(),
            settled: Default::default(),
        }
    }

    #[test]
    fn every_field_reads_back() {
        for description in [
            "",
            "one line",
            "naïve ✓\nsecond line",
            "ends in a \0 byte\0",
        ] {
            let s = state(description);
            let summary = Summary::of(&s);
            assert_eq!(summary.txn_id(), s.txn_id);
            assert_eq!(summary.stage(), s.stage);
            assert_eq!(summary.target(), s.target);
            assert_eq!(summary.created(), s.created);
            assert_eq!(summary.last_checkpoint(), s.last_checkpoint);
            assert_eq!(summary.description(), description);
            assert_eq!((summary.iteration, summary.seq), (3, 42));
        }
    }

    #[test]
    fn empty_fields_stay_empty() {
        let mut s = state("x");
        s.target.clear();
        s.stage.clear();
        let summary = Summary::of(&s);
        assert_eq!(summary.stage(), "");
        assert_eq!(summary.target(), "");
        assert_eq!(summary.created(), s.created);
    }
}
