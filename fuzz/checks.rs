//! What each fuzz target does with its input. One definition, used twice:
//! by the cargo-fuzz targets in `fuzz/fuzz_targets/` and by
//! `ttmd/tests/props.rs`, which replays every file of `fuzz/corpus/<target>/`
//! through the same function in the normal `cargo test` run.
//!
//! Each function must not panic on any input; the assertions inside are the
//! properties the fuzzer checks besides "no panic".

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use ttmd::core::state::{self, State};
use ttmd::core::{ctx, event, fsm, id, topology};
use ttmd::store::log::parse_lines;

/// What a fuzz target does with one input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, as in `fuzz/Cargo.toml` and `fuzz/corpus/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("log_fold", log_fold),
    ("state_json", state_json),
    ("fsm_json", fsm_json),
    ("names", names),
    ("ctx_names", ctx_names),
];

/// `events.ndjson` bytes → numbered lines → the fold, as the daemon loads a
/// transaction; a folded state survives state.json's write and read.
pub fn log_fold(data: &[u8]) {
    let (lines, used) = parse_lines(data, 1);
    assert!(used <= data.len());
    assert!(used == 0 || data[used - 1] == b'\n', "used ends a line");
    assert!(
        !data[used..].contains(&b'\n'),
        "a complete line was left out"
    );
    assert_eq!(
        lines.len(),
        data[..used].iter().filter(|&&b| b == b'\n').count()
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line.seq, i as u64 + 1, "seq is the line number");
    }
    // As the daemon folds: a malformed line is an empty object.
    let empty = Map::new();
    let folded = state::fold(
        lines
            .iter()
            .map(|l| (l.seq, l.object.as_ref().unwrap_or(&empty))),
        "ttm",
    );
    if let Ok(s) = folded {
        assert_eq!(s.seq, lines.len() as u64, "the state is at the last line");
        state_round_trips(&s);
    }
}

/// state.json bytes → `State` (both ways the daemon reads it); what loads
/// is written back identically.
pub fn state_json(data: &[u8]) {
    if let Ok(s) = serde_json::from_slice::<State>(data) {
        state_round_trips(&s);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data)
        && let Ok(s) = serde_json::from_value::<State>(v)
    {
        state_round_trips(&s);
    }
}

fn state_round_trips(s: &State) {
    let text = s.to_pretty_json();
    assert!(text.ends_with("}\n"));
    let back: State = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => panic!("state.json written for {s:?} does not load: {e}\n{text}"),
    };
    assert_eq!(&back, s, "state.json does not round-trip:\n{text}");
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("state.json is not JSON: {e}"),
    };
    match serde_json::from_value::<State>(value) {
        Ok(b) => assert_eq!(&b, s, "state.json does not round-trip via Value"),
        Err(e) => panic!("state.json does not load via Value: {e}\n{text}"),
    }
}

/// fsm.json bytes → `Fsm`; a loaded FSM keeps DONE and FAIL final, agrees
/// with itself about next stages, and retries into a live stage.
pub fn fsm_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = fsm::Fsm::from_json(text) else {
        return;
    };
    let initial = f.initial().to_string();
    assert!(!fsm::is_terminal(&initial) && fsm::validate_stage_name(&initial).is_ok());
    assert_eq!(f.retry_target(fsm::FAIL, None).ok(), Some(initial.clone()));
    // Every stage named in the file, the terminal ones, and a stranger.
    let mut names: Vec<String> = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("stages").cloned())
        .and_then(|s| serde_json::from_value::<Vec<String>>(s).ok())
        .unwrap_or_default();
    names.truncate(64);
    names.extend([fsm::DONE, fsm::FAIL, "ZZ_UNKNOWN"].map(String::from));
    for from in &names {
        let next = f.next_stages(from);
        for to in &names {
            let step = f.transition(from, to);
            if fsm::is_terminal(from) {
                assert!(step.is_err(), "{from} -> {to} left a final stage");
                continue;
            }
            if step.is_ok() {
                // A move to the same stage only along a listed self-loop.
                assert!(f.knows(to), "{from} -> {to}");
                assert!(next.contains(to), "{from} -> {to} allowed but not listed");
            }
        }
        if f.knows(from) && !fsm::is_terminal(from) {
            assert!(f.transition(from, fsm::FAIL).is_ok(), "{from} -> FAIL");
            for to in &next {
                assert!(f.transition(from, to).is_ok(), "{from} -> {to} listed");
            }
        }
        if let Ok(to) = f.retry_target(fsm::FAIL, Some(from)) {
            assert!(!fsm::is_terminal(&to) && f.knows(&to));
        }
    }
}

/// Arbitrary text through every name validator: whatever passes is safe
/// to use as one path component, and generated names always pass.
pub fn names(data: &[u8]) {
    let (n, rest) = match data.split_first() {
        Some((&n, rest)) => (n, rest),
        None => (0, data),
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '|');
    let a = parts.next().unwrap_or_default();
    let b = parts.next().unwrap_or_default();
    let c = parts.next().unwrap_or_default();

    let safe_component = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains('/')
            && !s.contains('\0')
            && s.len() <= 255
    };
    for s in [a, b, c, text.as_ref()] {
        if id::validate_txn_id(s).is_ok() {
            assert!(safe_component(s) && !s.starts_with('-') && !s.contains('\n'));
        }
        if id::validate_module(s).is_ok() {
            assert!(
                safe_component(s) && s.len() <= id::MODULE_MAX,
                "module {s:?}"
            );
        }
        if fsm::validate_stage_name(s).is_ok() {
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        if event::validate_user_type(s).is_ok() {
            assert!(safe_component(s) && !event::BUILTIN_TYPES.contains(&s));
        }
        if ctx::validate_source_name(s).is_ok() && !s.is_empty() {
            assert!(safe_component(s), "source name {s:?}");
        }
        if topology::validate_target(s).is_ok() {
            assert!(!s.contains('/') && !s.contains('\0') && !s.contains(' '));
        }
        let q = id::quote(s);
        assert!(!q.contains('\n') && q.len() <= 6 * 80 + 3 + '…'.len_utf8());
        let sl = id::slug(s, id::SLUG_MAX);
        assert!(sl.len() <= id::SLUG_MAX, "slug {sl:?}");
        assert!(!sl.starts_with('-') && !sl.ends_with('-') && !sl.contains("--"));
        assert!(
            sl.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
    // Generated ids are valid ids, whatever the description.
    let secs = i64::from(u32::from_le_bytes([n, n ^ 0x5a, n.rotate_left(3), 0x3f]));
    let now: DateTime<Utc> = DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let id = id::txn_id(a, now, u32::from(n));
    assert!(id::validate_txn_id(&id).is_ok(), "generated id {id:?}");
    // Stored evidence names are safe file names that the daemon reads back
    // as ctx names with the number given.
    let number = ctx::FIRST_EVIDENCE + 10 * u64::from(n);
    if let Ok(name) = ctx::evidence_name(number, b, c) {
        assert!(safe_component(&name) && !name.starts_with('.'), "{name:?}");
        assert!(ctx::is_ctx_name(&name), "{name:?}");
        assert_eq!(ctx::number_of(&name), Some(number), "{name:?}");
    }
}

/// ctx/ file names as found on disk (planted by anyone) → the numbering of
/// the next evidence file and the `$eN` order.
pub fn ctx_names(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let names: Vec<String> = text.split('\n').take(256).map(String::from).collect();
    let usable: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| ctx::is_ctx_name(n))
        .collect();
    // None: a planted number leaves none above it (refused by the daemon).
    let Some(next) = ctx::next_number(usable.iter().copied()) else {
        return;
    };
    assert!(next >= ctx::FIRST_EVIDENCE && next % 10 == 0, "next {next}");
    for n in &usable {
        // (How a number near u64::MAX is handled is the daemon's choice;
        // that it does not panic is checked above.)
        if let Some(k) = ctx::number_of(n).filter(|&k| k < u64::MAX / 2) {
            assert!(next > k, "next number {next} is not above {n:?}");
        }
    }
    let order = ctx::evidence_order(usable.iter().map(|s| s.to_string()).collect());
    assert_eq!(order.len(), usable.len());
    let mut expect = 0;
    for (name, index) in &order {
        if ctx::number_of(name).is_some_and(|k| k >= ctx::FIRST_EVIDENCE) {
            expect += 1;
            assert_eq!(*index, expect, "{name}");
        } else {
            assert_eq!(*index, 0, "{name}");
        }
    }
    let entries: Vec<ctx::Entry> = usable
        .iter()
        .map(|n| ctx::Entry {
            name: n.to_string(),
            bytes: n.len() as u64,
            sha256: ctx::sha256_hex(n.as_bytes()),
        })
        .collect();
    let mut reversed = entries.clone();
    reversed.reverse();
    assert_eq!(ctx::digest(&entries), ctx::digest(&reversed));
}
