//! The pure heart of TTM: names, stages, events and how they fold into a
//! state. Nothing here does I/O, reads the clock, or knows about gRPC or
//! tokio; every function takes what it needs (including "now") as arguments,
//! so all of it is unit-tested on plain values.

pub mod admit;
pub mod ctx;
pub mod error;
pub mod event;
pub mod fsm;
pub mod hooks;
pub mod id;
pub mod lease;
pub mod migrate;
pub mod state;
pub mod summary;
pub mod templates;
pub mod timing;
pub mod topology;

pub use error::{Error, Result};
pub use id::DEFAULT_MODULE;

/// The target of a transaction created without one (SPEC §3).
pub const DEFAULT_TARGET: &str = "@local";

/// The agent of a transaction created without one (SPEC §3).
pub const DEFAULT_AGENT: &str = "human";
