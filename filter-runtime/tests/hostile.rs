//! Plugins that misbehave on purpose: each is contained to its chain, reported once, and the
//! chain fails closed: no record passes a filter that did not decide about it. Other chains
//! carry on.

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

/// Runs two batches: the first must report exactly one failure of `plugin` and keep nothing,
/// counting both records as undecided; the second must not report it again and keep nothing.
fn assert_fails_closed(chain: &mut Chain, plugin: &str) -> ChainOutput {
    let first = chain.apply(&lines());
    assert_eq!(
        first.failure.as_ref().map(|f| f.plugin.as_str()),
        Some(plugin),
        "{first:?}"
    );
    assert!(first.kept.is_empty(), "nothing passes a failed filter");
    assert_eq!(first.undecided, 2);
    assert_eq!(chain.failed(), Some(plugin));
    let second = chain.apply(&lines());
    assert!(second.failure.is_none(), "reported once only");
    assert!(second.kept.is_empty(), "a failed chain keeps nothing");
    assert_eq!(second.undecided, 2);
    first
}

/// The message of the failure `out` reports.
fn failure_message(out: &ChainOutput) -> &str {
    out.failure.as_ref().map_or("", |f| f.message.as_str())
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let rt = runtime();
    let mut chain = chain_with(&rt, "hostile-loop", "null").unwrap();
    let started = Instant::now();
    let out = assert_fails_closed(&mut chain, "hostile-loop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(failure_message(&out).contains("deadline"), "{out:?}");
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
    let out = assert_fails_closed(&mut chain, "hostile-memory");
    assert!(failure_message(&out).contains("memory limit"), "{out:?}");
}

#[test]
fn panic_message_surfaces() {
    let rt = runtime();
    let mut chain = chain_with(&rt, "hostile-trap", "null").unwrap();
    let out = assert_fails_closed(&mut chain, "hostile-trap");
    let message = failure_message(&out);
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
    let out = assert_fails_closed(&mut chain, "hostile-trap");
    assert!(failure_message(&out).starts_with("trapped"), "{out:?}");
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

/// The message the first record of a one-record batch comes out with from a chain of `name`
/// alone (with `config`); the chain must not fail.
fn rewritten_by(rt: &Runtime, name: &str, config: &str) -> (Chain, String) {
    let (only, bytes) = plugin(name, config);
    let mut chain = rt
        .chain(&with_plugins(vec![only]), &move |_: &PluginRef| {
            Some(bytes.clone())
        })
        .expect("the chain builds");
    let out = chain.apply(&[record(Level::Info, "app", "bait")]);
    assert!(out.failure.is_none(), "{out:?}");
    let message = out.kept[0].message.clone().expect("rewritten");
    (chain, message)
}

/// A plugin reaching for a file or the environment gets nothing (an error, an empty
/// environment) rather than the host's; the clock it reads is coarse (whole milliseconds).
/// Its chain keeps running.
#[test]
fn sandbox_escapes_get_nothing() {
    let rt = runtime();
    let (mut chain, file) = rewritten_by(&rt, "hostile-escape", r#"{"try":"file"}"#);
    assert!(!file.contains("root:") && !file.is_empty(), "{file}");
    assert!(
        chain.apply(&lines()).failure.is_none(),
        "the chain carries on"
    );
    let (_, env) = rewritten_by(&rt, "hostile-escape", r#"{"try":"env"}"#);
    assert_eq!(env, "");
    let (_, clock) = rewritten_by(&rt, "hostile-escape", r#"{"try":"clock"}"#);
    let nanos: u64 = clock
        .split("tv_nsec: ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(" }").parse().ok())
        .unwrap_or_else(|| panic!("{clock}"));
    assert_eq!(nanos % 1_000_000, 0, "{clock}");
}

/// A component knocking on every WASI door — open and list files, connect to a listening TCP
/// port, read the environment, arguments and stdin, flood stdout — is denied each (or gets
/// nothing), nothing reaches the port, and its chain carries on.
#[test]
fn every_wasi_door_is_shut() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let config = format!(
        r#"{{"connect":"{}","print":1000}}"#,
        listener.local_addr().unwrap()
    );
    let rt = runtime();
    let (mut chain, report) = rewritten_by(&rt, "hostile-wasi", &config);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let cwd = std::env::current_dir().unwrap().display().to_string();
    assert_ne!(
        report["cwd"],
        cwd.as_str(),
        "the host's working directory stays hidden"
    );
    for door in ["file", "dir", "connect"] {
        let got = report[door].as_str().unwrap();
        assert!(got.starts_with("denied: "), "{door}: {got}");
    }
    assert_eq!(report["env"], serde_json::json!([]), "{report}");
    assert_eq!(report["args"], serde_json::json!([]), "{report}");
    assert_eq!(report["stdin"], "0 bytes", "{report}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may reach the port"
    );
    let out = chain.apply(&lines());
    assert!(out.failure.is_none(), "{out:?}");
    assert_eq!(
        out.kept.len(),
        2,
        "the plugin keeps running and keeps everything"
    );
}

/// A plugin that blocks inside a WASI call (sleeping on a clock pollable for an hour) is
/// stopped at its CPU deadline like one that loops: no host call holds a session past it,
/// and the chain fails closed.
#[test]
fn blocking_in_a_wasi_call_hits_the_deadline() {
    let rt = runtime();
    let mut chain = chain_with(&rt, "hostile-wasi", r#"{"sleep_secs":3600}"#).unwrap();
    // On its own thread, so a hang fails this test instead of stalling the suite.
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let out = assert_fails_closed(&mut chain, "hostile-wasi");
        let _ = done.send((out, started.elapsed()));
    });
    let (out, took) = outcome
        .recv_timeout(Duration::from_secs(20))
        .expect("a guest blocked in a WASI call for an hour was not stopped");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(failure_message(&out).contains("deadline"), "{out:?}");
}

#[test]
fn a_failing_plugin_does_not_affect_other_chains() {
    let rt = runtime();
    let mut bad = chain_with(&rt, "hostile-trap", "null").unwrap();
    let mut good = chain_with(&rt, "template", r#"{"contains":"me"}"#).unwrap();
    assert!(bad.apply(&lines()).failure.is_some());
    let out = good.apply(&lines());
    assert!(out.failure.is_none());
    assert_eq!(out.kept.len(), 1);
}

/// A chain of `template` keeping lines with "keep", then `hostile-trap` failing the batch that
/// holds "boom".
fn keep_then_trap(rt: &Runtime) -> Chain {
    let (good, good_bytes) = plugin("template", r#"{"contains":"keep"}"#);
    let (bad, bad_bytes) = plugin("hostile-trap", r#"{"on":"boom"}"#);
    let source = move |p: &PluginRef| {
        Some(if p.name == "template" {
            good_bytes.clone()
        } else {
            bad_bytes.clone()
        })
    };
    rt.chain(&with_plugins(vec![good, bad]), &source)
        .expect("the chain builds")
}

/// Records every filter decided about pass until a filter fails; then nothing of that call or
/// later ones passes, and exactly the records no filter rejected are counted as undecided.
#[test]
fn a_failing_filter_passes_nothing_it_did_not_decide() {
    let rt = runtime();
    let mut chain = keep_then_trap(&rt);
    let before = [
        record(Level::Info, "app", "keep a"),
        record(Level::Info, "app", "drop b"),
    ];
    let out = chain.apply(&before);
    assert_eq!(out.kept.iter().map(|k| k.index).collect::<Vec<_>>(), [0]);
    assert_eq!((out.failure, out.undecided), (None, 0));

    let during = [
        record(Level::Info, "app", "keep c"),
        record(Level::Info, "app", "drop d"),
        record(Level::Info, "app", "keep boom"),
    ];
    let out = chain.apply(&during);
    assert!(out.kept.is_empty(), "{out:?}");
    assert_eq!(
        out.failure.as_ref().map(|f| f.plugin.as_str()),
        Some("hostile-trap")
    );
    assert_eq!(
        out.undecided, 2,
        "\"drop d\" was decided: the template rejected it"
    );

    let out = chain.apply(&before);
    assert!(out.kept.is_empty() && out.failure.is_none());
    assert_eq!(out.undecided, 2);
}

/// A filter that fails on a later sub-batch of a large call (over 4096 records) has already
/// kept the earlier sub-batches; later filters never saw them, so they do not pass either.
#[test]
fn records_kept_before_a_failure_in_the_same_call_do_not_pass() {
    let rt = runtime();
    let (bad, bad_bytes) = plugin("hostile-trap", r#"{"on":"boom"}"#);
    let (good, good_bytes) = plugin("template", r#"{"contains":"keep"}"#);
    let source = move |p: &PluginRef| {
        Some(if p.name == "template" {
            good_bytes.clone()
        } else {
            bad_bytes.clone()
        })
    };
    let mut chain = rt.chain(&with_plugins(vec![bad, good]), &source).unwrap();
    let mut records: Vec<Record> = (0..5000)
        .map(|i| record(Level::Info, "app", &format!("keep {i}")))
        .collect();
    records.push(record(Level::Info, "app", "keep boom"));
    let out = chain.apply(&records);
    assert!(out.kept.is_empty(), "{} records leaked", out.kept.len());
    assert!(out.failure.is_some());
    assert_eq!(out.undecided, 5001);
}
