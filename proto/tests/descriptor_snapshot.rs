//! The compatibility guard of the public API: `ttm.v1` only grows.
//!
//! Compiles the committed `ttm/v1/ttm.proto` (protox, as the build does) and
//! compares its services, messages and enums with the committed snapshot
//! `snapshot/ttm.v1.txt`, one fact per line. It fails on anything a client
//! built against the snapshot could trip over: a removed RPC, message, enum,
//! field or enum value; a field renumbered, renamed or re-typed; an RPC whose
//! types or streaming changed; a reserved number or name released. A field may
//! go only by reserving its number (`reserved 7;`).
//!
//! Additions are compatible, but the snapshot must record them, so that
//! what is added once is guarded from then on: after adding to the proto, run
//!
//! ```sh
//! UPDATE_PROTO_SNAPSHOT=1 cargo test -p ttm-proto --test descriptor_snapshot
//! ```
//!
//! and commit `proto/snapshot/ttm.v1.txt` with the change. The update refuses
//! to record an incompatible change; an API that must break is `ttm.v2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

const UPDATE_VAR: &str = "UPDATE_PROTO_SNAPSHOT";

/// Fact key (what is named) → its value (what a client relies on):
///
/// ```text
/// file ttm/v1/ttm.proto = package ttm.v1
/// ttm.v1.Ttm = service
/// ttm.v1.Ttm/Events = (.ttm.v1.EventsRequest) returns (stream .ttm.v1.EventsResponse)
/// ttm.v1.TxnRef = message
/// ttm.v1.TxnRef #  1 = string module                   a field
/// ttm.v1.Old reserved #  7                             a reserved number
/// ttm.v1.ChangeKind #  1 = CHANGE_KIND_CREATED         an enum value
/// ```
///
/// Keys sort so that each message's facts stand together.
type Facts = BTreeMap<String, String>;

fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn snapshot_path() -> PathBuf {
    proto_dir().join("snapshot").join("ttm.v1.txt")
}

/// The facts of the packages compiled from `files` under `include`.
fn compile(include: &Path, files: &[&str]) -> Facts {
    let set = protox::compile(files, [include])
        .unwrap_or_else(|e| panic!("cannot compile {files:?}: {e:?}"));
    facts(&set)
}

fn facts(set: &FileDescriptorSet) -> Facts {
    let mut out = Facts::new();
    for file in &set.file {
        let package = file.package();
        out.insert(
            format!("file {}", file.name()),
            format!("package {package}"),
        );
        for service in &file.service {
            let name = format!("{package}.{}", service.name());
            out.insert(name.clone(), "service".to_string());
            for m in &service.method {
                let stream = |yes: bool| if yes { "stream " } else { "" };
                out.insert(
                    format!("{name}/{}", m.name()),
                    format!(
                        "({}{}) returns ({}{})",
                        stream(m.client_streaming()),
                        m.input_type(),
                        stream(m.server_streaming()),
                        m.output_type()
                    ),
                );
            }
        }
        for message in &file.message_type {
            message_facts(&mut out, package, message);
        }
        for e in &file.enum_type {
            enum_facts(&mut out, package, e);
        }
    }
    out
}

fn message_facts(out: &mut Facts, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    out.insert(name.clone(), "message".to_string());
    for field in &message.field {
        let mut value = String::new();
        if field.proto3_optional() {
            value.push_str("optional ");
        } else if field.label() == Label::Repeated {
            value.push_str("repeated ");
        } else if field.label() == Label::Required {
            value.push_str("required ");
        }
        match field.r#type() {
            Type::Message | Type::Enum | Type::Group => value.push_str(field.type_name()),
            other => value.push_str(
                other
                    .as_str_name()
                    .trim_start_matches("TYPE_")
                    .to_lowercase()
                    .as_str(),
            ),
        }
        write!(value, " {}", field.name()).unwrap();
        // A real oneof (not a proto3 `optional`'s synthetic one).
        if let Some(index) = field.oneof_index
            && !field.proto3_optional()
        {
            let oneof = message.oneof_decl[index as usize].name();
            write!(value, " oneof {oneof}").unwrap();
        }
        out.insert(format!("{name} #{:>3}", field.number()), value);
    }
    for range in &message.reserved_range {
        // DescriptorProto's reserved ranges are end-exclusive.
        for n in range.start()..range.end() {
            out.insert(format!("{name} reserved #{n:>3}"), String::new());
        }
    }
    for reserved in &message.reserved_name {
        out.insert(format!("{name} reserved {reserved:?}"), String::new());
    }
    for nested in &message.nested_type {
        message_facts(out, &name, nested);
    }
    for e in &message.enum_type {
        enum_facts(out, &name, e);
    }
}

fn enum_facts(out: &mut Facts, scope: &str, e: &EnumDescriptorProto) {
    let name = format!("{scope}.{}", e.name());
    out.insert(name.clone(), "enum".to_string());
    for v in &e.value {
        out.insert(format!("{name} #{:>3}", v.number()), v.name().to_string());
    }
    for range in &e.reserved_range {
        // EnumDescriptorProto's reserved ranges are end-inclusive.
        for n in range.start()..=range.end() {
            out.insert(format!("{name} reserved #{n:>3}"), String::new());
        }
    }
    for reserved in &e.reserved_name {
        out.insert(format!("{name} reserved {reserved:?}"), String::new());
    }
}

/// What changed from `old` to `new`: the incompatible changes, and the
/// additions.
fn compare(old: &Facts, new: &Facts) -> (Vec<String>, Vec<String>) {
    let mut broken = Vec::new();
    for (key, was) in old {
        match new.get(key) {
            Some(now) if now == was => {}
            Some(now) => broken.push(format!("changed: {key}: was `{was}`, now `{now}`")),
            None => {
                // A field (or enum value) may go if its number is reserved
                // from then on.
                let reserved = key
                    .split_once(" #")
                    .is_some_and(|(name, n)| new.contains_key(&format!("{name} reserved #{n}")));
                if !reserved {
                    let detail = if was.is_empty() {
                        String::new()
                    } else {
                        format!(" `{was}`")
                    };
                    broken.push(format!("removed: {key}{detail}"));
                }
            }
        }
    }
    let added = new
        .iter()
        .filter(|(key, _)| !old.contains_key(*key))
        .map(|(key, value)| render_line(key, value))
        .collect();
    (broken, added)
}

const HEADER: &str = "\
# The ttm.v1 API as clients see it: one fact per line, checked by
# proto/tests/descriptor_snapshot.rs. Facts may be added, never removed or
# changed. After a compatible change to ttm.proto, regenerate with
#   UPDATE_PROTO_SNAPSHOT=1 cargo test -p ttm-proto --test descriptor_snapshot
# and commit this file with it.
";

fn render_line(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} = {value}")
    }
}

fn render(facts: &Facts) -> String {
    let mut text = HEADER.to_string();
    for (key, value) in facts {
        text.push_str(&render_line(key, value));
        text.push('\n');
    }
    text
}

fn parse(text: &str) -> Facts {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| match line.split_once(" = ") {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn ttm_v1_only_grows() {
    let current = compile(&proto_dir(), &["ttm/v1/ttm.proto"]);
    let path = snapshot_path();
    let update = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1");
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(e) if update && e.kind() == std::io::ErrorKind::NotFound => Facts::new(),
        Err(e) => panic!(
            "cannot read the API snapshot {}: {e}; create it with {UPDATE_VAR}=1 cargo test -p \
             ttm-proto --test descriptor_snapshot",
            path.display()
        ),
    };
    let (broken, added) = compare(&recorded, &current);
    assert!(
        broken.is_empty(),
        "ttm.proto breaks the ttm.v1 API recorded in {}:\n  {}\n\nttm.v1 only grows: add fields \
         and RPCs, reserve the numbers of removed fields, never renumber or re-type. A change that \
         must break clients belongs in a new package, ttm.v2.",
        path.display(),
        broken.join("\n  ")
    );
    if added.is_empty() {
        return;
    }
    if update {
        std::fs::create_dir_all(path.parent().expect("snapshot dir")).expect("snapshot dir");
        std::fs::write(&path, render(&current)).expect("write the snapshot");
        eprintln!(
            "recorded {} new fact(s) in {}:\n  {}",
            added.len(),
            path.display(),
            added.join("\n  ")
        );
        return;
    }
    panic!(
        "ttm.proto adds to the API (compatible), but {} does not record it yet:\n  {}\n\nRecord \
         it: {UPDATE_VAR}=1 cargo test -p ttm-proto --test descriptor_snapshot, and commit the \
         snapshot with the proto change.",
        path.display(),
        added.join("\n  ")
    );
}

#[test]
fn the_snapshot_file_is_in_canonical_form() {
    // So that the diff of an update shows only what changed.
    let path = snapshot_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return; // ttm_v1_only_grows says what to do
    };
    assert_eq!(
        text,
        render(&parse(&text)),
        "{} was edited by hand out of order; regenerate it with {UPDATE_VAR}=1",
        path.display()
    );
}

// --------------------------------------------- the guard's own rules --

/// Compiles `old` and `new` versions of one proto file and compares them.
fn change(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let dir = std::env::temp_dir().join(format!(
        "ttm-proto-guard-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let facts_of = |source: &str| {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.proto"), source).unwrap();
        compile(&dir, &["t.proto"])
    };
    let result = compare(&facts_of(old), &facts_of(new));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

const BASE: &str = r#"
syntax = "proto3";
package t.v1;
service S {
  rpc Get(Req) returns (Resp);
  rpc Follow(Req) returns (stream Resp);
}
message Req { string id = 1; optional uint64 seq = 2; repeated string tags = 3; }
message Resp { oneof kind { string text = 1; Req echo = 2; } Color color = 3; }
enum Color { COLOR_UNSPECIFIED = 0; COLOR_RED = 1; }
"#;

#[track_caller]
fn assert_broken(new: &str, needle: &str) {
    let (broken, _) = change(BASE, new);
    assert!(
        broken.iter().any(|b| b.contains(needle)),
        "expected a breakage mentioning {needle:?}, got {broken:?}"
    );
}

#[test]
fn the_same_proto_is_compatible_with_itself() {
    assert_eq!(change(BASE, BASE), (vec![], vec![]));
}

#[test]
fn additions_are_compatible() {
    let new = BASE
        .replace(
            "rpc Get(Req) returns (Resp);",
            "rpc Get(Req) returns (Resp);\n  rpc Put(Req) returns (Resp);",
        )
        .replace(
            "repeated string tags = 3;",
            "repeated string tags = 3; bool all = 4;",
        )
        .replace("COLOR_RED = 1;", "COLOR_RED = 1; COLOR_BLUE = 2;")
        + "message Extra { string x = 1; }\n";
    let (broken, added) = change(BASE, &new);
    assert_eq!(broken, Vec::<String>::new());
    let added = added.join("\n");
    for fact in [
        "t.v1.S/Put = (.t.v1.Req) returns (.t.v1.Resp)",
        "t.v1.Req #  4 = bool all",
        "t.v1.Color #  2 = COLOR_BLUE",
        "t.v1.Extra = message",
    ] {
        assert!(
            added.contains(fact),
            "{fact} not among the additions:\n{added}"
        );
    }
}

#[test]
fn removing_an_rpc_breaks() {
    assert_broken(
        &BASE.replace("rpc Get(Req) returns (Resp);", ""),
        "removed: t.v1.S/Get",
    );
}

#[test]
fn changing_an_rpc_breaks() {
    assert_broken(
        &BASE.replace("returns (stream Resp)", "returns (Resp)"),
        "changed: t.v1.S/Follow",
    );
    assert_broken(
        &BASE.replace("rpc Get(Req)", "rpc Get(stream Req)"),
        "changed: t.v1.S/Get",
    );
}

#[test]
fn removing_a_field_breaks_unless_its_number_is_reserved() {
    assert_broken(
        &BASE.replace("repeated string tags = 3;", ""),
        "removed: t.v1.Req #  3",
    );
    let reserved = BASE.replace("repeated string tags = 3;", "reserved 3;");
    assert_eq!(change(BASE, &reserved).0, Vec::<String>::new());
}

#[test]
fn renumbering_renaming_or_retyping_a_field_breaks() {
    assert_broken(
        &BASE.replace("string id = 1;", "string id = 5;"),
        "removed: t.v1.Req #  1",
    );
    assert_broken(
        &BASE.replace("string id = 1;", "string key = 1;"),
        "changed: t.v1.Req #  1",
    );
    assert_broken(
        &BASE.replace("string id = 1;", "bytes id = 1;"),
        "changed: t.v1.Req #  1",
    );
    assert_broken(
        &BASE.replace("repeated string tags = 3;", "string tags = 3;"),
        "changed: t.v1.Req #  3",
    );
    assert_broken(
        &BASE.replace("optional uint64 seq = 2;", "uint64 seq = 2;"),
        "changed: t.v1.Req #  2",
    );
    assert_broken(
        &BASE.replace("Color color = 3;", "string color = 3;"),
        "changed: t.v1.Resp #  3",
    );
}

#[test]
fn moving_a_field_out_of_its_oneof_breaks() {
    assert_broken(
        &BASE.replace(
            "oneof kind { string text = 1; Req echo = 2; }",
            "oneof kind { Req echo = 2; } string text = 1;",
        ),
        "changed: t.v1.Resp #  1",
    );
}

#[test]
fn removing_or_renumbering_enum_values_and_messages_breaks() {
    assert_broken(
        &BASE.replace("COLOR_RED = 1;", ""),
        "removed: t.v1.Color #  1",
    );
    assert_broken(
        &BASE.replace("COLOR_RED = 1;", "COLOR_RED = 2;"),
        "removed: t.v1.Color #  1",
    );
    let without_resp = BASE
        .replace("returns (Resp)", "returns (Req)")
        .replace("returns (stream Resp)", "returns (stream Req)")
        .replace(
            "message Resp { oneof kind { string text = 1; Req echo = 2; } Color color = 3; }",
            "",
        );
    assert_broken(&without_resp, "removed: t.v1.Resp `message`");
}

#[test]
fn releasing_a_reserved_number_breaks() {
    let reserved = BASE.replace("repeated string tags = 3;", "reserved 3;");
    let reused = BASE.replace("repeated string tags = 3;", "bool tags = 3;");
    let (broken, _) = change(&reserved, &reused);
    assert!(
        broken
            .iter()
            .any(|b| b.contains("removed: t.v1.Req reserved #  3")),
        "{broken:?}"
    );
}
