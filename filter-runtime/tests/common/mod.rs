//! Shared helpers for the runtime's integration tests: records, runtimes, and the example and
//! hostile plugins from `plugins/`, built once per test binary.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use logfleet_filter_runtime::{Runtime, RuntimeConfig};
use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, Level, PluginRef};

/// A record with the fields the built-ins look at; the rest fixed.
pub fn record(level: Level, source: &str, message: &str) -> Record {
    Record {
        seq: 0,
        timestamp_ms: 1_700_000_000_000,
        level,
        source: source.to_owned(),
        file: format!("/var/log/{source}.log"),
        line: 1,
        message: message.to_owned(),
        event_ms: None,
        fields: None,
        raw: None,
    }
}

/// A runtime with short deadlines so hostile-plugin tests finish quickly, sharing one disk
/// cache across tests and runs so components compile once.
pub fn runtime() -> Runtime {
    runtime_with_deadline(Duration::from_millis(50))
}

/// Like [`runtime`], with another per-call deadline.
pub fn runtime_with_deadline(call_deadline: Duration) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("filter-cache")),
        call_deadline,
        memory_limit: 32 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

pub use testkit::plugin_bytes;

/// A `PluginRef` for plugin crate `name` with `config`, digest filled in like the host does.
pub fn plugin(name: &str, config: &str) -> (PluginRef, Vec<u8>) {
    let bytes = plugin_bytes(name);
    let plugin = PluginRef {
        name: name.to_owned(),
        config: config.to_owned(),
        digest: logfleet_filter_runtime::digest(&bytes),
    };
    (plugin, bytes)
}

/// Filters with only the given plugins.
pub fn with_plugins(plugins: Vec<PluginRef>) -> Filters {
    Filters {
        plugins,
        ..Filters::default()
    }
}
