//! Fuzz target `fsm_json`: see `checks::fsm_json`.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::fsm_json(data));
