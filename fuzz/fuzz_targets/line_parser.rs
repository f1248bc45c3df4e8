//! Fuzz target: see `logfleet_fuzz::lines` for the properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    logfleet_fuzz::lines::check(data);
    logfleet_fuzz::lines::check_parse(data);
});
