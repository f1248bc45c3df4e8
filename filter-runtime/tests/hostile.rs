//! Plugins that misbehave on purpose: each is contained, disabled for its chain only, and
//! reported once; the rest of the chain and other chains carry on.

mod common;

use std::time::{Duration, Instant};

use common::{plugin, record, runtime, with_plugins};
use logfleet_filter_runtime::{Chain, ChainError, ChainOutput, Runtime};
use logfleet_protocol::agent::Record;
use logfleet_protocol::{Level, PluginRef};

/// A chain of `hostile` (with `config`) followed by `template` keeping lines with "keep".
fn chain_with(rt: &Runtime, hostile: &str, config: &str) -> Result<Chain, ChainError> {
    let (bad, bad_bytes) = plugin(hostile, config);
    let (good, good_bytes) = plugin("template", r#"{"contains":"keep"}"#);
    let source = move |p: &PluginRef| {
        Some(if p.name == "template" {
            good_bytes.clone()
        } else {
            bad_bytes.clone()
        })
    };
    rt.chain(&with_plugins(vec![bad, good]), &source)
}

fn lines() -> Vec<Record> {
    vec![
        record(Level::Info, "app", "keep me"),
        record(Level::Info, "app", "drop me"),
    ]
}

/// Runs two batches: the first must report exactly one failure of `plugin` and still apply
/// the healthy filter; the second must not report it again.
fn assert_contained(chain: &mut Chain, plugin: &str) -> ChainOutput {
    let first = chain.apply(&lines());
    assert_eq!(first.failures.len(), 1, "{:?}", first.failures);
    assert_eq!(first.failures[0].plugin, plugin);
    assert_eq!(
        first.kept.iter().map(|k| k.index).collect::<Vec<_>>(),
        [0],
        "the healthy filter after it still runs"
    );
    assert_eq!(chain.disabled().collect::<Vec<_>>(), [plugin]);
    let second = chain.apply(&lines());
    assert!(second.failures.is_empty(), "reported once only");
    assert_eq!(second.kept.len(), 1);
    first
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let rt = runtime();
    let mut chain = chain_with(&rt, "hostile-loop", "null").unwrap();
    let started = Instant::now();
    let out = assert_contained(&mut chain, "hostile-loop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.failures[0].message.contains("deadline"),
        "{}",
        out.failures[0].message
    );
}

#[test]
fn infinite_loop_in_configure_fails_the_chain_build() {
    let rt = runtime();
    let err = chain_with(&rt, "hostile-loop", r#"{"in":"configure"}"#).unwrap_err();
    assert!(
        matches!(&err, ChainError::Startup { plugin, message } if plugin == "hostile-loop" && message.contains("deadline")),
        "{err}"
    );
}

#[test]
fn memory_hog_hits_the_cap() {
    // A generous deadline: filling 32 MiB on a loaded machine must not be cut short by it.
    let rt = common::runtime_with_deadline(Duration::from_secs(10));
    let mut chain = chain_with(&rt, "hostile-memory", "null").unwrap();
    let out = assert_contained(&mut chain, "hostile-memory");
    assert!(
        out.failures[0].message.contains("memory limit"),
        "{}",
        out.failures[0].message
    );
}

#[test]
fn panic_message_surfaces() {
    let rt = runtime();
    let mut chain = chain_with(&rt, "hostile-trap", "null").unwrap();
    let out = assert_contained(&mut chain, "hostile-trap");
    let message = &out.failures[0].message;
    assert!(message.starts_with("panicked"), "{message}");
    assert!(
        message.contains("deliberate failure on a batch of 2"),
        "{message}"
    );
}

#[test]
fn bare_trap_is_contained() {
    let rt = runtime();
    let mut chain = chain_with(&rt, "hostile-trap", r#"{"mode":"unreachable"}"#).unwrap();
    let out = assert_contained(&mut chain, "hostile-trap");
    assert!(
        out.failures[0].message.starts_with("trapped"),
        "{}",
        out.failures[0].message
    );
}

#[test]
fn bad_config_error_text_surfaces() {
    let rt = runtime();
    let err = chain_with(&rt, "hostile-config", r#"{"threshold":-1}"#).unwrap_err();
    match err {
        ChainError::Configure { plugin, message } => {
            assert_eq!(plugin, "hostile-config");
            assert_eq!(
                message,
                r#"hostile-config: `threshold` must be a positive number (got config {"threshold":-1})"#
            );
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn sandbox_escapes_trap() {
    let rt = runtime();
    for attempt in ["file", "env", "clock"] {
        let config = format!(r#"{{"try":"{attempt}"}}"#);
        let mut chain = chain_with(&rt, "hostile-escape", &config).unwrap();
        let out = assert_contained(&mut chain, "hostile-escape");
        let message = &out.failures[0].message;
        assert!(message.contains("unknown import"), "{attempt}: {message}");
        assert!(
            out.kept.iter().all(|k| k.message.is_none()),
            "{attempt}: nothing leaked"
        );
    }
}

#[test]
fn a_failing_plugin_does_not_affect_other_chains() {
    let rt = runtime();
    let mut bad = chain_with(&rt, "hostile-trap", "null").unwrap();
    let mut good = chain_with(&rt, "template", r#"{"contains":"me"}"#).unwrap();
    assert_eq!(bad.apply(&lines()).failures.len(), 1);
    let out = good.apply(&lines());
    assert!(out.failures.is_empty());
    assert_eq!(out.kept.len(), 1);
}
