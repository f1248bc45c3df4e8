//! The fast tier: a plugin never compiled on this machine starts on baseline (Winch) code,
//! the optimised (Cranelift) code is compiled in the background, and running chains switch
//! to it between batches with the same verdicts; the sandbox holds on baseline code.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

mod common;

use std::time::{Duration, Instant};

use logfleet_filter_runtime::{Chain, ChainError, Runtime, RuntimeConfig, Tier};
use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, Level, PluginRef};

/// Longest a background compile may take in a test before it counts as never finishing.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(300);

fn fast_runtime(cache: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        call_deadline: Duration::from_millis(50),
        memory_limit: 32 << 20,
        fast_tier: true,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn redact() -> (PluginRef, Vec<u8>) {
    common::plugin("redact", "{}")
}

fn filters(plugin: &PluginRef) -> Filters {
    Filters {
        levels: vec![Level::Info, Level::Error],
        plugins: vec![plugin.clone()],
        ..Filters::default()
    }
}

/// A batch where some records carry what `redact` rewrites and some are dropped by level.
fn batch(round: usize) -> Vec<Record> {
    (0..64)
        .map(|i| {
            let level = if i % 5 == 0 {
                Level::Debug
            } else {
                Level::Error
            };
            let message = if i % 3 == 0 {
                format!("login failed for user{round}x{i}@example.com from 10.0.{round}.{i}")
            } else {
                format!("request {round}/{i} served")
            };
            common::record(level, "api", &message)
        })
        .collect()
}

/// Waits until the optimised artifact of `digest` is on disk under `dir`: it is written just
/// after chains can switch to the code, so it may lag the switch a little.
fn wait_for_optimised_artifact(dir: &std::path::Path, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(dir).unwrap().any(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.starts_with(hex) && name.ends_with(".cwasm") && !name.ends_with(".winch.cwasm")
        });
        if found {
            return;
        }
        assert!(
            started.elapsed() < UPGRADE_DEADLINE,
            "no optimised artifact"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn plugin_tier(chain: &Chain) -> Tier {
    chain
        .tiers()
        .find(|(name, _)| *name == "redact")
        .map(|(_, tier)| tier)
        .unwrap()
}

/// A never-compiled plugin starts on baseline code; once the background compile is done the
/// chain runs optimised code, and every batch before, across and after the switch gets
/// exactly the verdicts and rewrites the optimised-only runtime gives.
#[test]
fn chain_starts_on_baseline_and_switches_between_batches_with_same_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, bytes) = redact();
    let source = move |_: &PluginRef| Some(bytes.clone());
    let fast = fast_runtime(dir.path());
    let mut chain = fast.chain(&filters(&plugin), &source).unwrap();
    assert_eq!(plugin_tier(&chain), Tier::Baseline);
    assert_eq!(fast.cache_stats().compiled_baseline, 1);

    let reference = common::runtime();
    let mut expected_chain = reference.chain(&filters(&plugin), &source).unwrap();

    let started = Instant::now();
    let mut round = 0;
    let mut batches_on_baseline = 0;
    loop {
        let was = plugin_tier(&chain);
        let records = batch(round);
        let out = chain.apply(&records);
        assert_eq!(out, expected_chain.apply(&records), "round {round}");
        assert!(out.failure.is_none());
        if was == Tier::Baseline {
            batches_on_baseline += 1;
        }
        round += 1;
        if was == Tier::Optimized {
            break;
        }
        assert!(
            started.elapsed() < UPGRADE_DEADLINE,
            "never switched to optimised code"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(batches_on_baseline >= 1);
    // A few more after the switch.
    for _ in 0..3 {
        let records = batch(round);
        assert_eq!(chain.apply(&records), expected_chain.apply(&records));
        round += 1;
    }

    // Both tiers' artifacts are on disk, as different entries.
    wait_for_optimised_artifact(dir.path(), &plugin.digest);
    let artifacts: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            name.starts_with(plugin.digest.trim_start_matches("sha256:"))
                && name.ends_with(".cwasm")
        })
        .collect();
    assert_eq!(artifacts.len(), 2, "{artifacts:?}");
    assert_eq!(
        artifacts
            .iter()
            .filter(|a| a.ends_with(".winch.cwasm"))
            .count(),
        1,
        "{artifacts:?}"
    );
}

/// Once a plugin's optimised code exists, later sessions start on it directly, and so does a
/// restarted process (from the disk cache), without compiling anything.
#[test]
fn later_sessions_and_restarts_start_on_optimised_code() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, bytes) = redact();
    let source = move |_: &PluginRef| Some(bytes.clone());
    let fast = fast_runtime(dir.path());
    let mut first = fast.chain(&filters(&plugin), &source).unwrap();
    let started = Instant::now();
    while plugin_tier(&first) == Tier::Baseline {
        assert!(started.elapsed() < UPGRADE_DEADLINE, "never switched");
        first.apply(&batch(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = fast.chain(&filters(&plugin), &source).unwrap();
    assert_eq!(plugin_tier(&second), Tier::Optimized);
    wait_for_optimised_artifact(dir.path(), &plugin.digest);
    drop((first, second, fast));

    let restarted = fast_runtime(dir.path());
    let chain = restarted.chain(&filters(&plugin), &source).unwrap();
    assert_eq!(plugin_tier(&chain), Tier::Optimized);
    let stats = restarted.cache_stats();
    assert_eq!(
        (stats.compiled, stats.compiled_baseline),
        (0, 0),
        "{stats:?}"
    );
}

/// Built-ins never run baseline code, with or without the fast tier.
#[test]
fn builtins_run_optimised_code() {
    let dir = tempfile::tempdir().unwrap();
    let fast = fast_runtime(dir.path());
    let chain = fast
        .chain(
            &Filters {
                levels: vec![Level::Error],
                sources: vec!["api".into()],
                pattern: Some("x".into()),
                ..Filters::default()
            },
            &|_: &PluginRef| None,
        )
        .unwrap();
    assert!(chain.tiers().all(|(_, tier)| tier == Tier::Optimized));
}

/// The CPU deadline stops a plugin looping on baseline code (Winch emits the same epoch
/// checks as Cranelift): a plugin spinning in `configure`, which always runs on the code the
/// session starts with, fails the chain build with a deadline error.
#[test]
fn deadline_stops_a_loop_on_baseline_code() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, bytes) = common::plugin("hostile-loop", r#"{"in":"configure"}"#);
    let fast = fast_runtime(dir.path());
    let err = fast
        .chain(
            &common::with_plugins(vec![plugin]),
            &move |_: &PluginRef| Some(bytes.clone()),
        )
        .unwrap_err();
    assert_eq!(fast.cache_stats().compiled_baseline, 1);
    assert!(
        matches!(&err, ChainError::Startup { message, .. } if message.contains("deadline")),
        "{err}"
    );
}
