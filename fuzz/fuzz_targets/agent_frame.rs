//! Fuzz target: see `logfleet_fuzz::frames` for the properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logfleet_fuzz::frames::check(data));
