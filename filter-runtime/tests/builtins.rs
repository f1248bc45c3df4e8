//! The built-in `level`, `source` and `pattern` filters, run as components through a chain.

mod common;

use common::{record, runtime};
use logfleet_filter_runtime::{ChainError, Kept, Runtime};
use logfleet_protocol::{Filters, Level, PluginRef};

fn no_plugins(_: &PluginRef) -> Option<Vec<u8>> {
    None
}

fn kept_indices(kept: &[Kept]) -> Vec<u32> {
    kept.iter().map(|k| k.index).collect()
}

#[test]
fn and_across_filters_or_within_lists() {
    let rt = runtime();
    let filters = Filters {
        levels: vec![Level::Warn, Level::Error],
        sources: vec!["nginx".into(), "api".into()],
        pattern: Some("time(out|d)".into()),
        plugins: vec![],
    };
    let mut chain = rt.chain(&filters, &no_plugins).unwrap();
    assert_eq!(
        chain.filters().collect::<Vec<_>>(),
        ["level", "source", "pattern"]
    );
    let records = [
        record(Level::Error, "nginx", "upstream timeout"), // kept
        record(Level::Info, "nginx", "upstream timeout"),  // level
        record(Level::Warn, "db", "query timed out"),      // source
        record(Level::Warn, "api", "request timed out"),   // kept
        record(Level::Error, "api", "all good"),           // pattern
        record(Level::Fatal, "api", "timeout"),            // level
    ];
    let out = chain.apply(&records);
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(kept_indices(&out.kept), [0, 3]);
    assert!(out.kept.iter().all(|k| k.message.is_none()));
    // The chain keeps working across calls.
    let out = chain.apply(&records[..2]);
    assert_eq!(kept_indices(&out.kept), [0]);
}

#[test]
fn only_used_filters_are_built_and_empty_chain_keeps_everything() {
    let rt = runtime();
    let mut chain = rt.chain(&Filters::default(), &no_plugins).unwrap();
    assert_eq!(chain.filters().count(), 0);
    let records = [
        record(Level::Info, "a", "x"),
        record(Level::Debug, "b", "y"),
    ];
    assert_eq!(kept_indices(&chain.apply(&records).kept), [0, 1]);

    let filters = Filters {
        pattern: Some("^y$".into()),
        ..Filters::default()
    };
    let mut chain = rt.chain(&filters, &no_plugins).unwrap();
    assert_eq!(chain.filters().collect::<Vec<_>>(), ["pattern"]);
    assert_eq!(kept_indices(&chain.apply(&records).kept), [1]);
    assert!(chain.apply(&[]).kept.is_empty());
}

#[test]
fn large_inputs_are_split_into_bounded_batches() {
    let rt = runtime();
    let filters = Filters {
        levels: vec![Level::Error],
        pattern: Some("4$".into()),
        ..Filters::default()
    };
    let mut chain = rt.chain(&filters, &no_plugins).unwrap();
    let records: Vec<_> = (0..10_000)
        .map(|i| {
            let level = if i % 2 == 0 {
                Level::Error
            } else {
                Level::Info
            };
            record(level, "s", &format!("line {i}"))
        })
        .collect();
    let out = chain.apply(&records);
    let expected: Vec<u32> = (0..10_000u32).filter(|i| i % 10 == 4).collect();
    assert_eq!(expected.len(), 1000);
    assert_eq!(kept_indices(&out.kept), expected);
    assert!(out.failure.is_none());
}

#[test]
fn pattern_limits_match_the_protocol() {
    let rt = runtime();
    let long = "a".repeat(logfleet_protocol::filters::MAX_PATTERN_BYTES + 1);
    let filters = Filters {
        pattern: Some(long),
        ..Filters::default()
    };
    let err = rt.chain(&filters, &no_plugins).unwrap_err();
    assert!(
        matches!(&err, ChainError::Configure { plugin, .. } if plugin == "pattern"),
        "{err}"
    );
    // A pattern whose compiled form is over the size limit is refused like the host does.
    let big = "\\w{200}\\w{200}\\w{200}";
    assert!(logfleet_protocol::filters::compile_pattern(big).is_err());
    let filters = Filters {
        pattern: Some(big.into()),
        ..Filters::default()
    };
    let err = rt.chain(&filters, &no_plugins).unwrap_err();
    assert!(err.to_string().contains("not a valid regex"), "{err}");
}

#[test]
fn builtins_are_valid_components() {
    let rt = runtime();
    for builtin in Runtime::builtins() {
        rt.validate(builtin.component())
            .unwrap_or_else(|e| panic!("{}: {e}", builtin.name()));
    }
}
