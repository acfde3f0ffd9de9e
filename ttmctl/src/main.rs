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
mod render;
mod shell;

use std::io::Write;

use clap::Parser;

use crate::cli::Cli;
use crate::commands::Ctx;
use crate::exit::{Exit, Failure};
use crate::output::Out;

fn main() {
    // Exits 2 on usage errors and 0 for --help / --version, by itself.
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => Exit::Success,
        Err(failure) => {
            if !failure.message.is_empty() {
                // Nothing sensible remains to be done if stderr is gone.
                let _ = writeln!(std::io::stderr(), "ttmctl: {}", failure.message);
            }
            failure.exit
        }
    };
    // `exit` skips destructors: nothing left may hold the process open.
    std::process::exit(code.code());
}

fn run(cli: Cli) -> Result<(), Failure> {
    // One thread: start-up time matters more than parallelism in a client
    // that makes one or two calls.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::other(format!("cannot start the async runtime: {err}")))?;
    connect::init_tree()?;
    let mut ctx = Ctx {
        module: cli.global.module.clone(),
        json: cli.global.json,
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
