//! `ttmd`: the daemon that owns a tree of transactions.
//!
//! Layers, from the inside out: [`core`] (pure rules), [`store`] (the files),
//! [`service`] (gRPC). [`run`] serves an already-bound listener until a
//! shutdown future completes; the binary only parses flags and binds.

pub mod core;
