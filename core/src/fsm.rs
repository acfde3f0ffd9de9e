//! Stages and the one function that decides whether a transaction may move
//! from one stage to another (SPEC §4).
//!
//! A module's FSM is either *ordered* (the default: any move forward through
//! the list of stages, skipping allowed) or *explicit* (the edges listed in
//! `$TETRA_DIR/<module>/fsm.json`, each optionally an *iterate* edge that
//! bumps `iteration`). `DONE` and `FAIL` are built in and final in both.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::timing::{RawStageTime, StageTime, Timeouts, parse_timeouts};
use super::{Error, Result};

/// The terminal stage reached by a commit.
pub const DONE: &str = "DONE";
/// The terminal stage reached by a failure.
pub const FAIL: &str = "FAIL";
/// Longest stage name accepted.
pub const STAGE_MAX: usize = 32;

/// A module's stages and the moves allowed between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fsm {
    /// Non-terminal stages in order; the first is where transactions start.
    stages: Vec<String>,
    /// `None` for an ordered FSM; otherwise the allowed moves from each stage.
    edges: Option<BTreeMap<String, Vec<Edge>>>,
    /// Stage timeouts and heartbeats (SPEC §14), from `"timeouts"`.
    timeouts: Timeouts,
}

/// One allowed move of an explicit FSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The stage moved to.
    pub to: String,
    /// Whether taking this edge starts a new iteration (`iteration` + 1).
    pub iterate: bool,
}

/// What a permitted move does besides changing the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The move starts a new iteration.
    pub iterate: bool,
}

/// The on-disk form of `fsm.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FsmFile {
    stages: Vec<String>,
    #[serde(default)]
    transitions: Option<BTreeMap<String, Vec<EdgeSpec>>>,
    #[serde(default)]
    timeouts: BTreeMap<String, RawStageTime>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EdgeSpec {
    To(String),
    Full(FullEdge),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullEdge {
    to: String,
    #[serde(default)]
    iterate: bool,
}

impl Default for Fsm {
    /// `NEW → SELECT → ASSEMBLE → EXECUTE → VALIDATE`, ordered.
    fn default() -> Self {
        Fsm {
            stages: ["NEW", "SELECT", "ASSEMBLE", "EXECUTE", "VALIDATE"]
                .map(String::from)
                .to_vec(),
            edges: None,
            timeouts: Timeouts::new(),
        }
    }
}

/// FSMs shipped with the product, used by a module that has no `fsm.json`
/// of its own: module name → definition.
pub const BUILTIN: &[(&str, &str)] = &[("rag", include_str!("../fsm/rag.json"))];

/// The built-in FSM of `module`, if the product ships one.
pub fn builtin(module: &str) -> Option<Fsm> {
    BUILTIN
        .iter()
        .find(|(name, _)| *name == module)
        .and_then(|(_, text)| Fsm::from_json(text).ok())
}

/// Checks that `stage` is a well-formed stage name (`[A-Z][A-Z0-9_]{0,31}`).
pub fn validate_stage_name(stage: &str) -> Result<()> {
    let ok = !stage.is_empty()
        && stage.len() <= STAGE_MAX
        && stage
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_uppercase() || (i > 0 && (b.is_ascii_digit() || b == b'_')));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid stage name {}: stages are 1-{STAGE_MAX} characters of A-Z, 0-9 and '_', \
             starting with a letter",
            super::id::quote(stage)
        )))
    }
}

/// Whether `stage` is `DONE` or `FAIL`.
pub fn is_terminal(stage: &str) -> bool {
    stage == DONE || stage == FAIL
}

impl Fsm {
    /// Parses and validates the text of an `fsm.json`. The error says what is
    /// wrong in words meant for the file's author.
    pub fn from_json(text: &str) -> Result<Fsm, String> {
        let file: FsmFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let stages: Vec<String> = file
            .stages
            .into_iter()
            .filter(|s| !is_terminal(s))
            .collect();
        if stages.is_empty() {
            return Err("\"stages\" must list at least one non-terminal stage".into());
        }
        for (i, s) in stages.iter().enumerate() {
            validate_stage_name(s).map_err(|e| e.to_string())?;
            if stages[..i].contains(s) {
                return Err(format!("stage {s} is listed twice"));
            }
        }
        let known = |s: &str| stages.iter().any(|x| x == s) || is_terminal(s);
        let edges = match file.transitions {
            None => None,
            Some(map) => {
                let mut edges = BTreeMap::new();
                for (from, specs) in map {
                    if !stages.contains(&from) {
                        return Err(format!(
                            "\"transitions\" has edges from {from}, which is not a listed \
                             non-terminal stage"
                        ));
                    }
                    let mut list = Vec::with_capacity(specs.len());
                    for spec in specs {
                        let edge = match spec {
                            EdgeSpec::To(to) => Edge { to, iterate: false },
                            EdgeSpec::Full(f) => Edge {
                                to: f.to,
                                iterate: f.iterate,
                            },
                        };
                        if !known(&edge.to) {
                            return Err(format!(
                                "edge {from} -> {} goes to an unknown stage",
                                edge.to
                            ));
                        }
                        list.push(edge);
                    }
                    edges.insert(from, list);
                }
                Some(edges)
            }
        };
        let timeouts = parse_timeouts(file.timeouts, |s| stages.iter().any(|x| x == s))?;
        Ok(Fsm {
            stages,
            edges,
            timeouts,
        })
    }

    /// The time rules of `stage` (fsm.json's `"timeouts"`), if any.
    pub fn stage_time(&self, stage: &str) -> Option<&StageTime> {
        self.timeouts.get(stage)
    }

    /// Whether any stage has time rules.
    pub fn has_timeouts(&self) -> bool {
        !self.timeouts.is_empty()
    }

    /// The stage every transaction starts in.
    pub fn initial(&self) -> &str {
        &self.stages[0]
    }

    /// The non-terminal stages, in order.
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// Whether `stage` is one of this FSM's stages (terminal ones included).
    pub fn knows(&self, stage: &str) -> bool {
        is_terminal(stage) || self.stages.iter().any(|s| s == stage)
    }

    /// The stages a transaction in `from` may move to with `transition`.
    pub fn next_stages(&self, from: &str) -> Vec<String> {
        if is_terminal(from) {
            return Vec::new();
        }
        match &self.edges {
            None => {
                let pos = self.stages.iter().position(|s| s == from);
                let later = match pos {
                    Some(i) => &self.stages[i + 1..],
                    None => &self.stages[..],
                };
                later
                    .iter()
                    .cloned()
                    .chain([DONE.to_string(), FAIL.to_string()])
                    .collect()
            }
            Some(edges) => {
                let mut next: Vec<String> = edges
                    .get(from)
                    .map(|list| list.iter().map(|e| e.to.clone()).collect())
                    .unwrap_or_default();
                if !next.iter().any(|s| s == FAIL) {
                    next.push(FAIL.to_string());
                }
                next
            }
        }
    }

    /// Every move a transaction in live stage `from` may make, in words:
    /// the `transition`s, and `commit` (to DONE, from any live stage, also
    /// where fsm.json lists no edge to DONE); for a stage the FSM cannot
    /// leave, the way out (`ttmctl migrate`).
    pub fn allowed_moves(&self, from: &str) -> String {
        let mut next = self.next_stages(from);
        if !next.iter().any(|s| s == DONE) {
            next.push(format!("{DONE} (with `commit`)"));
        }
        let mut words = format!("allowed next stages: {}", next.join(", "));
        if super::migrate::is_stuck(self, from) {
            words.push_str(&format!(
                "; {from} is {} this module's FSM (an older version left it there): \
                 `ttmctl migrate` moves such transactions to a stage they can continue from",
                if self.knows(from) {
                    "a dead end of"
                } else {
                    "not a stage of"
                }
            ));
        }
        words
    }

    /// The one transition function: may a transaction in `from` move to
    /// `to`? `FAIL` is reachable from every non-terminal stage; nothing
    /// leaves `DONE` or `FAIL` (see [`Fsm::retry_target`] for the way back).
    pub fn transition(&self, from: &str, to: &str) -> Result<Step> {
        validate_stage_name(to)?;
        if is_terminal(from) {
            return Err(Error::Refused(format!(
                "the transaction is {from}, which is final; no further change is allowed{}",
                if from == FAIL {
                    " (except `retry`)"
                } else {
                    ""
                }
            )));
        }
        let refuse = |why: &str| {
            Error::Refused(format!(
                "cannot move from {from} to {to}: {why}; {}",
                self.allowed_moves(from)
            ))
        };
        if !self.knows(to) {
            return Err(refuse("unknown stage"));
        }
        // A move to the same stage is refused unless fsm.json lists it as
        // an edge (an iterate self-loop, say).
        let listed_loop = self
            .edges
            .as_ref()
            .and_then(|e| e.get(from))
            .is_some_and(|list| list.iter().any(|e| e.to == to));
        if from == to && !listed_loop {
            return Err(refuse("the transaction is already there"));
        }
        if to == FAIL {
            return Ok(Step { iterate: false });
        }
        match &self.edges {
            None => {
                let pos = |s: &str| self.stages.iter().position(|x| x == s);
                let forward = match (pos(from), pos(to)) {
                    (_, None) => true, // DONE: after every stage
                    (Some(a), Some(b)) => b > a,
                    (None, Some(_)) => true, // from a stage this FSM no longer lists
                };
                if forward {
                    Ok(Step { iterate: false })
                } else {
                    Err(refuse("stages only move forward"))
                }
            }
            Some(edges) => edges
                .get(from)
                .and_then(|list| list.iter().find(|e| e.to == to))
                .map(|e| Step { iterate: e.iterate })
                .ok_or_else(|| refuse("no such edge in the module's fsm.json")),
        }
    }

    /// The stage a `retry` of a FAIL transaction goes back to: `to` if given
    /// (any non-terminal stage), else the initial stage.
    pub fn retry_target(&self, current: &str, to: Option<&str>) -> Result<String> {
        if current != FAIL {
            return Err(Error::Refused(format!(
                "only a FAIL transaction can be retried; this one is {current}"
            )));
        }
        let to = to.unwrap_or(self.initial());
        validate_stage_name(to)?;
        if is_terminal(to) || !self.knows(to) {
            return Err(Error::Refused(format!(
                "cannot retry into {to}; choose one of: {}",
                self.stages.join(", ")
            )));
        }
        Ok(to.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAG: &str = r#"{
        "stages": ["NEW", "SELECT", "ASSEMBLE", "SUBMIT", "APPLY", "VALIDATE", "FOLD"],
        "transitions": {
            "NEW": ["SELECT"],
            "SELECT": ["ASSEMBLE"],
            "ASSEMBLE": ["SUBMIT", "SELECT"],
            "SUBMIT": ["APPLY"],
            "APPLY": ["VALIDATE", "FOLD"],
            "VALIDATE": ["DONE", "FOLD"],
            "FOLD": [{"to": "SUBMIT", "iterate": true}, "DONE"]
        }
    }"#;

    /// (from, to, expected: Some(iterate) when allowed, None when refused)
    fn check(fsm: &Fsm, cases: &[(&str, &str, Option<bool>)]) {
        for &(from, to, want) in cases {
            let got = fsm.transition(from, to).ok().map(|s| s.iterate);
            assert_eq!(got, want, "{from} -> {to}");
        }
    }

    #[test]
    fn default_fsm_moves_forward_only() {
        check(
            &Fsm::default(),
            &[
                ("NEW", "SELECT", Some(false)),
                ("NEW", "EXECUTE", Some(false)),
                ("VALIDATE", "DONE", Some(false)),
                ("SELECT", "FAIL", Some(false)),
                ("EXECUTE", "SELECT", None),
                ("EXECUTE", "EXECUTE", None),
                ("NEW", "FOLD", None),
                ("DONE", "NEW", None),
                ("FAIL", "DONE", None),
                ("DONE", "FAIL", None),
            ],
        );
    }

    #[test]
    fn explicit_fsm_with_iterate_edge() {
        let fsm = Fsm::from_json(RAG).unwrap();
        assert_eq!(fsm.initial(), "NEW");
        check(
            &fsm,
            &[
                ("NEW", "SELECT", Some(false)),
                ("NEW", "ASSEMBLE", None),
                ("ASSEMBLE", "SELECT", Some(false)),
                ("FOLD", "SUBMIT", Some(true)),
                ("FOLD", "DONE", Some(false)),
                ("SUBMIT", "FAIL", Some(false)),
                ("SUBMIT", "DONE", None),
            ],
        );
    }

    #[test]
    fn listed_self_loops_are_edges() {
        let fsm = Fsm::from_json(
            r#"{"stages":["A","B"],"transitions":{"A":[{"to":"A","iterate":true},"B"]}}"#,
        )
        .unwrap();
        assert!(fsm.next_stages("A").contains(&"A".to_string()));
        assert!(fsm.transition("A", "A").unwrap().iterate);
        assert!(fsm.transition("B", "B").is_err());
    }

    #[test]
    fn refusal_names_current_and_allowed_stages() {
        let err = Fsm::default().transition("EXECUTE", "SELECT").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("EXECUTE") && msg.contains("VALIDATE, DONE, FAIL"),
            "{msg}"
        );
        assert!(matches!(err, Error::Refused(_)));
        let bad = Fsm::default().transition("NEW", "select").unwrap_err();
        assert!(matches!(bad, Error::Malformed(_)));
    }

    #[test]
    fn malformed_fsm_files_are_explained() {
        let cases = [
            ("not json", "expected"),
            (r#"{"stages": []}"#, "at least one"),
            (r#"{"stages": ["NEW", "NEW"]}"#, "twice"),
            (r#"{"stages": ["new"]}"#, "invalid stage name"),
            (
                r#"{"stages": ["NEW"], "transitions": {"NEW": ["X"]}}"#,
                "unknown stage",
            ),
            (
                r#"{"stages": ["NEW"], "transitions": {"X": ["NEW"]}}"#,
                "not a listed",
            ),
            (r#"{"stages": ["NEW"], "edges": {}}"#, "unknown field"),
        ];
        for (text, want) in cases {
            let err = Fsm::from_json(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn shipped_fsms_are_valid() {
        for (name, text) in BUILTIN {
            assert!(Fsm::from_json(text).is_ok(), "{name}");
        }
        let rag = builtin("rag").unwrap();
        assert_eq!(rag, Fsm::from_json(RAG).unwrap());
        assert!(builtin("ttm").is_none());
    }

    #[test]
    fn retry_goes_back_to_a_live_stage() {
        let fsm = Fsm::default();
        assert_eq!(fsm.retry_target("FAIL", None).unwrap(), "NEW");
        assert_eq!(
            fsm.retry_target("FAIL", Some("EXECUTE")).unwrap(),
            "EXECUTE"
        );
        assert!(fsm.retry_target("FAIL", Some("DONE")).is_err());
        assert!(fsm.retry_target("DONE", None).is_err());
        assert!(fsm.retry_target("NEW", None).is_err());
    }
}
