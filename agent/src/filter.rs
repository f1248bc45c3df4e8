//! Session filter chains: which records a session keeps.
//!
//! Every filter runs as a WebAssembly component in [`logfleet_filter_runtime`]: the built-in
//! `level`, `source` and `pattern` filters and user plugins alike; there is no native
//! filtering path. This module adapts the runtime to sessions:
//!
//! - [`FilterChain`]: what a session applies to each batch — the runtime's [`Chain`], or
//!   [`RejectAll`] when a built-in cannot start.
//! - [`ChainBuilder`]: the runtime with the agent's bounds and plugin store; builds a
//!   session's chain, leaving out (and reporting) plugins that cannot start.
//!
//! The chain's output types ([`Kept`], [`ChainOutput`], [`FilterFailure`]) are the runtime's.
//! Fetching plugins the agent lacks before a build is [`crate::loader`]'s job.

use std::path::Path;
use std::sync::Arc;

use logfleet_protocol::Filters;
use logfleet_protocol::agent::Record;
use tracing::{error, warn};

pub use logfleet_filter_runtime::{
    Builtin, Chain, ChainError, ChainOutput, FilterFailure, Kept, Runtime, RuntimeConfig,
    RuntimeError,
};

use crate::plugins::PluginStore;

/// Subdirectory of the cache directory holding compiled components (the runtime's cache).
pub const COMPILED_SUBDIR: &str = "compiled";
/// Subdirectory of the cache directory holding fetched plugin components.
pub const PLUGINS_SUBDIR: &str = "plugins";

/// A session's filters, ready to run. Stateful (`&mut self`): plugin instances keep state for
/// the session. A trait so a session can hold either a real chain or [`RejectAll`].
pub trait FilterChain: Send {
    /// Runs the filters over one batch; failing filters are disabled and reported in the
    /// output, never returned as errors.
    fn apply(&mut self, records: &[Record]) -> ChainOutput;
}

impl FilterChain for Chain {
    fn apply(&mut self, records: &[Record]) -> ChainOutput {
        Chain::apply(self, records)
    }
}

/// A chain that keeps nothing: what a session runs when a built-in filter cannot start, so a
/// filter the agent cannot apply never turns into "stream everything".
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectAll;

impl FilterChain for RejectAll {
    fn apply(&mut self, _records: &[Record]) -> ChainOutput {
        ChainOutput::default()
    }
}

/// What [`ChainBuilder::build`] produced: the chain and the filters left out of it, each to be
/// reported to the session's clients as a `filter_error`.
pub struct Built {
    pub chain: Box<dyn FilterChain>,
    pub failures: Vec<FilterFailure>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Builds sessions' chains: the process's one [`Runtime`] (engine, compiled-component cache,
/// sandbox bounds) and the [`PluginStore`] it reads plugin components from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChainBuilder {
    runtime: Runtime,
    plugins: Arc<PluginStore>,
}

impl ChainBuilder {
    pub fn new(runtime: Runtime, plugins: PluginStore) -> ChainBuilder {
        ChainBuilder {
            runtime,
            plugins: Arc::new(plugins),
        }
    }

    /// The agent's runtime ([`agent_runtime`]) and plugin store: compiled components cached
    /// under `<cache_dir>/compiled`, fetched plugins under `<cache_dir>/plugins`; memory only
    /// without a cache directory. Blocking (creates directories): call it off the executor.
    pub fn open(cache_dir: Option<&Path>) -> Result<ChainBuilder, RuntimeError> {
        let runtime = agent_runtime(cache_dir)?;
        let plugins = match cache_dir {
            Some(dir) => PluginStore::open(dir.join(PLUGINS_SUBDIR)),
            None => PluginStore::in_memory(),
        };
        Ok(ChainBuilder::new(runtime, plugins))
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn plugins(&self) -> &Arc<PluginStore> {
        &self.plugins
    }

    /// Builds the chain for `filters`. A plugin that cannot start (component missing or
    /// invalid, config refused, trap or timeout while configuring) is left out and reported;
    /// the session runs with the rest. A built-in that cannot start (a bug: the host
    /// validated the filters) makes the chain keep nothing. CPU-heavy on a cold cache (it may
    /// compile): call it on a blocking thread.
    pub fn build(&self, filters: &Filters) -> Built {
        let mut filters = filters.clone();
        let mut failures = Vec::new();
        // Each round either succeeds or removes at least one plugin, so this ends.
        loop {
            let error = match self.runtime.chain(&filters, self.plugins.as_ref()) {
                Ok(chain) => {
                    return Built {
                        chain: Box::new(chain),
                        failures,
                    };
                }
                Err(error) => error,
            };
            let name = error.plugin().to_owned();
            failures.push(FilterFailure {
                plugin: name.clone(),
                message: failure_message(&error),
            });
            if self.is_plugin_error(&filters, &error) {
                warn!(plugin = %name, %error, "plugin left out of the session");
                // Every use of the plugin goes: it is disabled for the session, reported once.
                filters.plugins.retain(|p| p.name != name);
            } else {
                error!(filter = %name, %error, "built-in filter cannot start; the session keeps nothing");
                return Built {
                    chain: Box::new(RejectAll),
                    failures,
                };
            }
        }
    }

    /// Whether `error` is about one of `filters.plugins` rather than a built-in. Plugin names
    /// may equal built-in names (`pattern`), so when both are in use the built-ins are built
    /// alone to find out.
    fn is_plugin_error(&self, filters: &Filters, error: &ChainError) -> bool {
        let name = error.plugin();
        if !filters.plugins.iter().any(|p| p.name == name) {
            return false;
        }
        if matches!(
            error,
            ChainError::PluginUnavailable { .. } | ChainError::DigestMismatch { .. }
        ) {
            return true;
        }
        let builtin_in_use = match name {
            "level" => !filters.levels.is_empty(),
            "source" => !filters.sources.is_empty(),
            "pattern" => filters.pattern.is_some(),
            _ => false,
        };
        if !builtin_in_use {
            return true;
        }
        let builtins_only = Filters {
            plugins: Vec::new(),
            ..filters.clone()
        };
        let no_plugins = |_: &logfleet_protocol::PluginRef| None;
        self.runtime.chain(&builtins_only, &no_plugins).is_ok()
    }
}

/// The runtime with the agent's bounds — the runtime crate's defaults: per-call CPU deadline,
/// configure deadline, memory cap per instance — caching compiled components under
/// `<cache_dir>/compiled`. `filter-test` uses it too, so authors see exactly what sessions do.
pub fn agent_runtime(cache_dir: Option<&Path>) -> Result<Runtime, RuntimeError> {
    Runtime::new(RuntimeConfig {
        cache_dir: cache_dir.map(|dir| dir.join(COMPILED_SUBDIR)),
        ..RuntimeConfig::default()
    })
}

/// The `filter_error` message for a filter that could not start. A refused config is the
/// plugin's own text, unchanged (the WIT contract promises authors that).
pub fn failure_message(error: &ChainError) -> String {
    match error {
        ChainError::Configure { message, .. } => message.clone(),
        ChainError::Startup { message, .. } => format!("failed to start: {message}"),
        ChainError::Invalid { message, .. } => format!("cannot be loaded: {message}"),
        ChainError::PluginUnavailable { digest, .. } => {
            format!("component {digest} is not available on this agent")
        }
        ChainError::DigestMismatch {
            expected, actual, ..
        } => format!("component digest is {actual}, expected {expected}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use logfleet_protocol::{Level, PluginRef};

    /// One compiled-component cache for every unit test of this binary, kept across runs in
    /// the target directory (`target/tmp`, as cargo's integration tests use), so built-ins
    /// compile once.
    pub(crate) fn test_cache_dir() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        // target/<profile>/deps/<test binary>
        let target = exe.ancestors().nth(3)?;
        Some(target.join("tmp").join("agent-unit-filter-cache"))
    }

    /// The runtime every unit test shares (its in-memory cache too).
    pub(crate) fn runtime() -> Runtime {
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        RUNTIME
            .get_or_init(|| {
                Runtime::new(RuntimeConfig {
                    cache_dir: test_cache_dir().map(|d| d.join(COMPILED_SUBDIR)),
                    ..RuntimeConfig::default()
                })
                .unwrap()
            })
            .clone()
    }

    /// A builder over the shared runtime with a fresh, empty plugin store.
    pub(crate) fn builder() -> ChainBuilder {
        ChainBuilder::new(runtime(), PluginStore::in_memory())
    }

    /// A "plugin" for tests: the built-in level filter's component under another name, so
    /// unit tests need no plugin build.
    pub(crate) fn level_plugin(name: &str, config: &str) -> (PluginRef, Vec<u8>) {
        let bytes = Builtin::Level.component().to_vec();
        let plugin = PluginRef {
            name: name.into(),
            config: config.into(),
            digest: Builtin::Level.digest().into(),
        };
        (plugin, bytes)
    }

    pub(crate) fn record(seq: u64, level: Level, source: &str, message: &str) -> Record {
        Record {
            seq,
            timestamp_ms: 1_700_000_000_000,
            level,
            source: source.into(),
            file: format!("/var/log/{source}.log"),
            line: seq,
            message: message.into(),
        }
    }

    fn sample() -> Vec<Record> {
        vec![
            record(1, Level::Error, "nginx", "upstream timed out"),
            record(2, Level::Info, "nginx", "GET / 200"),
            record(3, Level::Warn, "api", "slow query timeout=5s"),
            record(4, Level::Error, "api", "user_id=12345 failed"),
            record(5, Level::Fatal, "db", "disk full"),
        ]
    }

    fn kept(builder: &ChainBuilder, filters: &Filters) -> (Vec<u32>, Vec<FilterFailure>) {
        let mut built = builder.build(filters);
        let out = built.chain.apply(&sample());
        built.failures.extend(out.failures);
        (out.kept.iter().map(|k| k.index).collect(), built.failures)
    }

    #[test]
    fn builtins_run_as_components_in_order() {
        let b = builder();
        assert_eq!(kept(&b, &Filters::default()).0, [0, 1, 2, 3, 4]);
        let f = Filters {
            levels: vec![Level::Error, Level::Warn],
            ..Filters::default()
        };
        assert_eq!(kept(&b, &f).0, [0, 2, 3]);
        let f = Filters {
            sources: vec!["api".into(), "db".into()],
            ..Filters::default()
        };
        assert_eq!(kept(&b, &f).0, [2, 3, 4]);
        let f = Filters {
            levels: vec![Level::Error],
            sources: vec!["api".into()],
            pattern: Some("user_id=\\d+".into()),
            plugins: vec![],
        };
        assert_eq!(kept(&b, &f), (vec![3], vec![]));
    }

    #[test]
    fn plugins_that_cannot_start_are_left_out_with_their_own_message() {
        let b = builder();
        let (good, bytes) = level_plugin("fatal-only", r#"{"levels":["FATAL"]}"#);
        let (bad, _) = level_plugin("picky", r#"{"levels":["LOUD"]}"#);
        let missing = PluginRef {
            name: "absent".into(),
            config: "null".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
        };
        b.plugins().put(&good.digest, bytes).unwrap();
        let f = Filters {
            sources: vec!["db".into(), "api".into()],
            plugins: vec![bad, missing, good],
            ..Filters::default()
        };
        let (kept, failures) = kept(&b, &f);
        assert_eq!(kept, [4], "the rest of the chain still runs");
        let names: Vec<&str> = failures.iter().map(|f| f.plugin.as_str()).collect();
        assert_eq!(names, ["picky", "absent"]);
        let refused = &failures[0].message;
        assert!(
            refused.contains("LOUD"),
            "the plugin's own configure error is shown: {refused}"
        );
    }

    #[test]
    fn a_plugin_named_like_a_builtin_is_told_apart() {
        let b = builder();
        let (bad, bytes) = level_plugin("pattern", r#"{"levels":["LOUD"]}"#);
        b.plugins().put(&bad.digest, bytes).unwrap();
        let f = Filters {
            pattern: Some("timed? ?out".into()),
            plugins: vec![bad],
            ..Filters::default()
        };
        let (kept, failures) = kept(&b, &f);
        assert_eq!(kept, [0, 2], "the built-in pattern still applies");
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].plugin, "pattern");
    }

    #[test]
    fn a_builtin_that_cannot_start_keeps_nothing() {
        // The host never sends an invalid pattern; if one arrives anyway, nothing streams.
        let f = Filters {
            pattern: Some("(".into()),
            ..Filters::default()
        };
        let (kept, failures) = kept(&builder(), &f);
        assert!(kept.is_empty());
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].plugin, "pattern");
    }
}
