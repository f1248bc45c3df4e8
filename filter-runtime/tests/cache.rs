//! The disk cache of compiled components: a second runtime (a restarted agent) loads what the
//! first compiled instead of compiling again.

mod common;

use logfleet_filter_runtime::{CacheStats, Runtime, RuntimeConfig};
use logfleet_protocol::{Filters, Level, PluginRef};

fn no_plugins(_: &PluginRef) -> Option<Vec<u8>> {
    None
}

fn filters() -> Filters {
    Filters {
        levels: vec![Level::Error],
        pattern: Some("x".into()),
        ..Filters::default()
    }
}

#[test]
fn second_runtime_loads_from_disk_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    };

    let first = Runtime::new(config.clone()).unwrap();
    first.chain(&filters(), &no_plugins).unwrap();
    first.chain(&filters(), &no_plugins).unwrap();
    assert_eq!(
        first.cache_stats(),
        CacheStats {
            compiled: 2,
            loaded_from_disk: 0,
            reused_in_memory: 2,
            compiled_baseline: 0,
        }
    );
    let artifacts: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(artifacts.len(), 2, "{artifacts:?}");
    assert!(
        artifacts.iter().all(|a| a.ends_with(".cwasm")),
        "no temp files left: {artifacts:?}"
    );
    drop(first);

    let second = Runtime::new(config).unwrap();
    let mut chain = second.chain(&filters(), &no_plugins).unwrap();
    assert_eq!(
        second.cache_stats(),
        CacheStats {
            compiled: 0,
            loaded_from_disk: 2,
            reused_in_memory: 0,
            compiled_baseline: 0,
        }
    );
    let out = chain.apply(&[common::record(Level::Error, "s", "xyz")]);
    assert_eq!(out.kept.len(), 1);
}

#[test]
fn corrupt_artifacts_are_discarded_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let only_level = Filters {
        levels: vec![Level::Error],
        ..Filters::default()
    };
    Runtime::new(config.clone())
        .unwrap()
        .chain(&only_level, &no_plugins)
        .unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not an artifact").unwrap();
    }
    let rt = Runtime::new(config).unwrap();
    rt.chain(&only_level, &no_plugins).unwrap();
    assert_eq!(rt.cache_stats().compiled, 1);
}

/// A validated upload is cached: checking its config at session start (the host) compiles
/// nothing, and a config the plugin refuses comes back with the plugin's own message.
#[test]
fn validated_uploads_are_checked_at_start_without_compiling() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let (template, bytes) = common::plugin("template", r#"{"contains":"x"}"#);
    rt.validate(&bytes).unwrap();
    let compiled = rt.cache_stats().compiled;
    rt.check_plugins(std::slice::from_ref(&template), &no_plugins)
        .unwrap();
    assert_eq!(rt.cache_stats().compiled, compiled, "no recompile");

    let (refusing, bytes) = common::plugin("hostile-config", r#"{"threshold":-1}"#);
    rt.validate(&bytes).unwrap();
    let err = rt
        .check_plugins(&[template, refusing], &no_plugins)
        .unwrap_err();
    assert_eq!(err.plugin(), "hostile-config");
    assert!(
        err.to_string().contains("must be a positive number"),
        "{err}"
    );
}
