//! End-to-end tests of ttmd and ttmctl: one test binary, one module per area.
//! Build the binaries first: `cargo build --workspace --bins`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit_edges;
mod audit_store;
mod bad_input;
mod cli_ux;
mod clients;
mod cluster;
mod cluster_gaps;
mod cluster_leases;
mod cluster_writes;
mod compat;
mod concurrency;
mod crash;
mod daemon;
mod deadlines;
mod faults;
mod follow_restart;
mod fsm;
mod golden;
mod idempotency;
mod in_process;
mod languages;
mod leases;
mod lifecycle;
mod migration;
mod races;
mod reconcile;
mod replies;
mod restart;
mod retention;
mod security;
mod service;
mod shims;
mod streams;
mod uploads;
