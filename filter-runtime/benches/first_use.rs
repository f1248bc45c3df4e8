//! First use of a plugin on a machine that never compiled it: time from asking for a
//! session's chain to its first batch filtered, with and without the fast tier, and (fast
//! tier) until the chain runs the optimised code. Each round starts from an empty cache;
//! the two modes alternate so machine noise hits both alike. Prints medians.
//!
//!   cargo bench -p logfleet-filter-runtime --bench first_use -- [ROUNDS] [PLUGIN|FILE.wasm]...
//!
//! Plugins are crates of `plugins/`, built there first (default: `redact`, the 1.2 MB regex
//! plugin), or paths of components built elsewhere (a JavaScript or Python component).

use std::time::{Duration, Instant};

use logfleet_filter_runtime::{Runtime, RuntimeConfig, Tier};
use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, Level, PluginRef};

/// Longest wait for the background compile before the round is reported as not switched.
const SWITCH_DEADLINE: Duration = Duration::from_secs(300);

fn record(i: usize) -> Record {
    Record {
        seq: i as u64,
        timestamp_ms: 1_700_000_000_000,
        level: Level::Info,
        source: "app".into(),
        file: "/var/log/app.log".into(),
        line: i as u64 + 1,
        message: format!("login failed for user{i}@example.com from 10.0.0.{i}"),
        event_ms: None,
        fields: None,
        raw: None,
    }
}

/// Seconds from asking for the chain to the first batch filtered, and (fast tier) to the
/// first batch filtered by optimised code.
fn round(bytes: &[u8], name: &str, fast_tier: bool) -> (f64, Option<f64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        fast_tier,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let plugin = PluginRef {
        name: name.to_owned(),
        config: "{}".into(),
        digest: logfleet_filter_runtime::digest(bytes),
    };
    let filters = Filters {
        plugins: vec![plugin],
        ..Filters::default()
    };
    let batch: Vec<Record> = (0..64).map(record).collect();
    let source = |_: &PluginRef| Some(bytes.to_vec());
    let started = Instant::now();
    let mut chain = match runtime.chain(&filters, &source) {
        Ok(chain) => chain,
        Err(e) => {
            // Components needing more WASI than the runtime gives (issue 15 item 2) compile,
            // then fail to start: the time is still the compile, reported as such.
            eprintln!(
                "  {name}: did not start after {:.0} ms: {e}",
                started.elapsed().as_secs_f64() * 1000.0
            );
            return (started.elapsed().as_secs_f64(), None);
        }
    };
    chain.apply(&batch);
    let first = started.elapsed().as_secs_f64();
    if !fast_tier {
        return (first, None);
    }
    loop {
        let optimized = chain.tiers().all(|(_, tier)| tier == Tier::Optimized);
        chain.apply(&batch);
        if optimized {
            return (first, Some(started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > SWITCH_DEADLINE {
            return (first, None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{:.0}", s * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut plugins: Vec<String> = args.iter().skip(1).cloned().collect();
    if plugins.is_empty() {
        plugins.push("redact".into());
    }
    for plugin in plugins {
        let (name, bytes) = if plugin.ends_with(".wasm") {
            (
                plugin.clone(),
                std::fs::read(&plugin).expect("component file"),
            )
        } else {
            // Built by `cargo build --release --target wasm32-wasip2` in `plugins/`.
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/target/wasm32-wasip2/release")
                .join(format!("{}.wasm", plugin.replace('-', "_")));
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; build plugins/ first", path.display()));
            (plugin.clone(), bytes)
        };
        let (mut slow, mut fast, mut switched) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            slow.push(round(&bytes, &name, false).0);
            let (first, optimized) = round(&bytes, &name, true);
            fast.push(first);
            if let Some(s) = optimized {
                switched.push(s);
            }
        }
        println!(
            "{name} ({} bytes), {rounds} rounds, ms to first batch filtered:",
            bytes.len()
        );
        println!(
            "  optimising only (Cranelift): median {:.0}  [{}]",
            median(slow.clone()) * 1000.0,
            ms(&slow)
        );
        println!(
            "  fast tier (Winch first):     median {:.0}  [{}]",
            median(fast.clone()) * 1000.0,
            ms(&fast)
        );
        if !switched.is_empty() {
            println!(
                "  fast tier, until optimised code runs: median {:.0}  [{}]",
                median(switched.clone()) * 1000.0,
                ms(&switched)
            );
        }
    }
}
