//! Every ttmctl call is bounded, and an empty value never stands for "the
//! default" (issue 15 items 3, 6 and 12).

use std::os::unix::net::UnixListener;
use std::thread;

use ttm_tests::Daemon;

/// A socket that accepts connections and never says a word: a stuck or
/// overloaded daemon as a client sees it.
fn silent_socket(daemon: &Daemon) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(&daemon.socket).expect("bind");
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => return,
            }
        }
    })
}

#[test]
fn a_daemon_that_accepts_but_never_answers_ends_the_call_with_exit_7() {
    let daemon = Daemon::stopped();
    let _silent = silent_socket(&daemon);
    daemon
        .ctl(&["--rpc-timeout", "2s", "state"])
        .expect_code(7)
        .stderr_has(&["did not answer within 2s", "--rpc-timeout"]);

    let mut by_env = daemon.ctl_command(&["list"]);
    by_env.env("TTM_RPC_TIMEOUT", "1");
    ttm_tests::run(by_env, None, ttm_tests::CTL_TIMEOUT)
        .expect_code(7)
        .stderr_has(&["did not answer within 1s"]);
}

#[test]
fn an_upload_the_daemon_never_takes_ends_with_exit_7() {
    let daemon = Daemon::stopped();
    let _silent = silent_socket(&daemon);
    let big = vec![b'x'; 4 << 20];
    daemon
        .ctl_stdin(&["--rpc-timeout", "2s", "ctx", "add", "-"], &big)
        .expect_code(7)
        .stderr_has(&["did not answer within 2s"]);
}

#[test]
fn an_empty_txn_id_or_request_id_is_a_usage_error_not_the_active_transaction() {
    let daemon = Daemon::start_new();
    let id = daemon.create("deploy");
    for args in [
        &["commit", "-t", ""][..],
        &["commit", "--txn="][..],
        &["fail", "--txn", "", "boom"][..],
        &["transition", "EXECUTE", "--request-id", ""][..],
    ] {
        daemon
            .ctl(args)
            .expect_code(2)
            .stderr_has(&["empty", "unset variable"]);
    }
    let state = daemon.state_json("ttm", &id);
    assert_eq!(state["stage"], "NEW", "an empty id acted: {state}");
    assert_eq!(state["seq"], 2, "something was appended: {state}");
}
