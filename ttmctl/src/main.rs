//! `ttmctl`: the command-line client of ttmd (SPEC §12).
//!
//! Parses the command line, runs one command against the daemon, prints
//! failures as one line on stderr and exits with the code from `exit.rs`.

mod autostart;
mod cli;
mod commands;
mod connect;
mod exit;
mod output;
mod parse;
mod render;
mod shell;
mod term;

use std::io::Write;

use crate::cli::Cli;
use crate::commands::Ctx;
use crate::exit::{Exit, Failure};
use crate::output::Out;

fn main() {
    let cli = match parse::parse() {
        Ok(cli) => cli,
        // --help and --version print and exit 0; a usage error becomes one
        // line with the usage to follow, exit 2.
        Err(err) => match exit::usage_error(&err) {
            Some(message) => {
                let code = fail(&Failure::new(Exit::Usage, message));
                std::process::exit(code.code())
            }
            None => err.exit(),
        },
    };
    let code = match run(cli) {
        Ok(()) => Exit::Success,
        Err(failure) => fail(&failure),
    };
    // `exit` skips destructors: nothing left may hold the process open.
    std::process::exit(code.code());
}

/// Prints `failure` as one line on stderr (no control characters, so no
/// colour codes or stray line breaks from a daemon's message) and returns
/// its exit code.
fn fail(failure: &Failure) -> Exit {
    if !failure.message.is_empty() {
        // Nothing sensible remains to be done if stderr is gone.
        let _ = writeln!(
            std::io::stderr(),
            "ttmctl: {}",
            exit::one_line(&failure.message)
        );
    }
    failure.exit
}

fn run(cli: Cli) -> Result<(), Failure> {
    // One thread: start-up time matters more than parallelism in a client
    // that makes one or two calls.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::other(format!("cannot start the async runtime: {err}")))?;
    connect::init_tree()?;
    connect::init_deadline(cli.global.rpc_timeout);
    let mut ctx = Ctx {
        module: cli.global.module.clone(),
        json: cli.global.json,
        color: cli.global.color,
        palette: None,
        socket: connect::socket_path(&cli.global),
        out: Out::new(),
    };
    let result = runtime.block_on(commands::run(cli, &mut ctx));
    // Dropping a runtime waits for its blocking threads, and one may sit in
    // a read of stdin that never ends; the process is exiting anyway.
    runtime.shutdown_background();
    // Flush what was printed even when the command failed later on.
    let flushed = ctx.out.flush();
    result.and(flushed)
}
