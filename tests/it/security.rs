//! Issue #7, SECURITY.md: who may call, the socket's modes, hostile input
//! on every RPC, planted symlinks, limits, and clients that open streams
//! and never read them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use ttm_proto::v1::add_context_request::Part;
use ttm_proto::v1::ttm_client::TtmClient;
use ttm_proto::v1::*;
use ttm_tests::{
    CTL_TIMEOUT, Daemon, Need, Out, Spawned, assert_same_tree, clean_command, grpc, read_events,
    run, signal, snapshot, ttmctl_bin, ttmd_bin, txn_ref, wait_until,
};

const T: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------------- another uid --

/// Whether a client can be run as `nobody` here: as root, with setpriv
/// (util-linux). CI runs as root; elsewhere the test skips, saying why.
fn can_drop_privileges() -> bool {
    Need::root("running a client as uid 65534 with setpriv").met()
        && Need::tool("setpriv", "util-linux").met()
}

/// Makes the socket, its directory and the tree reachable by anyone (what
/// a careless admin might do) and returns a copy of ttmctl that `nobody`
/// may execute.
fn open_to_everyone(d: &Daemon) -> PathBuf {
    let chmod = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    // Sticky like /tmp: ttmd refuses to (re)start in a directory others
    // may write to otherwise.
    chmod(d.tmp(), 0o1777).unwrap();
    chmod(&d.socket, 0o666).unwrap();
    fn readable(p: &Path) {
        let meta = fs::symlink_metadata(p).unwrap();
        if meta.file_type().is_symlink() {
            return;
        }
        let mode = meta.permissions().mode() | if meta.is_dir() { 0o555 } else { 0o444 };
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        if meta.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                readable(&e.unwrap().path());
            }
        }
    }
    readable(&d.root);
    let ctl = d.tmp().join("ttmctl-copy");
    if !ctl.exists() {
        fs::copy(ttmctl_bin(), &ctl).unwrap();
        chmod(&ctl, 0o755).unwrap();
    }
    ctl
}

/// `ttmctl args…` run as uid/gid 65534 (`nobody`) against `d`.
fn ctl_as_nobody(d: &Daemon, ctl: &Path, args: &[&str]) -> Out {
    let mut cmd = clean_command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(ctl)
        .args(args)
        .env("TETRA_DIR", &d.root)
        .env("TTM_SOCKET", &d.socket)
        .env("TTM_NO_AUTOSTART", "1")
        .env("HOME", "/nonexistent");
    run(cmd, None, CTL_TIMEOUT)
}

#[test]
fn a_client_of_another_uid_is_refused_even_on_a_world_writable_socket() {
    if !can_drop_privileges() {
        return;
    }
    // A config file that allows nobody but the owner (yet).
    let mut d = Daemon::with_tree(|root| {
        fs::write(root.join("ttmd.toml"), "[access]\nuids = []\n").unwrap();
    });
    let id = d.create("owned by root");
    let ctl = open_to_everyone(&d);
    let before = d.snapshot();
    for args in [
        &["list"][..],
        &["state", "-t", &id],
        &["create", "from nobody"],
        &["transition", "EXECUTE", "-t", &id],
        &["event", "progress", "{}", "-t", &id],
        &["daemon", "stop"],
    ] {
        let out = ctl_as_nobody(&d, &ctl, args);
        out.expect_code(6).stderr_has(&["uid 65534"]);
    }
    assert_same_tree(&before, &d.snapshot(), "requests of a refused peer");
    let log = d.daemon_stderr();
    let line = log
        .lines()
        .find(|l| l.contains("65534"))
        .unwrap_or_else(|| panic!("no log line names the refused uid:\n{log}"));
    assert!(line.contains("pid"), "the log line has no pid: {line}");
    // Still serving its owner.
    d.ctl(&["state", "-t", &id]).ok();

    // Allowed in the config file: after a reload, then after a restart.
    fs::write(d.root.join("ttmd.toml"), "[access]\nuids = [65534]\n").unwrap();
    d.ctl(&["daemon", "reload"]).ok();
    ctl_as_nobody(&d, &ctl, &["state", "-t", &id]).ok();
    d.restart();
    let ctl = open_to_everyone(&d);
    ctl_as_nobody(&d, &ctl, &["state", "-t", &id]).ok();
    d.stop();

    // Allowed by the flag: the same calls succeed, and the events it
    // writes record the caller.
    let d = Daemon::start_with_args(&["--allow-uids", "65534"]);
    let ctl = open_to_everyone(&d);
    let id = ctl_as_nobody(&d, &ctl, &["create", "from nobody"]).ok();
    ctl_as_nobody(&d, &ctl, &["event", "progress", "{}", "-t", &id]).ok();
    ctl_as_nobody(&d, &ctl, &["list"]).ok();
    let events = read_events(&d.txn_dir("ttm", &id));
    for e in &events {
        assert_eq!(e["client"]["uid"], 65534, "client metadata: {e}");
        assert!(e["client"]["pid"].as_u64().is_some(), "client pid: {e}");
    }
}

// ------------------------------------------------------------ modes --

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn socket_and_directory_modes_right_after_start() {
    let mut d = Daemon::stopped();
    d.socket = d.tmp().join("made/by-ttmd/s.sock");
    d.start();
    let meta = fs::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket(), "not a socket");
    assert_eq!(mode(&d.socket), 0o600, "socket mode");
    assert_eq!(mode(&d.tmp().join("made/by-ttmd")), 0o700, "socket dir");
    assert_eq!(mode(&d.tmp().join("made")), 0o700, "socket dir's parent");
    // Default place: <root>/run/, made by the daemon too.
    let mut d2 = Daemon::stopped();
    d2.socket = d2.root.join("run/ttmd.sock");
    d2.start();
    assert_eq!(mode(&d2.socket), 0o600);
    assert_eq!(mode(&d2.root.join("run")), 0o700);
}

/// Under umask 000 a socket bound first and chmod-ed after is 0777 for a
/// moment; a watcher that stats it as fast as it can must never see it
/// wider than 0600.
#[test]
fn the_socket_is_never_wider_than_0600_even_for_a_moment() {
    for round in 0..5 {
        let d = Daemon::stopped();
        let socket = d.tmp().join(format!("sub{round}/s.sock"));
        let watched = socket.clone();
        let watcher = std::thread::spawn(move || {
            // Watches until the socket is there and answers: a wait for a
            // state (the daemon listening), with a generous fixed bound.
            let deadline = Instant::now() + T;
            let mut seen = Vec::new();
            while Instant::now() < deadline {
                if let Ok(m) = fs::symlink_metadata(&watched) {
                    let mode = m.permissions().mode() & 0o777;
                    if seen.last() != Some(&mode) {
                        seen.push(mode);
                    }
                    if seen.len() > 1 || accepts_quietly(&watched) {
                        break;
                    }
                }
            }
            seen
        });
        let mut cmd = clean_command("sh");
        cmd.args(["-c", "umask 000; exec \"$0\" \"$@\""])
            .arg(ttmd_bin())
            .arg("--root")
            .arg(&d.root)
            .arg("--socket")
            .arg(&socket);
        let daemon = Spawned::spawn(cmd);
        let seen = watcher.join().unwrap();
        // Serving (signal handlers installed) before it is stopped.
        let answers = || {
            let mut ctl = clean_command(ttmctl_bin());
            ctl.arg("list")
                .env("TETRA_DIR", &d.root)
                .env("TTM_SOCKET", &socket)
                .env("TTM_NO_AUTOSTART", "1");
            run(ctl, None, CTL_TIMEOUT).code() != 7
        };
        assert!(
            wait_until(T, answers),
            "ttmd does not answer: {}",
            daemon.stderr_so_far()
        );
        let octal: Vec<String> = seen.iter().map(|m| format!("{m:o}")).collect();
        assert_eq!(seen.first(), Some(&0o600), "modes seen: {octal:?}");
        assert!(seen.iter().all(|&m| m == 0o600), "modes seen: {octal:?}");
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
        signal(daemon.pid(), "TERM");
        daemon.wait(T).ok();
    }
}

fn accepts_quietly(p: &Path) -> bool {
    UnixStream::connect(p).is_ok()
}

// --------------------------------------------------- hostile input --

/// A request of any RPC, as the table below sends it.
#[derive(Debug, Clone)]
enum Call {
    Hello(HelloRequest),
    Create(CreateRequest),
    GetActive(GetActiveRequest),
    Activate(ActivateRequest),
    GetState(GetStateRequest),
    List(ListRequest),
    Transition(TransitionRequest),
    Commit(CommitRequest),
    Fail(FailRequest),
    Retry(RetryRequest),
    Update(UpdateRequest),
    AppendEvent(AppendEventRequest),
    AddContext(Vec<AddContextRequest>),
    ListContext(ListContextRequest),
    Resolve(ResolveRequest),
    GetConnector(GetConnectorRequest),
    Events(EventsRequest),
    Watch(WatchRequest),
    Archive(ArchiveRequest),
    Gc(GcRequest),
    Migrate(MigrateRequest),
    /// Raw bytes as the protobuf body of `/ttm.v1.Ttm/<method>`.
    Raw(&'static str, Vec<u8>),
}

/// One row: what is sent, which metadata rides along, which code comes back.
#[derive(Debug)]
struct Row {
    what: String,
    call: Call,
    meta: Option<(&'static str, Vec<u8>)>,
    code: Code,
}

fn row(what: impl Into<String>, code: Code, call: Call) -> Row {
    Row {
        what: what.into(),
        call,
        meta: None,
        code,
    }
}

fn pre(stage: Option<&str>, seq: Option<u64>, request_id: &str) -> Option<Preconditions> {
    Some(Preconditions {
        expect_stage: stage.map(String::from),
        expect_seq: seq,
        request_id: request_id.into(),
        ..Default::default()
    })
}

fn header(txn: Option<TxnRef>, file_name: &str, description: &str) -> AddContextRequest {
    AddContextRequest {
        part: Some(Part::Header(AddContextHeader {
            txn,
            file_name: file_name.into(),
            description: description.into(),
            pre: None,
        })),
    }
}

fn chunk(bytes: &[u8]) -> AddContextRequest {
    AddContextRequest {
        part: Some(Part::Chunk(bytes.to_vec())),
    }
}

/// Protobuf bytes of `GetStateRequest { txn: { txn_id: <raw> } }`, which
/// the generated types cannot send when `raw` is not UTF-8.
fn raw_get_state(raw: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x12, raw.len() as u8];
    inner.extend_from_slice(raw);
    let mut outer = vec![0x0a, inner.len() as u8];
    outer.extend(inner);
    outer
}

/// The hostile table. Expected codes follow ttm.proto and SPEC §10:
/// malformed names and JSON are INVALID_ARGUMENT, sizes over a limit are
/// RESOURCE_EXHAUSTED, guards that do not match are ABORTED, moves the FSM
/// forbids are FAILED_PRECONDITION, well-formed names that do not exist
/// are NOT_FOUND. A few hostile-looking requests are legal and answer OK
/// (a follower from seq u64::MAX simply waits). proto3 strings are UTF-8
/// on the wire, so invalid UTF-8 can only be sent as raw protobuf bytes:
/// the gRPC layer refuses it while decoding, before ttmd sees a request.
fn hostile_rows(id: &str) -> Vec<Row> {
    use Call::*;
    use Code::{Aborted, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted};
    let mib = "a".repeat(MIB);
    let over = "a".repeat(MIB + 1);
    let t = |m: &str, i: &str| txn_ref(m, i);
    let me = || t("ttm", id);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let create = |module: &str, description: &str, target: &str, agent: &str, rid: &str| {
        Create(CreateRequest {
            module: module.into(),
            description: description.into(),
            target: target.into(),
            agent: agent.into(),
            no_activate: false,
            request_id: rid.into(),
            ..Default::default()
        })
    };
    let transition = |txn, stage: &str, pre| {
        Transition(TransitionRequest {
            txn,
            stage: stage.into(),
            pre,
        })
    };
    let update = |patch: &str| {
        Update(UpdateRequest {
            txn: me(),
            patch_json: patch.into(),
            pre: None,
        })
    };
    let append = |event: &str, data: &str| {
        AppendEvent(AppendEventRequest {
            txn: me(),
            event: event.into(),
            data_json: data.into(),
            pre: None,
        })
    };
    let events = |txn, from_seq, event: &str, follow| {
        Events(EventsRequest {
            txn,
            from_seq,
            event: event.into(),
            follow,
        })
    };
    let get_state = |txn| GetState(GetStateRequest { txn });
    let connector = |target: &str| {
        GetConnector(GetConnectorRequest {
            target: target.into(),
        })
    };
    let mut rows = vec![
        // Create: every string field.
        row(
            "create module ../x",
            InvalidArgument,
            create("../x", "d", "", "", ""),
        ),
        row(
            "create module /etc",
            InvalidArgument,
            create("/etc", "d", "", "", ""),
        ),
        row(
            "create module with NUL",
            InvalidArgument,
            create("ttm\0", "d", "", "", ""),
        ),
        row(
            "create module 1 MiB",
            InvalidArgument,
            create(&mib, "d", "", "", ""),
        ),
        row(
            "create description 1 MiB",
            ResourceExhausted,
            create("", &mib, "", "", ""),
        ),
        row(
            "create target ../../etc/passwd",
            InvalidArgument,
            create("", "d", "../../etc/passwd", "", ""),
        ),
        row(
            "create target /etc/passwd",
            InvalidArgument,
            create("", "d", "/etc/passwd", "", ""),
        ),
        row(
            "create target with newline",
            InvalidArgument,
            create("", "d", "@local\n@prod", "", ""),
        ),
        row(
            "create target 1 MiB",
            InvalidArgument,
            create("", "d", &mib, "", ""),
        ),
        row(
            "create agent with NUL",
            InvalidArgument,
            create("", "d", "", "a\0b", ""),
        ),
        row(
            "create agent forging a line",
            InvalidArgument,
            create("", "d", "", "x\n{\"event\":\"txn_commit\"}", ""),
        ),
        row(
            "create agent 1 MiB",
            InvalidArgument,
            create("", "d", "", &mib, ""),
        ),
        row(
            "create request_id with newline",
            InvalidArgument,
            create("", "d", "", "", "r\n1"),
        ),
        row(
            "create request_id 1 MiB",
            InvalidArgument,
            create("", "d", "", "", &mib),
        ),
        // Names of transactions and modules in every RPC that takes one.
        row(
            "get_active module ../ttm",
            InvalidArgument,
            GetActive(GetActiveRequest {
                module: "../ttm".into(),
            }),
        ),
        row(
            "activate ../x",
            InvalidArgument,
            Activate(ActivateRequest {
                txn: t("ttm", "../x"),
                pre: None,
            }),
        ),
        row(
            "activate `active`",
            InvalidArgument,
            Activate(ActivateRequest {
                txn: t("ttm", "active"),
                pre: None,
            }),
        ),
        row(
            "activate /etc/passwd",
            InvalidArgument,
            Activate(ActivateRequest {
                txn: t("ttm", "/etc/passwd"),
                pre: None,
            }),
        ),
        row("get_state ..", InvalidArgument, get_state(t("ttm", ".."))),
        row(
            "get_state a/../../b",
            InvalidArgument,
            get_state(t("ttm", "a/../../b")),
        ),
        row(
            "get_state id with NUL",
            InvalidArgument,
            get_state(t("ttm", &format!("{id}\0"))),
        ),
        row(
            "get_state id 1 MiB",
            InvalidArgument,
            get_state(t("ttm", &mib)),
        ),
        row(
            "get_state module ../../etc",
            InvalidArgument,
            get_state(t("../../etc", id)),
        ),
        row(
            "get_state unknown id",
            NotFound,
            get_state(t("ttm", "nope-20250101T000000")),
        ),
        row(
            "get_state unknown module",
            NotFound,
            get_state(t("nomod", id)),
        ),
        row(
            "list module /",
            InvalidArgument,
            List(ListRequest {
                module: "/".into(),
                stage: String::new(),
                ..Default::default()
            }),
        ),
        row(
            "list stage ../X",
            InvalidArgument,
            List(ListRequest {
                module: String::new(),
                stage: "../X".into(),
                ..Default::default()
            }),
        ),
        row(
            "list stage 1 MiB",
            InvalidArgument,
            List(ListRequest {
                module: String::new(),
                stage: mib.clone(),
                ..Default::default()
            }),
        ),
        // Stages and guards.
        row(
            "transition ../DONE",
            InvalidArgument,
            transition(me(), "../DONE", None),
        ),
        row(
            "transition DONE\\n",
            InvalidArgument,
            transition(me(), "DONE\n", None),
        ),
        row(
            "transition /etc/passwd",
            InvalidArgument,
            transition(me(), "/etc/passwd", None),
        ),
        row(
            "transition stage 1 MiB",
            InvalidArgument,
            transition(me(), &mib, None),
        ),
        row(
            "transition backward",
            FailedPrecondition,
            transition(me(), "NEW", None),
        ),
        row(
            "transition unknown stage",
            FailedPrecondition,
            transition(me(), "FOLD", None),
        ),
        row(
            "transition on ../x",
            InvalidArgument,
            transition(t("ttm", "../x"), "EXECUTE", None),
        ),
        row(
            "expect_stage junk",
            InvalidArgument,
            transition(me(), "EXECUTE", pre(Some("../X\0"), None, "")),
        ),
        row(
            "expect_stage other",
            Aborted,
            transition(me(), "EXECUTE", pre(Some("NEW"), None, "")),
        ),
        row(
            "expect_seq u64::MAX",
            Aborted,
            transition(me(), "EXECUTE", pre(None, Some(u64::MAX), "")),
        ),
        row(
            "expect_seq 0",
            Aborted,
            transition(me(), "EXECUTE", pre(None, Some(0), "")),
        ),
        row(
            "request_id with NUL",
            InvalidArgument,
            transition(me(), "EXECUTE", pre(None, None, "r\0")),
        ),
        row(
            "request_id 1 MiB",
            InvalidArgument,
            transition(me(), "EXECUTE", pre(None, None, &mib)),
        ),
        row(
            "commit /etc/passwd",
            InvalidArgument,
            Commit(CommitRequest {
                txn: t("ttm", "/etc/passwd"),
                pre: None,
            }),
        ),
        row(
            "commit module ../../",
            InvalidArgument,
            Commit(CommitRequest {
                txn: t("../../", id),
                pre: None,
            }),
        ),
        row(
            "fail error over the payload limit",
            ResourceExhausted,
            Fail(FailRequest {
                txn: me(),
                error: over.clone(),
                pre: None,
            }),
        ),
        row(
            "fail ../x",
            InvalidArgument,
            Fail(FailRequest {
                txn: t("ttm", "../x"),
                error: "e".into(),
                pre: None,
            }),
        ),
        row(
            "retry a live txn",
            FailedPrecondition,
            Retry(RetryRequest {
                txn: me(),
                to: String::new(),
                pre: None,
            }),
        ),
        row(
            "retry to ../NEW",
            FailedPrecondition,
            Retry(RetryRequest {
                txn: me(),
                to: "../NEW".into(),
                pre: None,
            }),
        ),
        // Update: reserved fields, non-objects, huge and deep JSON.
        row(
            "update stage",
            InvalidArgument,
            update(r#"{"stage":"DONE"}"#),
        ),
        row("update seq", InvalidArgument, update(r#"{"seq":1}"#)),
        row(
            "update txn_id ../x",
            InvalidArgument,
            update(r#"{"txn_id":"../x"}"#),
        ),
        row(
            "update ctx_digest",
            InvalidArgument,
            update(r#"{"ctx_digest":"0"}"#),
        ),
        row(
            "update module /etc",
            InvalidArgument,
            update(r#"{"module":"/etc"}"#),
        ),
        row("update a non-object", InvalidArgument, update("[1]")),
        row("update broken JSON", InvalidArgument, update("{\"a\":")),
        row(
            "update target /etc/passwd",
            InvalidArgument,
            update(r#"{"target":"/etc/passwd"}"#),
        ),
        row(
            "update description as a number",
            InvalidArgument,
            update(r#"{"description":5}"#),
        ),
        row("update nested 100000 deep", InvalidArgument, update(&deep)),
        row(
            "update over the payload limit",
            ResourceExhausted,
            update(&format!("{{\"a\":\"{over}\"}}")),
        ),
        // User events.
        row("event type ../x", InvalidArgument, append("../x", "{}")),
        row("event type a/b", InvalidArgument, append("a/b", "{}")),
        row(
            "event type txn_commit",
            InvalidArgument,
            append("txn_commit", "{}"),
        ),
        row("event type empty", InvalidArgument, append("", "{}")),
        row("event type 1 MiB", InvalidArgument, append(&mib, "{}")),
        row(
            "event data a non-object",
            InvalidArgument,
            append("progress", "[1]"),
        ),
        row(
            "event data over the payload limit",
            ResourceExhausted,
            append("progress", &format!("{{\"a\":\"{over}\"}}")),
        ),
        // Evidence: file names are names, never paths.
        row(
            "ctx file_name ../../etc/passwd",
            InvalidArgument,
            AddContext(vec![header(me(), "../../etc/passwd", ""), chunk(b"x")]),
        ),
        row(
            "ctx file_name /etc/passwd",
            InvalidArgument,
            AddContext(vec![header(me(), "/etc/passwd", ""), chunk(b"x")]),
        ),
        row(
            "ctx file_name ..",
            InvalidArgument,
            AddContext(vec![header(me(), "..", ""), chunk(b"x")]),
        ),
        row(
            "ctx file_name with NUL",
            InvalidArgument,
            AddContext(vec![header(me(), "a\0b.txt", ""), chunk(b"x")]),
        ),
        row(
            "ctx file_name 1 MiB",
            InvalidArgument,
            AddContext(vec![header(me(), &mib, ""), chunk(b"x")]),
        ),
        row(
            "ctx file_name odd extension",
            InvalidArgument,
            AddContext(vec![header(me(), "x.tar..gz", ""), chunk(b"x")]),
        ),
        row(
            "ctx description over the payload limit",
            ResourceExhausted,
            AddContext(vec![header(me(), "x.txt", &over)]),
        ),
        row(
            "ctx on ../x",
            InvalidArgument,
            AddContext(vec![header(t("ttm", "../x"), "x.txt", ""), chunk(b"x")]),
        ),
        row(
            "ctx chunk before header",
            InvalidArgument,
            AddContext(vec![chunk(b"x"), header(me(), "x.txt", "")]),
        ),
        row(
            "ctx second header",
            InvalidArgument,
            AddContext(vec![
                header(me(), "x.txt", ""),
                chunk(b"x"),
                header(me(), "y.txt", ""),
            ]),
        ),
        row(
            "ctx list module ../x",
            InvalidArgument,
            ListContext(ListContextRequest {
                txn: t("../x", id),
                ..Default::default()
            }),
        ),
        // Targets.
        row(
            "resolve /etc/passwd",
            InvalidArgument,
            Resolve(ResolveRequest {
                txn: t("ttm", "/etc/passwd"),
                pre: None,
            }),
        ),
        row(
            "connector ../../etc/passwd",
            InvalidArgument,
            connector("../../etc/passwd"),
        ),
        row(
            "connector /etc/passwd",
            InvalidArgument,
            connector("/etc/passwd"),
        ),
        row("connector with NUL", InvalidArgument, connector("@local\0")),
        row("connector unknown @name", NotFound, connector("@nope")),
        // Streams.
        row(
            "events on ../x",
            InvalidArgument,
            events(t("ttm", "../x"), 0, "", false),
        ),
        row(
            "events filter ../x",
            InvalidArgument,
            events(me(), 0, "../x", false),
        ),
        row(
            "events from u64::MAX",
            Code::Ok,
            events(me(), u64::MAX, "", false),
        ),
        row(
            "events --follow from u64::MAX",
            Code::Ok,
            events(me(), u64::MAX, "", true),
        ),
        row(
            "watch module ../x",
            InvalidArgument,
            Watch(WatchRequest {
                module: "../x".into(),
            }),
        ),
        // Retention.
        row(
            "archive module /",
            InvalidArgument,
            Archive(ArchiveRequest {
                module: "/".into(),
                older_than_secs: 0,
                stage: String::new(),
                apply: true,
            }),
        ),
        row(
            "archive stage ../DONE",
            InvalidArgument,
            Archive(ArchiveRequest {
                module: String::new(),
                older_than_secs: u64::MAX,
                stage: "../DONE".into(),
                apply: true,
            }),
        ),
        row(
            "gc module ../ttm",
            InvalidArgument,
            Gc(GcRequest {
                module: "../ttm".into(),
                older_than_secs: 0,
                keep: 0,
                apply: true,
            }),
        ),
        row(
            "migrate module ../ttm",
            InvalidArgument,
            Migrate(MigrateRequest {
                module: "../ttm".into(),
                apply: true,
            }),
        ),
        // The daemon's own RPCs take any text.
        row(
            "hello client_version 1 MiB",
            Code::Ok,
            Hello(HelloRequest {
                client_version: mib.clone(),
                api_version: u32::MAX,
            }),
        ),
        // Not UTF-8 / not protobuf: refused while decoding, as the
        // client's fault (tonic itself would say INTERNAL).
        row(
            "get_state id not UTF-8 (raw)",
            Code::InvalidArgument,
            Raw("GetState", raw_get_state(b"\xff\xfe/../x")),
        ),
        row(
            "create from garbage bytes (raw)",
            Code::InvalidArgument,
            Raw("Create", vec![0xff; 64]),
        ),
    ];
    // Metadata: a client naming another tree, or another API generation.
    rows.push(Row {
        meta: Some(("ttm-root-bin", b"/etc".to_vec())),
        ..row(
            "metadata root /etc",
            FailedPrecondition,
            update(r#"{"a":1}"#),
        )
    });
    rows.push(Row {
        meta: Some(("ttm-root-bin", b"/\xff\0/../".to_vec())),
        ..row(
            "metadata root not UTF-8",
            FailedPrecondition,
            update(r#"{"a":1}"#),
        )
    });
    rows.push(Row {
        meta: Some(("ttm-api-version", b"99".to_vec())),
        ..row(
            "metadata api version 99",
            FailedPrecondition,
            update(r#"{"a":1}"#),
        )
    });
    rows
}

/// A codec that sends and receives raw protobuf bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

fn request<T>(message: T, meta: &Option<(&'static str, Vec<u8>)>) -> Request<T> {
    let mut req = Request::new(message);
    match meta {
        Some((key, value)) if key.ends_with("-bin") => {
            req.metadata_mut()
                .insert_bin(*key, BinaryMetadataValue::from_bytes(value));
        }
        Some((key, value)) => {
            let text = String::from_utf8(value.clone()).unwrap();
            req.metadata_mut()
                .insert(*key, MetadataValue::try_from(text.as_str()).unwrap());
        }
        None => {}
    }
    req
}

/// Sends one call; a stream is read up to its first message.
async fn send(socket: &Path, call: Call, meta: &Option<(&'static str, Vec<u8>)>) -> Code {
    let mut c: TtmClient<Channel> = grpc(socket).await;
    let result: Result<(), Status> = match call {
        Call::Hello(m) => c.hello(request(m, meta)).await.map(drop),
        Call::Create(m) => c.create(request(m, meta)).await.map(drop),
        Call::GetActive(m) => c.get_active(request(m, meta)).await.map(drop),
        Call::Activate(m) => c.activate(request(m, meta)).await.map(drop),
        Call::GetState(m) => c.get_state(request(m, meta)).await.map(drop),
        Call::List(m) => c.list(request(m, meta)).await.map(drop),
        Call::Transition(m) => c.transition(request(m, meta)).await.map(drop),
        Call::Commit(m) => c.commit(request(m, meta)).await.map(drop),
        Call::Fail(m) => c.fail(request(m, meta)).await.map(drop),
        Call::Retry(m) => c.retry(request(m, meta)).await.map(drop),
        Call::Update(m) => c.update(request(m, meta)).await.map(drop),
        Call::AppendEvent(m) => c.append_event(request(m, meta)).await.map(drop),
        Call::AddContext(parts) => c
            .add_context(request(tokio_stream::iter(parts), meta))
            .await
            .map(drop),
        Call::ListContext(m) => c.list_context(request(m, meta)).await.map(drop),
        Call::Resolve(m) => c.resolve(request(m, meta)).await.map(drop),
        Call::GetConnector(m) => c.get_connector(request(m, meta)).await.map(drop),
        Call::Events(m) => match c.events(request(m, meta)).await {
            Ok(s) => first_message(s.into_inner()).await,
            Err(e) => Err(e),
        },
        Call::Watch(m) => match c.watch(request(m, meta)).await {
            Ok(s) => first_message(s.into_inner()).await,
            Err(e) => Err(e),
        },
        Call::Archive(m) => c.archive(request(m, meta)).await.map(drop),
        Call::Gc(m) => c.gc(request(m, meta)).await.map(drop),
        Call::Migrate(m) => c.migrate(request(m, meta)).await.map(drop),
        Call::Raw(method, bytes) => {
            let mut g = tonic::client::Grpc::new(ttm_tests::channel(socket).await);
            g.ready().await.unwrap();
            let path = PathAndQuery::try_from(format!("/ttm.v1.Ttm/{method}")).unwrap();
            g.unary(request(bytes, meta), path, RawCodec)
                .await
                .map(drop)
        }
    };
    match result {
        Ok(()) => Code::Ok,
        Err(s) => {
            assert!(!s.message().is_empty(), "{:?} without a message", s.code());
            s.code()
        }
    }
}

/// The first message of a stream (or its end, or its error); a stream that
/// stays silent for a second is open and well.
async fn first_message<M>(mut s: tonic::Streaming<M>) -> Result<(), Status> {
    match tokio::time::timeout(Duration::from_secs(1), s.message()).await {
        Err(_) => Ok(()),
        Ok(r) => r.map(drop),
    }
}

/// Every row answers with its code, and the tree stays byte for byte what
/// it was; the daemon keeps serving through all of it.
#[test]
fn hostile_input_on_every_rpc_is_refused_and_changes_nothing() {
    let d = Daemon::start_new();
    let id = d.create("hostile input target");
    d.ctl(&["transition", "SELECT"]).ok();
    let rows = hostile_rows(&id);
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let rt = rt();
    let mut wrong = Vec::new();
    for row in rows {
        let before = d.snapshot();
        let got = rt.block_on(send(&d.socket, row.call, &row.meta));
        if got != row.code {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}",
                row.what, row.code
            ));
        }
        assert_same_tree(&before, &d.snapshot(), &row.what);
    }
    assert!(wrong.is_empty(), "wrong codes:\n{}", wrong.join("\n"));
    // Still serving, and nothing was written by any of it.
    let events = read_events(&d.txn_dir("ttm", &id));
    assert_eq!(events.len(), 3, "txn_start, activated, stage_transition");
    d.ctl(&["transition", "EXECUTE", "-t", &id]).ok();
}

/// The same for what only the command line can get wrong: numbers that
/// overflow, negative numbers.
#[test]
fn numeric_extremes_on_the_command_line() {
    let d = Daemon::start_new();
    let id = d.create("numbers");
    let before = d.snapshot();
    for (args, code) in [
        (&["events", "--from", "18446744073709551616"][..], 2),
        (&["events", "--from", "-1"][..], 2),
        (&["events", "--from", "99999999999999999999999999"][..], 2),
        (
            &[
                "transition",
                "SELECT",
                "--expect-seq",
                "18446744073709551616",
            ][..],
            2,
        ),
        (&["transition", "SELECT", "--expect-seq", "-1"][..], 2),
        (
            &[
                "transition",
                "SELECT",
                "--expect-seq",
                "18446744073709551615",
            ][..],
            5,
        ),
        (&["update", "{\"a\":1}", "--expect-seq", "0"][..], 5),
    ] {
        let out = d.ctl(args);
        out.expect_code(code);
        assert!(!out.stderr.trim().is_empty(), "{args:?}: no message");
        assert_same_tree(&before, &d.snapshot(), &format!("{args:?}"));
    }
    // From past the end: nothing to print, and that is not an error.
    let out = d.ctl(&["events", "--from", "18446744073709551615", "-t", &id]);
    assert_eq!(out.ok(), "");
}

/// Bytes that are not gRPC at all, on the socket: the daemon drops the
/// connection and goes on serving.
#[test]
fn garbage_on_the_socket_does_not_hurt_the_daemon() {
    let d = Daemon::start_new();
    let id = d.create("garbage");
    let before = d.snapshot();
    let mut preface_then_junk = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A frame header claiming a 16 MiB DATA frame on stream 1, then junk.
    preface_then_junk.extend([0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
    preface_then_junk.extend(vec![0xab; 4096]);
    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0u8; 65536],
        (0..=255u8).cycle().take(100_000).collect(),
        preface_then_junk,
        b"PRI * HTTP/2.0\r\n".to_vec(),
    ];
    for bytes in payloads {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&bytes);
        drop(s);
    }
    // Connections that say nothing and stay open.
    let idle: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    d.ctl(&["state", "-t", &id]).ok();
    drop(idle);
    assert_same_tree(&before, &d.snapshot(), "garbage on the socket");
}

// ------------------------------------------------- planted symlinks --

/// A directory outside the tree, with a file in it, for links to point at.
fn outside(d: &Daemon, name: &str) -> PathBuf {
    let dir = d.tmp().join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("100_secret.txt"), "outside the tree\n").unwrap();
    dir
}

#[test]
fn a_planted_ctx_symlink_is_not_followed_by_any_request() {
    let d = Daemon::start_new();
    let id = d.create("ctx link");
    let out_dir = outside(&d, "outside-ctx");
    let out_before = snapshot(&out_dir);
    let ctx = d.txn_dir("ttm", &id).join("ctx");
    fs::remove_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink(&out_dir, &ctx).unwrap();
    let file = d.tmp().join("e.txt");
    fs::write(&file, "evidence").unwrap();
    // Let the watcher see the hand edit before probing.
    std::thread::sleep(Duration::from_millis(300));
    for args in [
        &["ctx", "add", file.to_str().unwrap(), "e", "-t", &id][..],
        &["ctx", "list", "-t", &id],
        &["ctx", "env", "-t", &id],
        &["ctx", "digest", "-t", &id],
        &["status", "-t", &id],
        &["transition", "SELECT", "-t", &id],
        &["update", "{\"a\":1}", "-t", &id],
        &["commit", "-t", &id],
    ] {
        let out = d.ctl(args);
        assert!(
            !out.stdout.contains("secret") && !out.stdout.contains("outside the tree"),
            "{args:?} showed a file outside the tree:\n{}",
            out.stdout
        );
        if args[0] == "ctx" && args[1] == "add" {
            assert_ne!(out.code(), 0, "ctx add through a symlinked ctx/ succeeded");
            out.stderr_has(&["symlink"]);
        }
        assert_same_tree(&out_before, &snapshot(&out_dir), &format!("{args:?}"));
    }
    assert!(
        fs::symlink_metadata(&ctx).unwrap().file_type().is_symlink()
            || fs::symlink_metadata(&ctx).unwrap().is_dir(),
        "ctx/ is gone"
    );
}

#[test]
fn a_planted_state_json_symlink_is_not_followed() {
    let mut d = Daemon::start_new();
    let id = d.create("state link");
    let dir = d.txn_dir("ttm", &id);
    let passwd = d.tmp().join("passwd-copy");
    fs::copy("/etc/passwd", &passwd).unwrap();
    let passwd_before = fs::read(&passwd).unwrap();
    let state = dir.join("state.json");
    fs::remove_file(&state).unwrap();
    std::os::unix::fs::symlink(&passwd, &state).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let check = |d: &Daemon, what: &str| {
        assert_eq!(
            fs::read(&passwd).unwrap(),
            passwd_before,
            "{what}: passwd copy changed"
        );
        let out = d.ctl(&["state", "-t", &id]);
        assert!(!out.stdout.contains("root:"), "{what}: state shows passwd");
    };
    check(&d, "after planting");
    let out = d.ctl(&["transition", "SELECT", "-t", &id]);
    check(&d, "after a transition");
    if out.code() == 0 {
        // Accepted: then state.json was replaced, never written through.
        let meta = fs::symlink_metadata(&state).unwrap();
        assert!(meta.is_file(), "state.json is still a link after a write");
        assert_eq!(
            ttm_tests::read_json(&state)["stage"],
            "SELECT",
            "state.json was not rewritten"
        );
    } else {
        out.stderr_has(&["symlink"]);
    }
    // At start-up, too.
    fs::remove_file(&state).ok();
    std::os::unix::fs::symlink(&passwd, &state).unwrap();
    d.restart();
    check(&d, "after a restart");
}

#[test]
fn a_planted_events_ndjson_symlink_is_never_appended_through() {
    let mut d = Daemon::start_new();
    let id = d.create("log link");
    let dir = d.txn_dir("ttm", &id);
    let elsewhere = d.tmp().join("elsewhere.ndjson");
    fs::copy(dir.join("events.ndjson"), &elsewhere).unwrap();
    let elsewhere_before = fs::read(&elsewhere).unwrap();
    let log = dir.join("events.ndjson");
    fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &log).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    for args in [
        &["transition", "SELECT", "-t", &id][..],
        &["event", "progress", "{}", "-t", &id],
        &["update", "{\"a\":1}", "-t", &id],
    ] {
        let out = d.ctl(args);
        assert_eq!(
            fs::read(&elsewhere).unwrap(),
            elsewhere_before,
            "{args:?} appended through the link (exit {})",
            out.code()
        );
        assert_ne!(
            out.code(),
            0,
            "{args:?} was acknowledged, but its event went nowhere readable"
        );
    }
    d.restart();
    let out = d.ctl(&["state", "-t", &id]);
    assert_ne!(out.code(), 0, "a txn whose log is a symlink is served");
    out.stderr_has(&["symlink"]);
    let list = d.ctl(&["list"]).ok();
    assert!(list.contains("QUARANTINED"), "not quarantined:\n{list}");
    assert_eq!(fs::read(&elsewhere).unwrap(), elsewhere_before);
}

// ------------------------------------------------------------ limits --

/// Runs `args` and asserts exit 8 with the limit's config key named, and
/// that the tree did not change.
#[track_caller]
fn over_limit(d: &Daemon, args: &[&str], key: &str) {
    let before = d.snapshot();
    let out = d.ctl(args);
    out.expect_code(8).stderr_has(&[key]);
    assert_same_tree(&before, &d.snapshot(), &format!("{args:?}"));
}

#[test]
fn size_limits_name_themselves() {
    let d = Daemon::start_with_args(&[
        "--limit-description",
        "10",
        "--limit-payload",
        "100",
        "--limit-ctx-file",
        "10",
    ]);
    let id = d.create("0123456789");
    over_limit(&d, &["create", "01234567890"], "limits.description");
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
    over_limit(&d, &["update", &big, "-t", &id], "limits.payload");
    over_limit(
        &d,
        &["event", "progress", &big, "-t", &id],
        "limits.payload",
    );
    over_limit(&d, &["fail", &"e".repeat(101), "-t", &id], "limits.payload");
    let file = d.tmp().join("eleven.txt");
    fs::write(&file, "01234567890").unwrap();
    over_limit(
        &d,
        &["ctx", "add", file.to_str().unwrap(), "-t", &id],
        "limits.ctx_file",
    );
    // At the limits, all is well.
    let ten = d.tmp().join("ten.txt");
    fs::write(&ten, "0123456789").unwrap();
    d.ctl(&["ctx", "add", ten.to_str().unwrap(), "-t", &id])
        .ok();
    let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(92));
    assert_eq!(fits.len(), 100);
    d.ctl(&["update", &fits, "-t", &id]).ok();
    // No temporary file of the refused upload is left in the tree.
    let leftovers: Vec<_> = snapshot(&d.txn_dir("ttm", &id))
        .into_keys()
        .filter(|p| p.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn the_number_of_ctx_files_is_limited() {
    let d = Daemon::start_with_args(&["--limit-ctx-files", "3"]);
    let id = d.create("many files");
    let file = d.tmp().join("f.txt");
    fs::write(&file, "x").unwrap();
    let mut refused = false;
    for _ in 0..5 {
        let before = d.snapshot();
        let out = d.ctl(&["ctx", "add", file.to_str().unwrap(), "-t", &id]);
        if out.code() != 0 {
            out.expect_code(8).stderr_has(&["limits.ctx_files"]);
            assert_same_tree(&before, &d.snapshot(), "refused ctx add");
            refused = true;
            break;
        }
    }
    assert!(refused, "5 ctx adds with --limit-ctx-files 3 all succeeded");
    let files = fs::read_dir(d.txn_dir("ttm", &id).join("ctx"))
        .unwrap()
        .count();
    assert!(files <= 3 + 2, "{files} files in ctx/");
}

/// Opens a followed Events stream of `id` on `client`; its result.
async fn follow(
    client: &mut TtmClient<Channel>,
    id: &str,
) -> Result<tonic::Streaming<EventsResponse>, Status> {
    client
        .events(EventsRequest {
            txn: txn_ref("ttm", id),
            from_seq: 1,
            event: String::new(),
            follow: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// A stream refused at open, or failing on its first message.
async fn refused(r: Result<tonic::Streaming<EventsResponse>, Status>) -> Status {
    match r {
        Err(s) => s,
        Ok(mut s) => match tokio::time::timeout(T, s.message()).await {
            Ok(Err(status)) => status,
            other => panic!("the stream over the limit was admitted: {other:?}"),
        },
    }
}

#[test]
fn stream_limits_in_total_and_per_client() {
    let d = Daemon::start_with_args(&[
        "--limit-streams-total",
        "5",
        "--limit-streams-per-client",
        "3",
    ]);
    let id = d.create("streams");
    let rt = rt();
    rt.block_on(async {
        // One process (this one): 3 streams, then refused.
        let mut c = grpc(&d.socket).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(follow(&mut c, &id).await.unwrap());
        }
        let s = refused(follow(&mut c, &id).await).await;
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("limits.streams_per_client"), "{s:?}");
        // Other processes: two more fit the total of 5, the sixth does not.
        let a = d.spawn_ctl(&["events", "--follow", "-t", &id]);
        let b = d.spawn_ctl(&["events", "--follow", "-t", &id]);
        a.line(T);
        b.line(T);
        let out = d.ctl(&["events", "--follow", "-t", &id]);
        out.expect_code(8).stderr_has(&["limits.streams_total"]);
        // Closing streams frees their slots.
        drop(held);
        drop(c);
        a.kill();
        assert!(
            wait_until(
                T,
                || d.ctl(&["daemon", "status", "--json"]).json()["open_streams"] == 1
            ),
            "slots not freed"
        );
        let mut c = grpc(&d.socket).await;
        follow(&mut c, &id).await.unwrap();
        b.kill();
    });
}

#[test]
fn an_oversized_request_is_refused_with_the_limit() {
    let d = Daemon::start_with_args(&[
        "--limit-request-bytes",
        "65536",
        "--limit-payload",
        "1000000",
    ]);
    let id = d.create("request size");
    let before = d.snapshot();
    let patch = format!("{{\"a\":\"{}\"}}", "x".repeat(70_000));
    let rt = rt();
    let status = rt.block_on(async {
        let mut c = grpc(&d.socket).await;
        c.update(UpdateRequest {
            txn: txn_ref("ttm", &id),
            patch_json: patch.clone(),
            pre: None,
        })
        .await
        .unwrap_err()
    });
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limits.request_bytes"),
        "{status:?}"
    );
    over_limit(&d, &["update", &patch, "-t", &id], "limits.request_bytes");
    assert_same_tree(&before, &d.snapshot(), "oversized requests");
    d.ctl(&["update", "{\"a\":1}", "-t", &id]).ok();
}

// ---------------------------------------------- unread streams, RSS --

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// 1,000 followers over 10 connections that never read a byte, on a
/// transaction whose log is far larger than what a stream may buffer; then
/// more events arrive. The daemon's RSS stays bounded and it keeps
/// answering.
#[test]
fn a_thousand_unread_streams_do_not_grow_the_daemon() {
    const STREAMS: usize = 1000;
    const CONNECTIONS: usize = 10;
    const LIMIT_KIB: u64 = 200 * 1024;
    let d = Daemon::start_with_args(&[
        "--limit-streams-total",
        "2000",
        "--limit-streams-per-client",
        "2000",
        "--durability",
        "none",
    ]);
    let id = d.create("unread streams");
    let data = format!("{{\"blob\":\"{}\"}}", "z".repeat(1000));
    let rt = rt();
    let append = |n: usize| {
        rt.block_on(async {
            let mut c = grpc(&d.socket).await;
            for _ in 0..n {
                c.append_event(AppendEventRequest {
                    txn: txn_ref("ttm", &id),
                    event: "progress".into(),
                    data_json: data.clone(),
                    pre: None,
                })
                .await
                .unwrap();
            }
        })
    };
    append(300);
    let pid = d.pid();
    let baseline = rss_kib(pid);
    let held = rt.block_on(async {
        let mut held = Vec::with_capacity(STREAMS);
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(grpc(&d.socket).await);
        }
        for i in 0..STREAMS {
            let c = &mut clients[i % CONNECTIONS];
            held.push(follow(c, &id).await.unwrap());
        }
        (clients, held)
    });
    let status = |d: &Daemon| d.ctl(&["daemon", "status", "--json"]).json();
    assert!(
        wait_until(T, || status(&d)["open_streams"].as_u64()
            >= Some(STREAMS as u64)),
        "not all streams open: {}",
        status(&d)
    );
    std::thread::sleep(Duration::from_secs(2));
    let opened = rss_kib(pid);
    append(50);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    eprintln!(
        "ttmd RSS: {baseline} KiB before, {opened} KiB with {STREAMS} unread streams, \
         {after} KiB after 50 more events"
    );
    assert!(
        opened < LIMIT_KIB && after < LIMIT_KIB,
        "RSS {opened}/{after} KiB with {STREAMS} unread streams (limit {LIMIT_KIB} KiB)"
    );
    // Still answering, reads and writes (each call is bounded by the
    // harness's hang guard, not by a speed budget).
    d.ctl(&["state", "-t", &id]).ok();
    d.ctl(&["event", "progress", "{}", "-t", &id]).ok();
    drop(held);
}

/// A file planted in ctx/ whose number is near u64::MAX: the next evidence
/// number cannot be above it. `ctx add` must say so (or store the file
/// under a sane number), not fail inside the daemon.
#[test]
fn a_planted_ctx_file_with_a_huge_number_is_handled() {
    let d = Daemon::start_new();
    let id = d.create("huge number");
    let ctx = d.txn_dir("ttm", &id).join("ctx");
    fs::write(ctx.join("18446744073709551615_planted.txt"), "x").unwrap();
    let file = d.tmp().join("e.txt");
    fs::write(&file, "evidence").unwrap();
    let before = d.snapshot();
    let out = d.ctl(&["ctx", "add", file.to_str().unwrap(), "e", "-t", &id]);
    assert!(
        matches!(out.code(), 0 | 2 | 4 | 8),
        "ctx add failed inside the daemon: exit {}\n{}",
        out.code(),
        out.stderr
    );
    if out.code() == 0 {
        let name = out.stdout.trim();
        let number: u64 = name.split('_').next().unwrap().parse().unwrap();
        assert!(number >= 100, "stored as {name}");
    } else {
        assert_same_tree(&before, &d.snapshot(), "refused ctx add");
    }
    d.ctl(&["ctx", "list", "-t", &id]).ok();
    d.ctl(&["state", "-t", &id]).ok();
}

// ------------------------------------------------ hostile file content --

/// Files in the tree with content no daemon wrote: a 16 MiB line, invalid
/// UTF-8, NUL bytes, binary garbage as a log, garbage as state.json,
/// fsm.json and topology.json, `active` pointing out of the tree. The
/// daemon starts, serves what is sound, refuses the rest with words, and
/// survives the same arriving while it runs.
#[test]
fn hostile_file_content_never_crashes_the_daemon() {
    let mut d = Daemon::start_new();
    let sound = d.create("sound");
    let noisy = d.ctl(&["create", "noisy log", "--no-activate"]).ok();
    let garbage = d.ctl(&["create", "garbage log", "--no-activate"]).ok();
    let bad_state = d.ctl(&["create", "bad state", "--no-activate"]).ok();
    d.ctl(&["create", "x", "-m", "badfsm"]).ok();
    d.stop();

    let txns = d.root.join("ttm/txns");
    let append = |id: &str, bytes: &[u8]| {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(txns.join(id).join("events.ndjson"))
            .unwrap();
        f.write_all(bytes).unwrap();
    };
    let mut huge = b"{\"event\":\"progress\",\"data\":{\"s\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'h', 16 * MIB));
    huge.extend(b"\"}}\n");
    append(&noisy, &huge);
    append(
        &noisy,
        b"\xff\xfe\xfd not utf-8\n\0\0\0\0\n{\"event\":\"x\0y\"}\n[]\n\n",
    );
    let junk: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    fs::write(d.txn_dir("ttm", &garbage).join("events.ndjson"), &junk).unwrap();
    fs::write(
        d.txn_dir("ttm", &bad_state).join("state.json"),
        b"\0\xff{\"seq\":",
    )
    .unwrap();
    fs::write(d.root.join("badfsm/fsm.json"), b"{\"stages\": [\"\0\xff\"]").unwrap();
    fs::write(d.root.join("ttm/topology.json"), b"\xff\xfe[").unwrap();
    let active = d.root.join("ttm/txns/active");
    fs::remove_file(&active).unwrap();
    std::os::unix::fs::symlink("../../../../etc", &active).unwrap();

    d.start();
    let alive = |d: &Daemon| d.ctl(&["state", "-t", &sound]).ok();
    alive(&d);
    // The noisy log still folds: malformed lines keep their seq.
    let state: serde_json::Value =
        serde_json::from_str(&d.ctl(&["state", "-t", &noisy]).ok()).unwrap();
    assert_eq!(state["seq"], 7, "{state}");
    // Binary garbage is quarantined, named in the list.
    let list = d.ctl(&["list"]).ok();
    assert!(
        list.lines()
            .any(|l| l.contains(&garbage) && l.contains("QUARANTINED")),
        "{list}"
    );
    let out = d.ctl(&["state", "-t", &garbage]);
    assert!(
        matches!(out.code(), 3 | 4),
        "exit {}: {}",
        out.code(),
        out.stderr
    );
    // A garbage state.json is rebuilt from the log.
    let rebuilt = ttm_tests::read_json(&d.txn_dir("ttm", &bad_state).join("state.json"));
    assert_eq!(rebuilt["txn_id"], bad_state.as_str());
    // A broken fsm.json refuses its module, naming the file.
    let out = d.ctl(&["list", "-m", "badfsm"]);
    assert_ne!(out.code(), 0);
    out.stderr_has(&["fsm.json"]);
    // A broken topology.json fails resolve, naming the file.
    let out = d.ctl(&["resolve", "-t", &sound]);
    assert_ne!(out.code(), 0);
    out.stderr_has(&["topology.json"]);
    // `active` pointing out of the tree is not followed.
    d.ctl(&["active"]).expect_code(4);
    alive(&d);

    // The same arriving while the daemon runs.
    append(&sound, &huge);
    append(&sound, b"\xff\0\n{\"event\":\n");
    fs::write(d.txn_dir("ttm", &noisy).join("state.json"), &junk).unwrap();
    fs::write(d.root.join("ttm/fsm.json"), &junk).unwrap();
    d.ctl(&["daemon", "reload"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    alive(&d);
    d.ctl(&["event", "after", "{}", "-t", &sound]).ok();
    let status = d.ctl(&["daemon", "status", "--json"]).json();
    assert_eq!(status["pid"], d.pid(), "{status}");
}
