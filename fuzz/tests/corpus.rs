//! The committed corpus passes every property: a plain `cargo test` replays it without
//! libFuzzer or sanitizers, so a regression in the protocol crate shows up even where the fuzz
//! targets are not run.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}

/// Every committed agent_frame input satisfies the frame properties.
#[test]
fn agent_frame_corpus() {
    replay("agent_frame", logfleet_fuzz::frames::check);
}

/// Every committed filter_spec input satisfies the filter properties.
#[test]
fn filter_spec_corpus() {
    replay("filter_spec", logfleet_fuzz::filters::check);
}

/// Every committed line_parser input satisfies the level-detection properties.
#[test]
fn line_parser_corpus() {
    replay("line_parser", |data| {
        logfleet_fuzz::lines::check(data);
        logfleet_fuzz::lines::check_parse(data);
    });
}
