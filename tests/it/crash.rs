//! Crash safety (issue #6, item 1): `kill -9` of a busy daemon, again and
//! again, never loses an acknowledged change, never duplicates one, never
//! leaves a torn or inconsistent file; and a tree damaged in the ways a
//! crash or a person can damage it is recovered at start-up without giving
//! up on the transactions that are fine.
//!
//! The torture test runs `TTM_TORTURE_ROUNDS` rounds (default 50); run it
//! with `--nocapture` to see its figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tonic::Code;
use tonic::transport::Channel;
use ttm_proto::v1::add_context_request::Part;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::{
    AddContextHeader, AddContextRequest, AppendEventRequest, CreateRequest, GetStateRequest,
    Preconditions, TransitionRequest, UpdateRequest,
};
use ttm_tests::{Daemon, HANG, Progress, check_log, grpc, read_json, sha256_hex, txn_ref};

// ------------------------------------------------------------- helpers --

/// A tiny xorshift generator: reproducible rounds without a dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 24) as u8).collect()
    }
}

/// The lines of a log file as parsed objects (`None` for a line that is
/// not a JSON object), and whether a fragment without newline ends it.
fn log_lines(dir: &Path) -> (Vec<Option<Map<String, Value>>>, bool) {
    let bytes = fs::read(dir.join("events.ndjson")).unwrap_or_default();
    let torn = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    let lines = complete.split(|&b| b == b'\n').collect::<Vec<_>>();
    let lines = &lines[..lines.len().saturating_sub(1)];
    let parsed = lines
        .iter()
        .map(|raw| match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    (parsed, torn)
}

/// The fold of the first `n` lines, as JSON (the daemon's own definition
/// of what an event means: the contract is that state.json equals it).
fn fold_prefix(lines: &[Option<Map<String, Value>>], n: usize, module: &str) -> Value {
    let empty = Map::new();
    let state = ttmd::core::state::fold(
        lines[..n]
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.as_ref().unwrap_or(&empty))),
        module,
    )
    .unwrap_or_else(|e| panic!("the log cannot be folded: {e}"));
    serde_json::to_value(&state).unwrap()
}

/// The transaction directories of `module` (not `active`, not temp dirs).
fn txn_dirs(d: &Daemon, module: &str) -> Vec<PathBuf> {
    let txns = d.root.join(module).join("txns");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&txns)
        .map(|l| {
            l.flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name != "active" && !name.starts_with('.')
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The torture test's identifier of the change a line records, if it is
/// one of ours: a user event's `data.uid`, an update's `patch.tort_uid`, a
/// transition's request id, an evidence file's description.
fn uid_of(line: &Map<String, Value>) -> Option<String> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match line.get("event").and_then(Value::as_str)? {
        "tort" => s(line.get("data").and_then(|d| d.get("uid"))),
        "state_updated" => s(line.get("patch").and_then(|p| p.get("tort_uid"))),
        "stage_transition" => s(line.get("request_id")),
        "evidence_added" => s(line.get("description")),
        _ => None,
    }
}

// ------------------------------------------------------------- torture --

/// What a writer was told.
#[derive(Debug, Clone)]
enum Ack {
    /// A user event `tort` with `data.uid`, at `seq`.
    Event { uid: String, seq: u64 },
    /// A transition to `stage` with request id `uid`, at `seq`.
    Transition {
        uid: String,
        seq: u64,
        stage: String,
    },
    /// An update with `patch.tort_uid`, at `seq`.
    Update { uid: String, seq: u64 },
    /// An evidence file (description `uid`) stored as `file`.
    Ctx {
        uid: String,
        seq: u64,
        file: String,
        sha256: String,
        bytes: u64,
    },
    /// A transaction created (idle afterwards).
    Create { id: String },
}

/// A call that got no answer (the daemon died under it).
#[derive(Debug, Clone)]
enum Unacked {
    Transition { uid: String, stage: String },
    Other { uid: String },
}

#[derive(Debug, Default)]
struct WriterReport {
    acks: Vec<Ack>,
    unacked: Vec<Unacked>,
    /// Refusals (a backward transition): expected, counted.
    refused: usize,
    /// Codes of the errors that ended the writer, with their messages.
    errors: Vec<(Code, String)>,
}

const STAGES: [&str; 4] = ["SELECT", "ASSEMBLE", "EXECUTE", "VALIDATE"];

fn pre(request_id: &str) -> Option<Preconditions> {
    Some(Preconditions {
        expect_stage: None,
        expect_seq: None,
        request_id: request_id.to_owned(),
        ..Default::default()
    })
}

async fn guarded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(HANG, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG:?}"))
        .map(tonic::Response::into_inner)
}

/// One writer: a mix of calls on `id` until the daemon is gone.
async fn writer(
    mut c: TtmClient<Channel>,
    id: String,
    round: u64,
    w: u64,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let uid = format!("r{round}w{w}n{n}");
        let pick = rng.below(100);
        let mut transition_to = None;
        let result: Result<Ack, tonic::Status> = if pick < 80 {
            guarded(
                "AppendEvent",
                c.append_event(AppendEventRequest {
                    txn: txn_ref("ttm", &id),
                    event: "tort".into(),
                    data_json: format!(r#"{{"uid":"{uid}","w":{w},"n":{n}}}"#),
                    pre: None,
                }),
            )
            .await
            .map(|r| Ack::Event {
                uid: uid.clone(),
                seq: r.seq,
            })
        } else if pick < 88 {
            let stage = STAGES[rng.below(STAGES.len() as u64) as usize].to_owned();
            transition_to = Some(stage.clone());
            guarded(
                "Transition",
                c.transition(TransitionRequest {
                    txn: txn_ref("ttm", &id),
                    stage: stage.clone(),
                    pre: pre(&uid),
                }),
            )
            .await
            .map(|r| Ack::Transition {
                uid: uid.clone(),
                seq: r.state.map_or(0, |s| s.seq),
                stage,
            })
        } else if pick < 96 {
            guarded(
                "Update",
                c.update(UpdateRequest {
                    txn: txn_ref("ttm", &id),
                    patch_json: format!(r#"{{"tort_uid":"{uid}","w{w}":{n}}}"#),
                    pre: None,
                }),
            )
            .await
            .map(|r| Ack::Update {
                uid: uid.clone(),
                seq: r.state.map_or(0, |s| s.seq),
            })
        } else if pick < 99 {
            let len = 1 + rng.below(48 * 1024) as usize;
            let data = rng.bytes(len);
            let mut messages = vec![AddContextRequest {
                part: Some(Part::Header(AddContextHeader {
                    txn: txn_ref("ttm", &id),
                    file_name: "blob.bin".into(),
                    description: uid.clone(),
                    pre: None,
                })),
            }];
            messages.extend(data.chunks(16 * 1024).map(|chunk| AddContextRequest {
                part: Some(Part::Chunk(chunk.to_vec())),
            }));
            messages.push(AddContextRequest {
                part: Some(Part::End(ttm_proto::v1::AddContextEnd {
                    bytes: len as u64,
                    sha256: String::new(),
                })),
            });
            let sha = sha256_hex(&data);
            guarded("AddContext", c.add_context(tokio_stream::iter(messages)))
                .await
                .map(|r| {
                    assert_eq!(r.sha256, sha, "AddContext {uid}: the answer's sha256");
                    assert_eq!(r.bytes, len as u64, "AddContext {uid}: the answer's size");
                    Ack::Ctx {
                        uid: uid.clone(),
                        seq: r.seq,
                        file: r.file,
                        sha256: sha,
                        bytes: len as u64,
                    }
                })
        } else {
            guarded(
                "Create",
                c.create(CreateRequest {
                    module: "ttm".into(),
                    description: format!("side {uid}"),
                    target: String::new(),
                    agent: String::new(),
                    no_activate: false,
                    request_id: String::new(),
                    ..Default::default()
                }),
            )
            .await
            .map(|r| Ack::Create {
                id: r.state.map(|s| s.txn_id).unwrap_or_default(),
            })
        };
        match result {
            Ok(ack) => report.acks.push(ack),
            Err(e) if refusal(e.code()) => report.refused += 1,
            Err(e) => {
                report.unacked.push(match transition_to {
                    Some(stage) => Unacked::Transition { uid, stage },
                    None => Unacked::Other { uid },
                });
                report.errors.push((e.code(), e.message().to_owned()));
                break;
            }
        }
    }
    report
}

/// A refusal the mix provokes on purpose (a backward or repeated
/// transition): not an error.
fn refusal(code: Code) -> bool {
    code == Code::FailedPrecondition
}

/// Codes a call may end with when the daemon is killed under it.
fn crash_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
    )
}

/// Checks one transaction directory after a restart: the log contract, the
/// view equal to the fold, every evidence file present and intact, and
/// returns the uids its lines record (each once).
#[track_caller]
fn check_txn(dir: &Path, seen: &mut HashMap<String, (PathBuf, u64)>) -> Vec<Value> {
    let events = check_log(dir); // seq == line number, state.json's seq
    let (lines, torn) = log_lines(dir);
    assert!(!torn, "{}: a torn line survived recovery", dir.display());
    let state = read_json(&dir.join("state.json"));
    assert_eq!(
        state,
        fold_prefix(&lines, lines.len(), "ttm"),
        "{}: state.json is not the fold of the log",
        dir.display()
    );
    let mut named = BTreeSet::new();
    for e in &events {
        if e["event"] == "evidence_added" {
            let file = e["file"].as_str().expect("evidence_added has a file");
            named.insert(file.to_owned());
            let path = dir.join("ctx").join(file);
            let bytes = fs::read(&path)
                .unwrap_or_else(|err| panic!("{}: logged but missing: {err}", path.display()));
            assert_eq!(
                Some(bytes.len() as u64),
                e["bytes"].as_u64(),
                "{}: size differs from its event",
                path.display()
            );
            assert_eq!(
                sha256_hex(&bytes),
                e["sha256"].as_str().unwrap_or(""),
                "{}: content differs from its event's sha256",
                path.display()
            );
        }
    }
    for (line, e) in lines.iter().zip(&events) {
        let line = line.as_ref().expect("check_log parsed it");
        if let Some(uid) = uid_of(line) {
            let seq = e["seq"].as_u64().unwrap();
            if let Some((other, at)) = seen.insert(uid.clone(), (dir.to_path_buf(), seq)) {
                panic!(
                    "{uid} is logged twice: {} line {at} and {} line {seq}",
                    other.display(),
                    dir.display()
                );
            }
        }
    }
    events
}

/// ctx files numbered 100 and up that no `evidence_added` names.
fn orphan_ctx_files(dir: &Path, events: &[Value]) -> Vec<String> {
    let named: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "evidence_added")
        .filter_map(|e| e["file"].as_str())
        .collect();
    let mut orphans: Vec<String> = fs::read_dir(dir.join("ctx"))
        .map(|l| {
            l.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.split('_')
                        .next()
                        .and_then(|p| p.parse::<u64>().ok())
                        .is_some_and(|p| p >= 100)
                })
                .filter(|n| !named.contains(n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    orphans.sort();
    orphans
}

/// Asserts that each acknowledged change is at the seq its answer named.
#[track_caller]
fn check_acks(d: &Daemon, id: &str, acks: &[Ack]) {
    let dir = d.txn_dir("ttm", id);
    let (lines, _) = log_lines(&dir);
    let line = |seq: u64, uid: &str| -> &Map<String, Value> {
        lines
            .get(seq as usize - 1)
            .and_then(Option::as_ref)
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged {uid} at seq {seq}, but {} has {} lines: LOST",
                    dir.display(),
                    lines.len()
                )
            })
    };
    for ack in acks {
        match ack {
            Ack::Event { uid, seq }
            | Ack::Update { uid, seq }
            | Ack::Transition { uid, seq, .. } => {
                assert_eq!(
                    uid_of(line(*seq, uid)).as_deref(),
                    Some(uid.as_str()),
                    "acknowledged {uid} at seq {seq}, but that line is {:?}: LOST",
                    line(*seq, uid)
                );
                if let Ack::Transition { stage, .. } = ack {
                    assert_eq!(line(*seq, uid)["to"], stage.as_str());
                }
            }
            Ack::Ctx {
                uid,
                seq,
                file,
                sha256,
                bytes,
            } => {
                let l = line(*seq, uid);
                assert_eq!(uid_of(l).as_deref(), Some(uid.as_str()), "{l:?}: LOST");
                assert_eq!(l["file"], file.as_str());
                assert_eq!(l["sha256"], sha256.as_str());
                assert_eq!(l["bytes"].as_u64(), Some(*bytes));
            }
            Ack::Create { id } => {
                let created = d.txn_dir("ttm", id);
                assert!(
                    created.join("events.ndjson").is_file(),
                    "acknowledged creation of {id} is LOST"
                );
            }
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    acked: BTreeMap<&'static str, usize>,
    unacked: usize,
    unacked_landed: usize,
    refused: usize,
    retried: usize,
    retried_replayed: usize,
    views_behind: usize,
    torn_tails: usize,
    orphans: Vec<String>,
    events_in_tree: usize,
}

fn kind(ack: &Ack) -> &'static str {
    match ack {
        Ack::Event { .. } => "event",
        Ack::Transition { .. } => "transition",
        Ack::Update { .. } => "update",
        Ack::Ctx { .. } => "ctx add",
        Ack::Create { .. } => "create",
    }
}

/// `kill -9` of a daemon serving 8 busy writers at a random moment, then a
/// restart, `TTM_TORTURE_ROUNDS` times (default 50) on one tree: every
/// acknowledged change is in the log exactly once at the seq it was given,
/// no change is logged twice, the view is always a fold of a prefix of the
/// log (after recovery: of all of it), every logged evidence file is intact,
/// and no temporary file survives a restart.
#[test]
fn kill9_under_load_loses_and_duplicates_nothing() {
    const WRITERS: u64 = 8;
    let rounds: u64 = std::env::var("TTM_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let began = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut d = Daemon::start_new(); // fsync durability: the default
    let mut totals = Totals::default();
    let mut all_acks: BTreeMap<String, Vec<Ack>> = BTreeMap::new();

    for round in 0..rounds {
        let mut rng = Rng::new(round + 1);
        // A fresh transaction per round; the tree keeps them all.
        let (id, clients) = rt.block_on(async {
            let mut c = grpc(&d.socket).await;
            let created = guarded(
                "Create",
                c.create(CreateRequest {
                    module: "ttm".into(),
                    description: format!("torture round {round}"),
                    target: String::new(),
                    agent: String::new(),
                    no_activate: false,
                    request_id: String::new(),
                    ..Default::default()
                }),
            )
            .await
            .expect("create the round's transaction");
            let id = created.state.unwrap().txn_id;
            let mut clients = Vec::new();
            for _ in 0..WRITERS {
                clients.push(grpc(&d.socket).await);
            }
            (id, clients)
        });
        let stop = Arc::new(AtomicBool::new(false));
        // After the kill each writer ends on its next call; a writer's end
        // is the progress the joins below wait for.
        let ended = Progress::new();
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(w, c)| {
                let seed = Rng::new(round * 1000 + w as u64 + 7);
                let work = writer(c, id.clone(), round, w as u64, seed, stop.clone());
                let ended = ended.clone();
                rt.spawn(async move {
                    let report = work.await;
                    ended.bump();
                    report
                })
            })
            .collect();
        let delay = Duration::from_millis(20 + rng.below(181));
        std::thread::sleep(delay);
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        let reports: Vec<WriterReport> = rt.block_on(async {
            let mut reports = Vec::new();
            for task in tasks {
                reports.push(
                    ended
                        .guard("a writer after the kill", task)
                        .await
                        .expect("a writer panicked"),
                );
            }
            reports
        });
        // What the crash left, before any recovery: the view is a fold of
        // a prefix of the log (it may lag behind, never lead or lie).
        let dir = d.txn_dir("ttm", &id);
        let (lines, torn) = log_lines(&dir);
        totals.torn_tails += usize::from(torn);
        let view = read_json(&dir.join("state.json"));
        let at = view["seq"].as_u64().expect("state.json has a seq") as usize;
        assert!(
            at <= lines.len(),
            "round {round}: state.json (seq {at}) is ahead of the log ({} lines)",
            lines.len()
        );
        assert_eq!(
            view,
            fold_prefix(&lines, at, "ttm"),
            "round {round}: the crash left a state.json that is not a fold of the log"
        );
        totals.views_behind += usize::from(at < lines.len());

        d.start();

        let mut round_acks = Vec::new();
        let mut retries = Vec::new();
        let mut unanswered = Vec::new();
        for r in reports {
            for (code, message) in &r.errors {
                assert!(
                    crash_code(*code),
                    "round {round}: a writer failed with {code:?}: {message}"
                );
            }
            totals.refused += r.refused;
            totals.unacked += r.unacked.len();
            for u in r.unacked {
                match u {
                    Unacked::Transition { uid, stage } => {
                        unanswered.push(uid.clone());
                        retries.push((uid, stage));
                    }
                    Unacked::Other { uid } => unanswered.push(uid),
                }
            }
            round_acks.extend(r.acks);
        }
        for ack in &round_acks {
            *totals.acked.entry(kind(ack)).or_default() += 1;
        }
        check_acks(&d, &id, &round_acks);
        // Calls the kill cut off may have happened or not (never twice,
        // which the uid scan below checks); count those that did.
        let logged: BTreeSet<String> = log_lines(&dir)
            .0
            .iter()
            .flatten()
            .filter_map(uid_of)
            .collect();
        let side_txns: Vec<String> = txn_dirs(&d, "ttm")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        totals.unacked_landed += unanswered
            .iter()
            .filter(|uid| {
                logged.contains(*uid)
                    || side_txns
                        .iter()
                        .any(|t| t.starts_with(&format!("side-{uid}-")))
            })
            .count();
        let leftovers = ttm_tests::temp_leftovers(&d.root);
        assert!(
            leftovers.is_empty(),
            "round {round}: temporary files survived the restart: {leftovers:?}"
        );

        // A transition whose answer was lost is retried with its request
        // id: answered once, logged at most once.
        rt.block_on(async {
            let mut c = grpc(&d.socket).await;
            for (uid, stage) in retries {
                let before = log_lines(&dir).0.len();
                let again = guarded(
                    "Transition retry",
                    c.transition(TransitionRequest {
                        txn: txn_ref("ttm", &id),
                        stage: stage.clone(),
                        pre: pre(&uid),
                    }),
                )
                .await;
                match again {
                    Ok(r) => {
                        let seq = r.state.map_or(0, |s| s.seq);
                        totals.retried += 1;
                        if log_lines(&dir).0.len() == before {
                            totals.retried_replayed += 1;
                        }
                        round_acks.push(Ack::Transition { uid, seq, stage });
                    }
                    Err(e) => assert!(
                        refusal(e.code()),
                        "retry of {uid} failed: {}: {}",
                        e.code(),
                        e.message()
                    ),
                }
            }
            // The daemon's own state equals the file it serves from.
            let served = guarded(
                "GetState",
                c.get_state(GetStateRequest {
                    txn: txn_ref("ttm", &id),
                }),
            )
            .await
            .expect("GetState after the restart")
            .state
            .unwrap();
            let json: Value = serde_json::from_str(&served.json).unwrap();
            assert_eq!(json, read_json(&dir.join("state.json")));
        });
        check_acks(&d, &id, &round_acks);
        let mut seen = HashMap::new();
        let events = check_txn(&dir, &mut seen);
        for orphan in orphan_ctx_files(&dir, &events) {
            totals.orphans.push(format!("{id}/ctx/{orphan}"));
        }
        all_acks.entry(id).or_default().extend(round_acks);
    }

    // The whole tree at the end: every transaction (including those created
    // by writers, acknowledged or not) is whole; no uid twice anywhere.
    let mut seen = HashMap::new();
    let dirs = txn_dirs(&d, "ttm");
    for dir in &dirs {
        totals.events_in_tree += check_txn(dir, &mut seen).len();
    }
    for (id, acks) in &all_acks {
        check_acks(&d, id, acks);
    }
    // Independently of ttmd's fold code: delete every state.json, let a
    // fresh start rebuild them from the logs, compare.
    let views: Vec<(PathBuf, Value)> = dirs
        .iter()
        .map(|dir| (dir.clone(), read_json(&dir.join("state.json"))))
        .collect();
    d.stop();
    for (dir, _) in &views {
        fs::remove_file(dir.join("state.json")).unwrap();
    }
    d.start();
    for (dir, before) in &views {
        assert_eq!(
            &read_json(&dir.join("state.json")),
            before,
            "{}: state.json differs from the fold of its log",
            dir.display()
        );
    }
    let listed = d.ctl(&["list", "--json"]).json();
    assert_eq!(
        listed["txns"].as_array().map(Vec::len),
        Some(dirs.len()),
        "every transaction directory is served"
    );

    let acked: usize = totals.acked.values().sum();
    let stderr = d.daemon_stderr();
    let torn_dropped = stderr.matches("dropped a torn final line").count();
    let temps_removed = stderr.matches("leftover").count();
    println!(
        "torture: {rounds} rounds, {WRITERS} writers, kill -9 at 20-200 ms, fsync durability, \
         {:.1} s",
        began.elapsed().as_secs_f64()
    );
    println!(
        "torture: acknowledged {acked} ({:?}), lost 0, duplicated 0",
        totals.acked
    );
    println!(
        "torture: {} calls unanswered at the kill ({} of them logged anyway, once); {} refused \
         transitions; {} lost-answer transitions retried by request id ({} answered from the log)",
        totals.unacked,
        totals.unacked_landed,
        totals.refused,
        totals.retried,
        totals.retried_replayed
    );
    println!(
        "torture: after the kills: {} views behind their log, {} torn tails seen, ttmd logged \
         {torn_dropped} torn-line repairs and {temps_removed} temp-file cleanups; {} \
         transactions, {} events in the tree",
        totals.views_behind,
        totals.torn_tails,
        dirs.len(),
        totals.events_in_tree
    );
    println!(
        "torture: {} ctx file(s) without an evidence_added event (crash between storing and \
         logging): {:?}",
        totals.orphans.len(),
        totals.orphans
    );
}

// ------------------------------------------------------ damaged trees --

/// Ways a transaction's log can be unusable, each applied to the log of the
/// directory `dir`; `outside` is a scratch directory outside the tree.
fn break_log(dir: &Path, how: &str, outside: &Path) {
    let log = dir.join("events.ndjson");
    match how {
        "empty" => fs::write(&log, "").unwrap(),
        "no-start" => {
            let text = fs::read_to_string(&log).unwrap();
            let rest: Vec<&str> = text.lines().skip(1).collect();
            let mut first =
                r#"{"ts":"2025-01-01T00:00:00.000Z","event":"progress","seq":1,"data":{}}"#
                    .to_owned();
            first.push('\n');
            for line in rest {
                first.push_str(line);
                first.push('\n');
            }
            fs::write(&log, first).unwrap();
        }
        "directory" => {
            fs::remove_file(&log).unwrap();
            fs::create_dir(&log).unwrap();
            fs::write(log.join("junk"), "x").unwrap();
        }
        "dangling-symlink" => {
            fs::remove_file(&log).unwrap();
            std::os::unix::fs::symlink(outside.join("no-such-log"), &log).unwrap();
        }
        "symlink-to-a-good-log" => {
            // A readable, valid log, but outside the tree: never followed.
            let copy = outside.join(format!(
                "{}.ndjson",
                dir.file_name().unwrap().to_string_lossy()
            ));
            fs::rename(&log, &copy).unwrap();
            std::os::unix::fs::symlink(&copy, &log).unwrap();
        }
        other => panic!("unknown breakage {other}"),
    }
}

const BREAKAGES: [&str; 5] = [
    "empty",
    "no-start",
    "directory",
    "dangling-symlink",
    "symlink-to-a-good-log",
];

/// A stopped daemon with two healthy transactions (the second active) and
/// one broken transaction per `breakages`, all in module `ttm`.
fn tree_with_broken(breakages: &[&str]) -> (Daemon, Vec<String>, Vec<(String, String)>) {
    let mut d = Daemon::start_new();
    let first = d.create("healthy one");
    let mut broken = Vec::new();
    for how in breakages {
        let id = d
            .ctl(&["create", &format!("broken {how}"), "--no-activate"])
            .ok();
        d.ctl(&["event", "work", "-t", &id]).ok();
        broken.push(((*how).to_owned(), id));
    }
    let second = d.create("healthy two");
    d.ctl(&["transition", "SELECT", "-t", &first]).ok();
    d.stop();
    let outside = d.tmp().join("outside");
    fs::create_dir_all(&outside).unwrap();
    for (how, id) in &broken {
        break_log(&d.txn_dir("ttm", id), how, &outside);
    }
    (d, vec![first, second], broken)
}

/// A transaction whose log is empty, does not start with `txn_start`, is a
/// directory, a dangling symlink or a symlink out of the tree is not served
/// and left exactly as it is, while the module and its other transactions
/// are served normally; the daemon's log names each one.
#[test]
fn broken_transactions_do_not_stop_their_module() {
    let (mut d, healthy, broken) = tree_with_broken(&BREAKAGES);
    let before: Vec<_> = broken
        .iter()
        .map(|(_, id)| ttm_tests::snapshot(&d.txn_dir("ttm", id)))
        .collect();
    d.start();

    let listed = d.ctl(&["list", "--json"]).json();
    let ids: BTreeSet<&str> = listed["txns"]
        .as_array()
        .expect("list --json has txns")
        .iter()
        .filter_map(|t| t["txn_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        healthy.iter().map(String::as_str).collect(),
        "exactly the healthy transactions are listed as served"
    );
    assert_eq!(d.ctl(&["active"]).ok(), healthy[1]);
    for id in &healthy {
        d.ctl(&["event", "still.fine", "-t", id]).ok();
        d.ctl(&["transition", "ASSEMBLE", "-t", id]).ok();
        check_log(&d.txn_dir("ttm", id));
    }
    let fresh = d.create("created after");
    check_log(&d.txn_dir("ttm", &fresh));

    let stderr = d.daemon_stderr();
    for ((how, id), before) in broken.iter().zip(&before) {
        for args in [
            vec!["state", "-t", id],
            vec!["event", "poke", "-t", id],
            vec!["transition", "SELECT", "-t", id],
            vec!["events", "-t", id],
        ] {
            let out = d.ctl(&args);
            assert!(
                out.code() != 0 && out.code() != 7,
                "{how}: `ttmctl {}` on the broken {id} answered {}: {}{}",
                args.join(" "),
                out.code(),
                out.stdout,
                out.stderr
            );
            assert!(
                out.stderr.contains(id.as_str()),
                "{how}: the refusal does not name {id}: {}",
                out.stderr
            );
        }
        assert!(
            stderr.contains(id.as_str()),
            "{how}: ttmd's log does not mention the broken transaction {id}:\n{stderr}"
        );
        ttm_tests::assert_same_tree(
            before,
            &ttm_tests::snapshot(&d.txn_dir("ttm", id)),
            &format!("{how}: a broken transaction must be left as it is"),
        );
    }
    // And again after another restart.
    d.restart();
    for id in &healthy {
        d.ctl(&["event", "after.restart", "-t", id]).ok();
        check_log(&d.txn_dir("ttm", id));
    }
}

/// `ttmctl --json list` names each transaction that cannot be loaded under
/// a top-level `quarantined` array, with the reason.
#[test]
fn quarantined_transaction_is_listed() {
    let (mut d, healthy, broken) = tree_with_broken(&["empty", "directory"]);
    d.start();
    let listed = d.ctl(&["--json", "list"]).json();
    let quarantined = listed["quarantined"]
        .as_array()
        .unwrap_or_else(|| panic!("no top-level \"quarantined\" array in {listed}"));
    for (how, id) in &broken {
        let entry = quarantined
            .iter()
            .find(|q| q["txn_id"] == id.as_str() || q["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{how}: {id} is not listed as quarantined: {listed}"));
        let reason = entry["reason"].as_str().unwrap_or("");
        assert!(
            !reason.trim().is_empty(),
            "{how}: {id} is listed without a reason: {entry}"
        );
    }
    assert_eq!(quarantined.len(), broken.len(), "{listed}");
    for id in &healthy {
        assert!(
            !quarantined.iter().any(|q| q["txn_id"] == id.as_str()),
            "healthy {id} listed as quarantined"
        );
    }
}

/// What a crash can leave behind — a half-built transaction directory in
/// `txns/`, a temporary `active` link, temporary state and evidence files —
/// is removed at start-up and never served.
#[test]
fn leftovers_of_interrupted_writes_are_removed_at_start() {
    let mut d = Daemon::start_new();
    let id = d.create("survivor");
    d.stop();
    let txns = d.root.join("ttm/txns");
    let dir = d.txn_dir("ttm", &id);
    let half = txns.join(".ttmd-tmp-4242-7-create");
    fs::create_dir_all(half.join("ctx")).unwrap();
    fs::write(half.join("ctx/000_policy.md"), "# Policy\n").unwrap();
    fs::write(half.join("events.ndjson"), "{\"ts\":\"x\",\"ev").unwrap();
    std::os::unix::fs::symlink(&id, txns.join(".ttmd-tmp-4242-8-active")).unwrap();
    fs::write(dir.join(".ttmd-tmp-4242-9-state.json"), "{\"half\":").unwrap();
    fs::write(dir.join("ctx/.ttmd-tmp-4242-10-evidence"), vec![7u8; 5000]).unwrap();
    let state = fs::read(dir.join("state.json")).unwrap();
    d.start();
    let leftovers = ttm_tests::temp_leftovers(&d.root);
    assert!(leftovers.is_empty(), "not cleaned: {leftovers:?}");
    assert_eq!(fs::read(dir.join("state.json")).unwrap(), state);
    let listed = d.ctl(&["list", "--json"]).json();
    assert_eq!(listed["txns"].as_array().map(Vec::len), Some(1), "{listed}");
    let files = d.ctl(&["ctx", "list", "--json"]).ok();
    assert!(!files.contains("ttmd-tmp"), "{files}");
    d.ctl_stdin(&["ctx", "add", "-", "after"], b"after\n").ok();
    check_log(&dir);
}

/// The documented ctx digest of a ctx/ directory: sha256 over, for each
/// file sorted by name, `name NUL length NUL sha256-hex LF`.
fn digest_of_dir(ctx: &Path) -> String {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(ctx)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    let mut text = Vec::new();
    for (name, bytes) in &files {
        text.extend_from_slice(
            format!("{name}\0{}\0{}\n", bytes.len(), sha256_hex(bytes)).as_bytes(),
        );
    }
    sha256_hex(&text)
}

/// `ctx add` stores the file (rename into ctx/, synced) and then logs
/// `evidence_added`; a crash between the two leaves a ctx file no event
/// names (the torture test hits this window now and then). After recovery
/// the evidence the daemon serves and the state's `ctx_digest` must agree
/// with each other and with the log: the file is either removed or logged,
/// never served as `$eN` while the digest ignores it.
#[test]
fn an_evidence_file_stored_but_never_logged_is_reconciled_at_start() {
    let mut d = Daemon::start_new();
    let id = d.create("orphan evidence");
    d.ctl_stdin(&["ctx", "add", "-", "logged"], b"logged\n")
        .ok();
    d.stop();
    let dir = d.txn_dir("ttm", &id);
    // Exactly what a crash between storing and logging leaves: the next
    // number, fully written, under its pending name. And a crash between
    // logging and naming: a logged file still under its pending name.
    fs::write(
        dir.join("ctx/.ttmd-pending-110_unlogged.bin"),
        b"never logged\n",
    )
    .unwrap();
    let logged_file = fs::read_dir(dir.join("ctx"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("100_"))
        .unwrap();
    fs::rename(
        dir.join("ctx").join(&logged_file),
        dir.join("ctx").join(format!(".ttmd-pending-{logged_file}")),
    )
    .unwrap();
    d.start();
    assert!(
        dir.join("ctx").join(&logged_file).is_file(),
        "a logged evidence file left pending is given its name"
    );
    assert!(!dir.join("ctx/.ttmd-pending-110_unlogged.bin").exists());
    assert!(!dir.join("ctx/110_unlogged.bin").exists());

    let events = check_log(&dir);
    let logged: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "evidence_added")
        .filter_map(|e| e["file"].as_str())
        .collect();
    let env = d.ctl(&["ctx", "env"]).ok();
    let listed = d.ctl(&["ctx", "list", "--json"]).json();
    let served: Vec<String> = listed
        .as_array()
        .or_else(|| listed["files"].as_array())
        .unwrap_or_else(|| panic!("ctx list --json: {listed}"))
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .filter(|n| !n.starts_with("000_") && !n.starts_with("010_"))
        .collect();
    for name in &served {
        assert!(
            logged.contains(name.as_str()),
            "ctx/{name} is served as evidence (ctx env: {env:?}) but no evidence_added names it"
        );
    }
    let state = read_json(&dir.join("state.json"));
    assert_eq!(
        state["ctx_digest"].as_str(),
        Some(digest_of_dir(&dir.join("ctx")).as_str()),
        "state.json's ctx_digest is not the digest of ctx/ (ctx/ has {:?})",
        fs::read_dir(dir.join("ctx"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
}
