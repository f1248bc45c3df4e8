//! Session filter chains: which records a session keeps.
//!
//! Every filter runs as a WebAssembly component in [`logfleet_filter_runtime`]: the built-in
//! `level`, `source` and `pattern` filters and user plugins alike; there is no native
//! filtering path. This module adapts the runtime to sessions:
//!
//! - [`FilterChain`]: what a session applies to each batch (the runtime's [`Chain`]).
//! - [`ChainBuilder`]: the runtime with the agent's bounds and plugin store; builds a
//!   session's chain, or says which filter could not start.
//!
//! Filters fail closed: a filter that cannot start, or that fails while running, ends its
//! session (see [`crate::session`]); no record passes a filter that did not decide about it.
//! The chain's output types ([`Kept`], [`ChainOutput`], [`FilterFailure`]) are the runtime's.
//! Fetching plugins the agent lacks before a build is [`crate::loader`]'s job.

use std::path::Path;
use std::sync::Arc;

use logfleet_protocol::Filters;
use logfleet_protocol::agent::Record;
use tracing::warn;

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
/// the session. A trait so session tests can run chains that fail on purpose.
pub trait FilterChain: Send {
    /// Runs the filters over one batch. A failing filter is reported in the output's
    /// `failure`; the chain then keeps nothing (fails closed), counting `undecided` records.
    fn apply(&mut self, records: &[Record]) -> ChainOutput;
}

impl FilterChain for Chain {
    fn apply(&mut self, records: &[Record]) -> ChainOutput {
        Chain::apply(self, records)
    }
}

/// What [`ChainBuilder::build`] produces: the session's chain, or the filter that could not
/// start (to report as the session's `filter_error`; the session does not run).
pub type Built = Result<Box<dyn FilterChain>, FilterFailure>;

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
    /// without a cache directory; `fast_tier` as [`Tuning::fast_tier`](crate::Tuning).
    /// Blocking (creates directories): call it off the executor.
    pub fn open(cache_dir: Option<&Path>, fast_tier: bool) -> Result<ChainBuilder, RuntimeError> {
        let runtime = agent_runtime(cache_dir, fast_tier)?;
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

    /// Builds the chain for `filters`, or names the first filter that cannot start (component
    /// missing or invalid, config refused, trap or timeout while configuring): a session never
    /// runs without one of its filters. CPU-heavy on a cold cache (it may compile): call it
    /// on a blocking thread.
    pub fn build(&self, filters: &Filters) -> Built {
        match self.runtime.chain(filters, self.plugins.as_ref()) {
            Ok(chain) => Ok(Box::new(chain)),
            Err(error) => {
                warn!(filter = %error.plugin(), %error, "a session's filter cannot start");
                Err(FilterFailure {
                    plugin: error.plugin().to_owned(),
                    message: failure_message(&error),
                })
            }
        }
    }
}

/// The runtime with the agent's bounds — the runtime crate's defaults: per-call CPU deadline,
/// configure deadline, memory cap per instance — caching compiled components under
/// `<cache_dir>/compiled`. `filter-test` uses it too, so authors see exactly what sessions do
/// (without the fast tier: it measures the optimised code sessions end up running).
/// `fast_tier`: see [`RuntimeConfig::fast_tier`].
pub fn agent_runtime(cache_dir: Option<&Path>, fast_tier: bool) -> Result<Runtime, RuntimeError> {
    Runtime::new(RuntimeConfig {
        cache_dir: cache_dir.map(|dir| dir.join(COMPILED_SUBDIR)),
        fast_tier,
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
            event_ms: None,
            fields: None,
            raw: None,
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

    fn kept(builder: &ChainBuilder, filters: &Filters) -> Result<Vec<u32>, FilterFailure> {
        let mut chain = builder.build(filters)?;
        let out = chain.apply(&sample());
        match out.failure {
            Some(failure) => Err(failure),
            None => Ok(out.kept.iter().map(|k| k.index).collect()),
        }
    }

    #[test]
    fn builtins_run_as_components_in_order() {
        let b = builder();
        assert_eq!(kept(&b, &Filters::default()).unwrap(), [0, 1, 2, 3, 4]);
        let f = Filters {
            levels: vec![Level::Error, Level::Warn],
            ..Filters::default()
        };
        assert_eq!(kept(&b, &f).unwrap(), [0, 2, 3]);
        let f = Filters {
            sources: vec!["api".into(), "db".into()],
            ..Filters::default()
        };
        assert_eq!(kept(&b, &f).unwrap(), [2, 3, 4]);
        let f = Filters {
            levels: vec![Level::Error],
            sources: vec!["api".into()],
            pattern: Some("user_id=\\d+".into()),
            plugins: vec![],
        };
        assert_eq!(kept(&b, &f).unwrap(), [3]);
    }

    /// A session never runs without one of its filters: the first that cannot start (in chain
    /// order) is named, with the plugin's own message for a refused config.
    #[test]
    fn a_filter_that_cannot_start_fails_the_build() {
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
            plugins: vec![good.clone(), bad, missing.clone()],
            ..Filters::default()
        };
        let failure = kept(&b, &f).unwrap_err();
        assert_eq!(failure.plugin, "picky");
        assert!(
            failure.message.contains("LOUD"),
            "the plugin's own configure error is shown: {}",
            failure.message
        );
        let f = Filters {
            plugins: vec![good.clone(), missing],
            ..Filters::default()
        };
        assert_eq!(kept(&b, &f).unwrap_err().plugin, "absent");
        let f = Filters {
            sources: vec!["db".into(), "api".into()],
            plugins: vec![good],
            ..Filters::default()
        };
        assert_eq!(kept(&b, &f).unwrap(), [4]);
    }

    #[test]
    fn a_builtin_that_cannot_start_fails_the_build() {
        // The host never sends an invalid pattern; if one arrives anyway, nothing streams.
        let f = Filters {
            pattern: Some("(".into()),
            ..Filters::default()
        };
        assert_eq!(kept(&builder(), &f).unwrap_err().plugin, "pattern");
    }
}
