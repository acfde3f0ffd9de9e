//! Fuzz target `ctx_names`: see `checks::ctx_names`.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ctx_names(data));
