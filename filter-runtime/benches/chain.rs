//! Records/s through the built-in chain (level → source → pattern) as WebAssembly components,
//! against the same filtering done natively in-process with the same regex, and against a
//! JSON-per-batch component ABI (`plugins/bench-json`, built on the fly; skipped if that fails).
//!
//! Input: 10 000 records, ~90–190-byte messages (avg ≈ 120), 10 % matching the pattern; the
//! level and source filters keep everything, so every stage sees every record (worst case).
//! Records go through in slices of `BATCH` as the agent feeds them. The set fits in cache, as a
//! batch the agent has just read does; with 100 000 records (~35 MB, cold) every variant pays
//! cache misses on each record's heap strings (native ≈ 50 ns/record, WASM chain ≈ 200).
//!
//!   cargo bench -p logfleet-filter-runtime --bench chain

use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logfleet_filter_runtime::{Runtime, RuntimeConfig};
use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, Level, PluginRef};

/// Records in the data set: small enough to stay in cache, like a freshly read batch.
const RECORDS: usize = 10_000;
/// Records per `Chain::apply` call.
const BATCH: usize = 1024;
/// The session pattern; matches the 10 % of lines that carry "upstream timed out".
const PATTERN: &str = r"upstream (timed out|reset) \(\d+:";

/// Deterministic synthetic nginx/api-like lines.
fn records() -> Vec<Record> {
    let sources = ["nginx", "api", "worker"];
    let levels = [Level::Info, Level::Warn, Level::Error];
    let mut rng = fastrand::Rng::with_seed(7);
    (0..RECORDS)
        .map(|i| {
            let message = if i % 10 == 0 {
                format!(
                    "upstream timed out (110: Connection timed out) while reading response header from upstream, client: 10.0.{}.{}, request: \"GET /api/v1/items/{} HTTP/1.1\"",
                    rng.u8(..),
                    rng.u8(..),
                    rng.u32(..100_000)
                )
            } else {
                let pad = "x".repeat(rng.usize(20..80));
                format!(
                    "GET /api/v1/items/{} 200 {}ms user={} trace={:016x} {pad}",
                    rng.u32(..100_000),
                    rng.u32(..500),
                    rng.u32(..10_000),
                    rng.u64(..)
                )
            };
            Record {
                seq: i as u64,
                timestamp_ms: 1_700_000_000_000 + i as i64,
                level: levels[i % levels.len()],
                source: sources[i % sources.len()].to_owned(),
                file: format!("/var/log/{}.log", sources[i % sources.len()]),
                line: i as u64 + 1,
                message,
                event_ms: None,
                fields: None,
                raw: None,
            }
        })
        .collect()
}

fn filters(level: bool, source: bool, pattern: bool) -> Filters {
    Filters {
        levels: if level {
            vec![Level::Info, Level::Warn, Level::Error]
        } else {
            vec![]
        },
        sources: if source {
            vec!["nginx".into(), "api".into(), "worker".into()]
        } else {
            vec![]
        },
        pattern: pattern.then(|| PATTERN.into()),
        plugins: vec![],
    }
}

fn no_plugins(_: &PluginRef) -> Option<Vec<u8>> {
    None
}

fn bench(c: &mut Criterion) {
    let records = records();
    let avg = records.iter().map(|r| r.message.len()).sum::<usize>() / records.len();
    let matching = logfleet_protocol::filters::compile_pattern(PATTERN).expect("pattern");
    let expected = records
        .iter()
        .filter(|r| matching.is_match(&r.message))
        .count();
    eprintln!("{RECORDS} records, avg message {avg} bytes, {expected} match");

    // Plugins (the `_before` variants) get the built-ins' deadline: on a loaded machine a
    // batch can take over the 100 ms plugin default, which would end the chain mid-bench.
    let runtime = Runtime::new(RuntimeConfig {
        call_deadline: logfleet_filter_runtime::config::DEFAULT_BUILTIN_CALL_DEADLINE,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);

    for (name, level, source, pattern) in [
        ("wasm_level_source_pattern", true, true, true),
        ("wasm_pattern_only", false, false, true),
        ("wasm_level_only", true, false, false),
        ("wasm_source_only", false, true, false),
    ] {
        let mut chain = runtime
            .chain(&filters(level, source, pattern), &no_plugins)
            .expect("chain");
        let kept: usize = records
            .chunks(BATCH)
            .map(|b| chain.apply(b).kept.len())
            .sum();
        assert_eq!(kept, if pattern { expected } else { RECORDS }, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut kept = 0;
                for batch in records.chunks(BATCH) {
                    kept += chain.apply(black_box(batch)).kept.len();
                }
                kept
            })
        });
    }

    // The same decisions natively: what the chain would cost without WebAssembly.
    let levels = [Level::Info, Level::Warn, Level::Error];
    let sources = ["nginx", "api", "worker"];
    let regex = logfleet_protocol::filters::compile_pattern(PATTERN).expect("pattern");
    group.bench_function("native_level_source_pattern", |b| {
        b.iter(|| {
            let mut kept = 0;
            for batch in records.chunks(BATCH) {
                kept += black_box(batch)
                    .iter()
                    .filter(|r| {
                        levels.contains(&r.level)
                            && sources.contains(&r.source.as_str())
                            && regex.is_match(&r.message)
                    })
                    .count();
            }
            kept
        })
    });

    // The same decisions natively, searching each batch's survivors as one text with one
    // regex pass (matches spanning records re-checked alone; sound for patterns without
    // look-around, as this one). A candidate algorithm for the `pattern` built-in (issue 15):
    // it is much faster natively, but built into the guest it measured no faster (BENCHMARKS).
    group.bench_function("native_level_source_pattern_one_pass", |b| {
        let mut text = String::new();
        let mut ends: Vec<usize> = Vec::new();
        b.iter(|| {
            let mut kept = 0;
            for batch in records.chunks(BATCH) {
                text.clear();
                ends.clear();
                for r in black_box(batch) {
                    if levels.contains(&r.level) && sources.contains(&r.source.as_str()) {
                        text.push_str(&r.message);
                        ends.push(text.len());
                    }
                }
                kept += one_pass_matches(&regex, &text, &ends);
            }
            kept
        })
    });

    // The chain with another build of the `pattern` filter, run as a plugin from the
    // component at $LOGFLEET_BENCH_BEFORE_PATTERN (e.g. the built-in as of an earlier commit):
    // before/after in the same run.
    if let Some(path) = std::env::var_os("LOGFLEET_BENCH_BEFORE_PATTERN") {
        let bytes = std::fs::read(&path).expect("LOGFLEET_BENCH_BEFORE_PATTERN");
        let plugin = PluginRef {
            name: "pattern-before".into(),
            config: serde_json::json!({ "pattern": PATTERN }).to_string(),
            digest: logfleet_filter_runtime::digest(&bytes),
        };
        let with_plugin = |level: bool, source: bool| Filters {
            plugins: vec![plugin.clone()],
            ..filters(level, source, false)
        };
        let source = move |_: &PluginRef| Some(bytes.clone());
        for (name, level, source_filter) in [
            ("wasm_level_source_pattern_before", true, true),
            ("wasm_pattern_only_before", false, false),
        ] {
            let mut chain = runtime
                .chain(&with_plugin(level, source_filter), &source)
                .expect("chain");
            let kept: usize = records
                .chunks(BATCH)
                .map(|b| chain.apply(b).kept.len())
                .sum();
            assert_eq!(kept, expected, "{name}");
            group.bench_function(name, |b| {
                b.iter(|| {
                    let mut kept = 0;
                    for batch in records.chunks(BATCH) {
                        kept += chain.apply(black_box(batch)).kept.len();
                    }
                    kept
                })
            });
            assert_eq!(
                chain.failed(),
                None,
                "{name}: a failed chain measures nothing"
            );
        }
    }

    match json::Baseline::new() {
        Ok(mut baseline) => {
            assert_eq!(baseline.kept(&records), expected, "json baseline");
            group.bench_function("wasm_json_per_batch_level_source_pattern", |b| {
                b.iter(|| baseline.kept(black_box(&records)))
            });
        }
        Err(e) => eprintln!("skipping the JSON-per-batch baseline: {e}"),
    }
    group.finish();
}

/// Records of `text` (split at `ends`) that `regex` (no look-around) matches, found with one
/// pass over `text`; see `native_level_source_pattern_one_pass`.
fn one_pass_matches(regex: &regex::Regex, text: &str, ends: &[usize]) -> usize {
    let mut kept = 0;
    let mut record = 0;
    let mut from = 0;
    while let Some(found) = regex.find_at(text, from) {
        while record < ends.len() && ends[record] <= found.start() {
            record += 1;
        }
        let Some(&end) = ends.get(record) else {
            break;
        };
        let start = if record == 0 { 0 } else { ends[record - 1] };
        if found.end() <= end || regex.is_match(&text[start..end]) {
            kept += 1;
        }
        record += 1;
        from = end;
    }
    kept
}

/// The JSON-per-batch baseline: the host serialises each batch of records to one JSON
/// document, the guest parses it and answers a keep flag per record.
mod json {
    use super::*;
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine, Store};

    wasmtime::component::bindgen!({
        inline: "
            package bench:json;

            world json-filter {
                export configure: func(config: string) -> result<_, string>;
                export filter-json: func(batch: string) -> list<u8>;
            }
        ",
    });

    /// One configured instance of `plugins/bench-json`, set up like the real runtime
    /// (epoch interruption on, no concurrency support, unknown imports trap).
    pub struct Baseline {
        store: Store<()>,
        filter: JsonFilter,
    }

    impl Baseline {
        pub fn new() -> Result<Baseline, String> {
            let bytes = build()?;
            let mut config = Config::new();
            config.epoch_interruption(true).concurrency_support(false);
            let engine = Engine::new(&config).map_err(|e| e.to_string())?;
            let component = Component::new(&engine, &bytes).map_err(|e| e.to_string())?;
            let mut linker = Linker::new(&engine);
            for (name, _) in component.component_type().imports(&engine) {
                if name.starts_with("wasi:random/insecure-seed@") {
                    linker
                        .instance(name)
                        .and_then(|mut i| {
                            i.func_wrap("insecure-seed", |_, (): ()| Ok(((1u64, 2u64),)))
                        })
                        .map_err(|e| e.to_string())?;
                }
            }
            linker
                .define_unknown_imports_as_traps(&component)
                .map_err(|e| e.to_string())?;
            let mut store = Store::new(&engine, ());
            // No ticker runs: the deadline is never reached, but its checks are paid as in
            // the real runtime.
            store.set_epoch_deadline(u64::MAX / 2);
            let filter = JsonFilter::instantiate(&mut store, &component, &linker)
                .map_err(|e| e.to_string())?;
            let config = serde_json::json!({
                "levels": ["INFO", "WARN", "ERROR"],
                "sources": ["nginx", "api", "worker"],
                "pattern": PATTERN,
            });
            filter
                .call_configure(&mut store, &config.to_string())
                .map_err(|e| e.to_string())??;
            Ok(Baseline { store, filter })
        }

        pub fn kept(&mut self, records: &[Record]) -> usize {
            let mut kept = 0;
            for batch in records.chunks(BATCH) {
                let json = serde_json::to_string(batch).expect("records serialise");
                let flags = self
                    .filter
                    .call_filter_json(&mut self.store, &json)
                    .expect("json filter call");
                kept += flags.iter().filter(|f| **f != 0).count();
            }
            kept
        }
    }

    /// Builds `plugins/bench-json` and returns its component bytes.
    fn build() -> Result<Vec<u8>, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let mut command = Command::new(env!("CARGO"));
        command.current_dir(&dir).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "bench-json",
        ]);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || k == "RUSTFLAGS"
                || k.starts_with("RUSTC_")
            {
                command.env_remove(&key);
            }
        }
        let status = command.status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("building plugins/bench-json failed ({status})"));
        }
        std::fs::read(dir.join("target/wasm32-wasip2/release/bench_json.wasm"))
            .map_err(|e| e.to_string())
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
