//! One function per command: check local input, call the RPC, print.
//! Local input (files, stdin) is checked before connecting, so a usage
//! mistake never starts a daemon.

mod context;
mod daemon;
pub mod follow;
mod help;
mod hosts;
mod leases;
mod mutate;
mod pages;
mod status;
mod streams;
mod targets;
mod top;
mod txns;
mod upload;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use serde_json::{Value, json};
use ttm_proto::v1::{Preconditions, TxnRef, TxnState};

use crate::cli::{Cli, Command, CtxCommand, DaemonCommand, Guards, LeaseCommand};
use crate::connect::{self, Daemon};
use crate::exit::Failure;
use crate::output::{Out, parse_json};
use crate::term::{self, ColorWhen, Human, Palette};

/// What every command needs besides its own arguments.
#[derive(Debug)]
pub struct Ctx {
    /// Module namespace sent with every request.
    pub module: String,
    /// `--json`: machine output.
    pub json: bool,
    /// `--color`.
    pub color: ColorWhen,
    /// Colours decided by `palette()`.
    pub palette: Option<Palette>,
    /// Where the daemon is (or will be started).
    pub socket: PathBuf,
    /// Standard output.
    pub out: Out,
}

impl Ctx {
    pub async fn daemon(&self) -> Result<Daemon, Failure> {
        connect::connect(&self.socket).await
    }

    /// How human output should look (looked up only by the commands that
    /// print for people).
    pub fn human(&self) -> Human {
        Human::detect(self.color)
    }

    /// The colours of stdout, decided once (streams print many lines).
    pub fn palette(&mut self) -> Palette {
        *self.palette.get_or_insert_with(|| {
            Palette::new(term::color_from_env(
                self.color,
                std::io::stdout().is_terminal(),
            ))
        })
    }

    /// `id` in this module; empty means the module's active transaction.
    pub fn txn(&self, id: &str) -> Option<TxnRef> {
        Some(TxnRef {
            module: self.module.clone(),
            txn_id: id.to_owned(),
        })
    }
}

// Long: one arm per command, a flat dispatch table that reads best whole.
pub async fn run(cli: Cli, ctx: &mut Ctx) -> Result<(), Failure> {
    match cli.command {
        Command::Version => version(ctx),
        Command::Archive {
            older_than,
            stage,
            yes,
        } => daemon::archive(ctx, older_than.unwrap_or(0), stage, yes).await,
        Command::Gc {
            older_than,
            keep,
            yes,
        } => daemon::gc(ctx, older_than.unwrap_or(0), keep, yes).await,
        Command::Migrate { yes } => daemon::migrate(ctx, yes).await,
        Command::Daemon(DaemonCommand::Status) => daemon::status(ctx).await,
        Command::Daemon(DaemonCommand::Stop) => daemon::stop(ctx).await,
        Command::Daemon(DaemonCommand::Reload) => daemon::reload(ctx).await,
        Command::Create {
            description,
            target,
            agent,
            no_activate,
            request_id,
            leases,
            lease_ttl,
            wait,
        } => {
            let request = ttm_proto::v1::CreateRequest {
                module: ctx.module.clone(),
                description,
                target,
                agent,
                no_activate,
                request_id: request_id.unwrap_or_default(),
                leases,
                lease_ttl_ms: lease_ttl.unwrap_or(0),
                wait_policy: leases::policy(&wait) as i32,
            };
            txns::create(ctx, request, wait).await
        }
        Command::Lease(LeaseCommand::Acquire {
            name,
            txn,
            lease_ttl,
            wait,
        }) => leases::acquire(ctx, txn.id(), &name, lease_ttl.unwrap_or(0), wait).await,
        Command::Lease(LeaseCommand::Release { name, txn }) => {
            leases::release(ctx, txn.id(), &name).await
        }
        Command::Leases => leases::list(ctx).await,
        Command::Hosts => hosts::list(ctx).await,
        Command::Heartbeat { txn } => leases::heartbeat(ctx, txn.id()).await,
        Command::Active => txns::active(ctx).await,
        Command::Activate { id, guards } => txns::activate(ctx, &id, &guards).await,
        Command::Dir { txn } => txns::dir(ctx, txn.id()).await,
        Command::List { stage } => txns::list(ctx, stage).await,
        Command::State { txn } => txns::state(ctx, txn.id()).await,
        Command::Status {
            txn,
            follow,
            timeout,
        } => status::status(ctx, txn.id(), follow, timeout).await,
        Command::Events {
            txn,
            event_type,
            from,
            follow,
            timeout,
        } => streams::events(ctx, txn.id(), event_type, from, follow, timeout).await,
        Command::Watch => streams::watch(ctx).await,
        Command::Transition { stage, txn, guards } => {
            mutate::transition(ctx, txn.id(), stage, &guards).await
        }
        Command::Commit { txn, guards } => mutate::commit(ctx, txn.id(), &guards).await,
        Command::Fail {
            message,
            txn,
            guards,
        } => mutate::fail(ctx, txn.id(), message, &guards).await,
        Command::Retry { to, txn, guards } => mutate::retry(ctx, txn.id(), to, &guards).await,
        Command::Update { patch, txn, guards } => {
            mutate::update(ctx, txn.id(), &patch, &guards).await
        }
        Command::Event {
            event_type,
            data,
            txn,
            guards,
        } => mutate::event(ctx, txn.id(), event_type, data.as_deref(), &guards).await,
        Command::Ctx(CtxCommand::Add {
            file,
            description,
            txn,
            guards,
        }) => context::add(ctx, txn.id(), &file, description, &guards).await,
        Command::Ctx(CtxCommand::List { txn }) => context::list(ctx, txn.id()).await,
        Command::Ctx(CtxCommand::Env { txn }) => context::env(ctx, txn.id()).await,
        Command::Ctx(CtxCommand::Digest { txn }) => context::digest(ctx, txn.id()).await,
        Command::Resolve { txn, guards } => targets::resolve(ctx, txn.id(), &guards).await,
        Command::Connector { target } => targets::connector(ctx, target).await,
        Command::Top => top::top(ctx).await,
        Command::Completions { shell } => help::completions(ctx, shell),
        Command::Man { dir } => help::man(ctx, dir.as_deref()),
        Command::TxnIds => help::txn_ids(ctx).await,
    }
}

fn version(ctx: &mut Ctx) -> Result<(), Failure> {
    if ctx.json {
        ctx.out.json(&json!({
            "ttmctl": ttm_proto::VERSION,
            "api_version": ttm_proto::API_VERSION,
        }))
    } else {
        ctx.out.line(&format!("ttmctl {}", ttm_proto::VERSION))
    }
}

fn preconditions(guards: &Guards) -> Option<Preconditions> {
    Some(Preconditions {
        expect_stage: guards.expect_stage.clone(),
        expect_seq: guards.expect_seq,
        request_id: guards.request_id.clone().unwrap_or_default(),
        fences: guards
            .fences
            .iter()
            .map(|(name, token)| ttm_proto::v1::Fence {
                name: name.clone(),
                token: *token,
            })
            .collect(),
    })
}

/// The state a response must carry.
fn required(state: Option<TxnState>) -> Result<TxnState, Failure> {
    state.ok_or_else(|| Failure::other("ttmd's answer carried no state"))
}

/// The state document as JSON: the daemon's own text, which holds the user
/// fields too; the typed fields only if it sent no text.
fn state_value(state: &TxnState) -> Result<Value, Failure> {
    let mut value = state_document(state)?;
    // Cluster mode (only there is `home` set): where the transaction lives
    // and how fresh this view of it is, which state.json cannot say.
    if let (false, Some(object)) = (state.home.is_empty(), value.as_object_mut()) {
        object.insert("home".into(), json!(state.home));
        object.insert("stale".into(), json!(state.stale));
        object.insert("mirror_lag".into(), json!(state.mirror_lag));
    }
    Ok(value)
}

/// state.json's document as the daemon sent it (or built from the fields).
fn state_document(state: &TxnState) -> Result<Value, Failure> {
    if !state.json.trim().is_empty() {
        return parse_json("a state", &state.json);
    }
    Ok(json!({
        "txn_id": state.txn_id,
        "module": state.module,
        "description": state.description,
        "stage": state.stage,
        "target": state.target,
        "iteration": state.iteration,
        "agent": state.agent,
        "ctx_digest": non_empty(&state.ctx_digest),
        "last_checkpoint": state.last_checkpoint,
        "last_error": non_empty(&state.last_error),
        "created": state.created,
        "seq": state.seq,
    }))
}

fn non_empty(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_owned())
    }
}

/// In `--json` mode, prints the state a mutation left; otherwise nothing.
fn print_state_if_json(ctx: &mut Ctx, state: Option<TxnState>) -> Result<(), Failure> {
    if ctx.json {
        let state = required(state)?;
        ctx.out.json(&state_value(&state)?)
    } else {
        Ok(())
    }
}

/// A JSON argument as text; `-` reads it from standard input. Validation is
/// the daemon's (one place decides what is acceptable).
fn text_arg(arg: &str) -> Result<String, Failure> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|err| Failure::usage(format!("cannot read standard input: {err}")))?;
    Ok(text)
}
