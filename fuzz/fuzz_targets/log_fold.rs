//! Fuzz target `log_fold`: see `checks::log_fold`.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::log_fold(data));
