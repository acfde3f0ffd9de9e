//! Property tests of the pure core (issue #7): the FSM keeps its promises
//! under any sequence of requests, the fold of a log is the state, the log
//! reader survives any bytes. Also replays the fuzz corpus
//! (`fuzz/corpus/<target>/`) through the functions the fuzz targets call, so
//! every input a fuzzer ever kept is a regression test of the normal run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use ttmd::core::event::{Body, Meta};
use ttmd::core::fsm::{self, DONE, FAIL, Fsm};
use ttmd::core::state::{self, State};
use ttmd::core::{ctx, id};
use ttmd::store::log::parse_lines;

/// Default case count (256, or `PROPTEST_CASES`); failures are printed with
/// their minimal input rather than persisted next to the sources.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------ FSM --

const DEFAULT_STAGES: [&str; 5] = ["NEW", "SELECT", "ASSEMBLE", "EXECUTE", "VALIDATE"];

/// Stage names a request may carry: the default ones, the terminal ones,
/// RAG's, unknown and malformed ones.
fn any_stage() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&DEFAULT_STAGES[..]).prop_map(String::from),
        2 => prop::sample::select(&[DONE, FAIL][..]).prop_map(String::from),
        2 => prop::sample::select(&["SUBMIT", "APPLY", "FOLD", "S0", "S1", "S2", "S3"][..])
            .prop_map(String::from),
        1 => prop::sample::select(&["", "new", "../X", "A-B", "NEW\n", "X\0"][..])
            .prop_map(String::from),
        1 => "[A-Z][A-Z0-9_]{0,40}",
    ]
}

/// One request a script may send about a transaction's stage.
#[derive(Debug, Clone)]
enum Op {
    Transition(String),
    Commit,
    Fail,
    Retry(Option<String>),
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any_stage().prop_map(Op::Transition),
        1 => Just(Op::Commit),
        1 => Just(Op::Fail),
        2 => proptest::option::of(any_stage()).prop_map(Op::Retry),
    ]
}

/// An explicit FSM as fsm.json would give it: stages S0..Sn and, per
/// stage, distinct edges to other stages or DONE/FAIL, some iterate edges.
#[derive(Debug, Clone)]
struct Spec {
    stages: Vec<String>,
    edges: BTreeMap<String, Vec<(String, bool)>>,
}

fn any_spec() -> impl Strategy<Value = Spec> {
    (1usize..=5)
        .prop_flat_map(|n| {
            let targets = n + 2; // the stages, DONE, FAIL
            (Just(n), vec(vec((0..targets, any::<bool>()), 0..4), n..=n))
        })
        .prop_map(|(n, raw)| {
            let stages: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
            let name = |k: usize| match k {
                k if k < n => format!("S{k}"),
                k if k == n => DONE.to_string(),
                _ => FAIL.to_string(),
            };
            let mut edges = BTreeMap::new();
            for (i, list) in raw.into_iter().enumerate() {
                let mut seen = Vec::new();
                let mut out = Vec::new();
                for (k, iterate) in list {
                    let to = name(k);
                    // Self-loops are left to the fuzz corpus
                    // (regress-self-loop.json): whether fsm.json may have
                    // them is the loader's decision, not this test's.
                    if k != i && !seen.contains(&to) {
                        seen.push(to.clone());
                        out.push((to, iterate));
                    }
                }
                edges.insert(stages[i].clone(), out);
            }
            Spec { stages, edges }
        })
}

impl Spec {
    fn to_json(&self) -> String {
        let transitions: Map<String, Value> = self
            .edges
            .iter()
            .map(|(from, list)| {
                let edges = list
                    .iter()
                    .map(|(to, iterate)| {
                        if *iterate {
                            json!({"to": to, "iterate": true})
                        } else {
                            json!(to)
                        }
                    })
                    .collect();
                (from.clone(), Value::Array(edges))
            })
            .collect();
        json!({"stages": self.stages, "transitions": transitions}).to_string()
    }

    fn edge(&self, from: &str, to: &str) -> Option<bool> {
        self.edges
            .get(from)?
            .iter()
            .find(|(t, _)| t == to)
            .map(|(_, i)| *i)
    }
}

/// What a transaction's stage bookkeeping looks like between requests.
#[derive(Debug, Clone, PartialEq)]
struct Txn {
    stage: String,
    iteration: u64,
}

/// Applies `op` the way the daemon's service does (transition, commit,
/// fail, retry), returning whether it was accepted.
fn apply(f: &Fsm, t: &mut Txn, op: &Op) -> Result<(), String> {
    let live = || {
        if fsm::is_terminal(&t.stage) {
            Err(format!("{} is final", t.stage))
        } else {
            Ok(())
        }
    };
    match op {
        Op::Transition(to) => {
            let step = f.transition(&t.stage, to).map_err(|e| e.to_string())?;
            // DONE and FAIL are logged as a commit / failure: no iteration.
            if step.iterate && !fsm::is_terminal(to) {
                t.iteration += 1;
            }
            t.stage = to.clone();
        }
        Op::Commit => {
            live()?;
            t.stage = DONE.into();
        }
        Op::Fail => {
            live()?;
            t.stage = FAIL.into();
        }
        Op::Retry(to) => {
            let to = f
                .retry_target(&t.stage, to.as_deref())
                .map_err(|e| e.to_string())?;
            t.stage = to;
            t.iteration += 1;
        }
    }
    Ok(())
}

/// Drives `f` with `ops` and checks the promises of SPEC §4 after each.
/// `edge(from, to)` is the iterate flag of an explicit edge, if any.
fn check_walk(f: &Fsm, ops: &[Op], edge: impl Fn(&str, &str) -> Option<bool>) {
    let mut t = Txn {
        stage: f.initial().to_string(),
        iteration: 1,
    };
    for op in ops {
        let before = t.clone();
        let result = apply(f, &mut t, op);
        assert!(f.knows(&t.stage), "{op:?} led to unknown stage {}", t.stage);
        if before.stage == DONE {
            assert!(result.is_err() && t == before, "{op:?} changed a DONE txn");
            continue;
        }
        if before.stage == FAIL {
            match op {
                Op::Retry(_) if result.is_ok() => {
                    assert!(!fsm::is_terminal(&t.stage), "retry into {}", t.stage);
                    assert_eq!(t.iteration, before.iteration + 1);
                }
                _ => assert!(result.is_err() && t == before, "{op:?} changed a FAIL txn"),
            }
            continue;
        }
        // A live transaction.
        match (op, &result) {
            (_, Err(_)) => assert_eq!(t, before, "a refused {op:?} changed the txn"),
            (Op::Retry(_), Ok(())) => panic!("retry of a live {} txn accepted", before.stage),
            (Op::Transition(to), Ok(())) => {
                assert_ne!(to, &before.stage, "a move to the same stage");
                let iterate = edge(&before.stage, to).unwrap_or(false);
                let bump = u64::from(iterate && !fsm::is_terminal(to));
                assert_eq!(
                    t.iteration,
                    before.iteration + bump,
                    "{} -> {to}: iteration bumps exactly on an iterate edge",
                    before.stage
                );
            }
            (Op::Commit | Op::Fail, Ok(())) => assert_eq!(t.iteration, before.iteration),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_default_fsm_never_moves_backward(from in any_stage(), to in any_stage()) {
        let f = Fsm::default();
        let pos = |s: &str| DEFAULT_STAGES.iter().position(|x| *x == s);
        match f.transition(&from, &to) {
            Ok(step) => {
                prop_assert!(!step.iterate);
                prop_assert!(!fsm::is_terminal(&from));
                let forward = match (pos(&from), pos(&to)) {
                    (Some(a), Some(b)) => b > a,
                    (_, None) => to == DONE || to == FAIL,
                    (None, Some(_)) => true,
                };
                prop_assert!(forward, "{} -> {} allowed", from, to);
            }
            Err(_) => {
                // Refused only for a reason: final, backward, unknown, same.
                let ok_move = !fsm::is_terminal(&from)
                    && from != to
                    && match (pos(&from), pos(&to)) {
                        (Some(a), Some(b)) => b > a,
                        (_, None) => to == DONE || to == FAIL,
                        (None, Some(_)) => true,
                    };
                prop_assert!(!ok_move, "{} -> {} refused", from, to);
            }
        }
    }

    #[test]
    fn the_default_fsm_keeps_done_and_fail_final(ops in vec(any_op(), 0..40)) {
        check_walk(&Fsm::default(), &ops, |_, _| None);
    }

    #[test]
    fn the_rag_fsm_keeps_its_promises(ops in vec(any_op(), 0..60)) {
        let rag = fsm::builtin("rag").unwrap();
        let text = fsm::BUILTIN.iter().find(|(n, _)| *n == "rag").unwrap().1;
        let spec: Value = serde_json::from_str(text).unwrap();
        check_walk(&rag, &ops, |from, to| {
            spec["transitions"][from].as_array()?.iter().find_map(|e| match e {
                Value::String(s) if s == to => Some(false),
                Value::Object(o) if o["to"] == to => {
                    Some(o.get("iterate").and_then(Value::as_bool).unwrap_or(false))
                }
                _ => None,
            })
        });
    }

    #[test]
    fn explicit_fsms_allow_exactly_their_edges(
        spec in any_spec(),
        ops in vec(any_op(), 0..40),
        pairs in vec((0usize..8, 0usize..8), 1..30),
    ) {
        let f = Fsm::from_json(&spec.to_json()).unwrap();
        let mut all = spec.stages.clone();
        all.extend([DONE.to_string(), FAIL.to_string()]);
        for (a, b) in pairs {
            let (from, to) = (&all[a % all.len()], &all[b % all.len()]);
            let got = f.transition(from, to).ok().map(|s| s.iterate);
            let want = if fsm::is_terminal(from) || from == to {
                None
            } else if to == FAIL {
                Some(false)
            } else {
                spec.edge(from, to)
            };
            prop_assert_eq!(got, want, "{} -> {}", from, to);
        }
        check_walk(&f, &ops, |from, to| spec.edge(from, to));
    }

    #[test]
    fn fsm_json_never_panics(text in ".{0,200}") {
        checks::fsm_json(text.as_bytes());
    }
}

// ----------------------------------------------------------------- fold --

/// Any JSON value, a few levels deep: what users put in patches and data.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Object keys, including the reserved and typed ones of state.json.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,8}",
        1 => prop::sample::select(&[
            "txn_id", "description", "stage", "target", "iteration", "agent", "ctx_digest",
            "last_checkpoint", "last_error", "module", "created", "seq", "tes_plan",
        ][..]).prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn any_object() -> impl Strategy<Value = Map<String, Value>> {
    vec((key(), any_json()), 0..5).prop_map(|kv| kv.into_iter().collect())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 _.-]{0,12}",
        1 => any::<String>(),
        1 => Just("a \"b\"\nc\u{0}\u{2028}\\".to_string()),
    ]
}

fn start() -> impl Strategy<Value = Body> {
    (text(), text(), text(), text(), text(), any_stage(), text()).prop_map(
        |(txn_id, description, target, agent, module, stage, ctx_digest)| Body::Start {
            txn_id,
            description,
            target,
            agent,
            module,
            stage,
            ctx_digest,
            time: Default::default(),
        },
    )
}

/// Any event after the first, as the daemon (or a hand edit) writes them.
fn any_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => (any_stage(), any_stage(), proptest::option::of(1u64..1000))
            .prop_map(|(from, to, iteration)| Body::Transition { from, to, iteration }),
        2 => any_object().prop_map(|patch| Body::Updated { patch }),
        2 => (text(), text(), any::<u64>(), text(), text()).prop_map(
            |(file, description, bytes, sha256, ctx_digest)| Body::EvidenceAdded {
                file, description, bytes, sha256, ctx_digest,
            },
        ),
        1 => (text(), text(), any_json())
            .prop_map(|(target, plan, connector)| Body::TesResolved { target, plan, connector }),
        1 => (any_stage(), any::<u64>())
            .prop_map(|(from, duration_ms)| Body::Commit { from, duration_ms }),
        1 => (any_stage(), text()).prop_map(|(from, error)| Body::Fail { from, error }),
        1 => (any_stage(), 1u64..1000).prop_map(|(to, iteration)| Body::Retry { to, iteration }),
        1 => Just(Body::Activated),
        1 => any_object().prop_map(|state| Body::Adopted { state }),
        2 => ("[a-z][a-z0-9_.]{0,10}", any_object())
            .prop_map(|(event, data)| Body::User { event, data }),
    ]
}

fn any_meta() -> impl Strategy<Value = (String, Option<String>, Option<Value>)> {
    (
        prop_oneof![
            3 => (0u32..60).prop_map(|s| format!("2025-10-17T14:30:{s:02}.000Z")),
            1 => text(),
        ],
        proptest::option::of(text()),
        proptest::option::of(Just(json!({"pid": 42, "uid": 1000}))),
    )
}

/// A log: txn_start, then any events; each with its envelope.
fn any_log() -> impl Strategy<Value = Vec<Map<String, Value>>> {
    (start(), vec(any_body(), 0..30), vec(any_meta(), 31..=31)).prop_map(|(first, rest, metas)| {
        std::iter::once(first)
            .chain(rest)
            .zip(metas)
            .enumerate()
            .map(|(i, (body, (ts, request_id, client)))| {
                body.to_object(&Meta {
                    ts,
                    seq: i as u64 + 1,
                    request_id,
                    client,
                })
            })
            .collect()
    })
}

fn numbered(lines: &[Map<String, Value>]) -> impl Iterator<Item = (u64, &Map<String, Value>)> {
    lines.iter().enumerate().map(|(i, l)| (i as u64 + 1, l))
}

/// A model of the fields SPEC §3/§4 define by event type.
fn model(lines: &[Map<String, Value>]) -> (String, u64, Option<String>) {
    let s = |l: &Map<String, Value>, k: &str| l.get(k).and_then(Value::as_str).map(String::from);
    let mut stage = s(&lines[0], "stage").unwrap_or_else(|| "NEW".into());
    let mut iteration = 1;
    let mut last_error = None;
    // SPEC §8: a final transaction stays final (only a retry leaves
    // FAIL), and a stage is always a well-formed name.
    let named = |to: &Option<String>| {
        to.as_deref()
            .is_some_and(|t| fsm::validate_stage_name(t).is_ok())
    };
    for l in &lines[1..] {
        let is_final = fsm::is_terminal(&stage);
        match l["event"].as_str().unwrap_or_default() {
            "stage_transition" if is_final || (l.contains_key("to") && !named(&s(l, "to"))) => {}
            "stage_transition" => {
                stage = s(l, "to").unwrap_or(stage);
                iteration = l
                    .get("iteration")
                    .and_then(Value::as_u64)
                    .unwrap_or(iteration);
            }
            // A commit/failure completes the move its stage_transition
            // began; it cannot turn one final stage into the other.
            "txn_commit" if is_final && stage != DONE => {}
            "txn_fail" if is_final && stage != FAIL => {}
            "txn_commit" => stage = DONE.into(),
            "txn_fail" => {
                stage = FAIL.into();
                last_error = Some(s(l, "error").unwrap_or_default());
            }
            "txn_retry"
                if l.contains_key("to")
                    && (stage != FAIL
                        || !named(&s(l, "to"))
                        || s(l, "to").is_some_and(|t| fsm::is_terminal(&t))) => {}
            "txn_retry" => {
                stage = s(l, "to").unwrap_or(stage);
                iteration = l
                    .get("iteration")
                    .and_then(Value::as_u64)
                    .unwrap_or(iteration);
                last_error = None;
            }
            "state_adopted" => {
                let st = l["state"].as_object().unwrap();
                let adopted = st.get("stage").and_then(Value::as_str).map(String::from);
                if !is_final && named(&adopted) {
                    stage = adopted.unwrap_or(stage);
                }
                iteration = st
                    .get("iteration")
                    .and_then(Value::as_u64)
                    .unwrap_or(iteration);
                if st.contains_key("last_error") {
                    last_error = st["last_error"].as_str().map(String::from);
                }
            }
            _ => {}
        }
    }
    (stage, iteration, last_error)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_fold_is_the_events_applied_one_at_a_time(lines in any_log(), cut in 1usize..31) {
        let folded = state::fold(numbered(&lines), "ttm").unwrap();
        // One at a time, as live mutations advance the state.
        let mut s = State::start(&lines[0], "ttm").unwrap();
        for (seq, l) in numbered(&lines).skip(1) {
            s.apply(seq, l);
        }
        prop_assert_eq!(&s, &folded);
        // A prefix folded at start-up, then the rest applied live.
        let cut = cut.min(lines.len());
        let mut resumed = state::fold(numbered(&lines[..cut]), "ttm").unwrap();
        for (seq, l) in numbered(&lines).skip(cut) {
            resumed.apply(seq, l);
        }
        prop_assert_eq!(&resumed, &folded);
        // What SPEC §3/§4 say each event does.
        prop_assert_eq!(folded.seq, lines.len() as u64);
        let (stage, iteration, last_error) = model(&lines);
        prop_assert_eq!(&folded.stage, &stage);
        prop_assert_eq!(folded.iteration, iteration);
        prop_assert_eq!(&folded.last_error, &last_error);
        // `created` is txn_start's time, unless a state.json adopted from
        // the bash version brought its own.
        let adopted_created = lines
            .iter()
            .filter(|l| l["event"] == "state_adopted")
            .filter_map(|l| l["state"]["created"].as_str())
            .next_back();
        let created = adopted_created.unwrap_or_else(|| lines[0]["ts"].as_str().unwrap());
        prop_assert_eq!(folded.created.as_str(), created);
        let last_ts = lines.last().unwrap()["ts"].as_str().unwrap();
        prop_assert_eq!(&folded.last_checkpoint, last_ts);
        for k in state::RESERVED_FIELDS {
            prop_assert!(!folded.extra.contains_key(*k), "extra has {}", k);
        }
    }

    #[test]
    fn the_log_text_folds_like_the_events(lines in any_log()) {
        // Written as events.ndjson, read back as the daemon reads it.
        let mut text = String::new();
        for l in &lines {
            text.push_str(&Value::Object(l.clone()).to_string());
            text.push('\n');
        }
        let (parsed, used) = parse_lines(text.as_bytes(), 1);
        prop_assert_eq!(used, text.len());
        prop_assert_eq!(parsed.len(), lines.len());
        for (i, (p, l)) in parsed.iter().zip(&lines).enumerate() {
            prop_assert_eq!(p.seq, i as u64 + 1);
            prop_assert_eq!(p.object.as_ref(), Some(l));
            prop_assert!(!p.text.contains('\n'));
        }
        let from_text = state::fold(
            parsed.iter().map(|l| (l.seq, l.object.as_ref().unwrap())),
            "ttm",
        )
        .unwrap();
        prop_assert_eq!(from_text, state::fold(numbered(&lines), "ttm").unwrap());
        checks::log_fold(text.as_bytes());
    }

    #[test]
    fn state_json_round_trips(lines in any_log()) {
        let s = state::fold(numbered(&lines), "ttm").unwrap();
        let text = s.to_pretty_json();
        prop_assert!(text.ends_with("}\n"), "no final newline");
        let back: State = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &s);
        let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&text)
            .unwrap()
            .keys()
            .take(3)
            .cloned()
            .collect();
        prop_assert_eq!(keys, ["txn_id", "description", "stage"]);
        checks::state_json(text.as_bytes());
    }

    #[test]
    fn parse_lines_survives_any_bytes(
        bytes in vec(prop_oneof![4 => any::<u8>(), 1 => Just(b'\n')], 0..2048),
        first in 0u64..(u64::MAX / 2),
    ) {
        let (lines, used) = parse_lines(&bytes, first);
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
        prop_assert_eq!(lines.len(), newlines);
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        prop_assert_eq!(used, end);
        let mut at = 0;
        for (i, l) in lines.iter().enumerate() {
            prop_assert_eq!(l.seq, first + i as u64);
            let nl = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap();
            prop_assert_eq!(&l.text, &String::from_utf8_lossy(&bytes[at..nl]));
            at = nl + 1;
        }
        checks::log_fold(&bytes);
        checks::state_json(&bytes);
    }

    #[test]
    fn names_and_ctx_names_never_panic(text in any::<String>(), n in any::<u8>()) {
        let mut data = vec![n];
        data.extend_from_slice(text.as_bytes());
        checks::names(&data);
        checks::ctx_names(text.as_bytes());
    }

    #[test]
    fn generated_ids_are_valid_ids(desc in any::<String>(), secs in 0i64..253_402_300_799, n in 1u32..1000) {
        let now = chrono::DateTime::from_timestamp(secs, 0).unwrap();
        let txn = id::txn_id(&desc, now, n);
        prop_assert!(id::validate_txn_id(&txn).is_ok(), "{}", txn);
    }

    #[test]
    fn evidence_numbers_continue_above_the_highest(numbers in vec(0u64..100_000, 0..20)) {
        let names: Vec<String> = numbers.iter().map(|n| format!("{}_x.txt", ctx::format_number(*n))).collect();
        let next = ctx::next_number(names.iter().map(String::as_str)).unwrap();
        prop_assert!(next >= ctx::FIRST_EVIDENCE && next % 10 == 0);
        prop_assert!(numbers.iter().all(|&n| next > n));
        let name = ctx::evidence_name(next, "d", "f.txt").unwrap();
        prop_assert!(ctx::is_ctx_name(&name));
        prop_assert_eq!(ctx::number_of(&name), Some(next));
    }
}

// ---------------------------------------------------------- fuzz corpus --

/// Every file of `fuzz/corpus/<target>/` through its target's function:
/// the inputs fuzzing found interesting (and any crash it found, once
/// fixed) stay regression tests without running a fuzzer.
#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut failed = Vec::new();
    for (target, check) in checks::TARGETS {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for fuzz target {target}");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(format!("{target}: {}", file.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz corpus inputs that fail (see the panics above):\n{}",
        failed.join("\n")
    );
}
