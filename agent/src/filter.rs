//! Session filter chains: which records a session keeps.
//!
//! The pipeline only sees the [`FilterChain`] / [`ChainBuilder`] interface, so the native chain
//! here can be replaced by WebAssembly components without touching sessions. The native chain
//! runs the built-in filters in order — level (any of) → source (any of, exact name) → pattern
//! (regex on the message) — all of which must pass. It cannot run plugins: each one named in a
//! session is reported once as a [`FilterFailure`] and skipped, and the session carries on.

use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, Level};
use regex::Regex;

/// What a chain decides for one record that survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Index of the record in the slice passed to [`FilterChain::apply`].
    pub index: u32,
    /// Rewritten message, if a filter changed it.
    pub message: Option<String>,
}

/// A filter that failed and is disabled for the session; reported to the session's clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFailure {
    /// The plugin's name, or `level` / `source` / `pattern` for the built-ins.
    pub plugin: String,
    pub message: String,
}

/// The result of running a chain over one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainOutput {
    /// Surviving records, in input order.
    pub kept: Vec<Kept>,
    /// Filters that failed during this call (each is then disabled).
    pub failures: Vec<FilterFailure>,
}

/// A session's compiled filters. Stateful (`&mut self`) so plugin instances can keep state.
pub trait FilterChain: Send {
    fn apply(&mut self, records: &[Record]) -> ChainOutput;
}

/// Turns a session's [`Filters`] into a runnable chain; shared by all sessions.
pub trait ChainBuilder: Send + Sync {
    fn build(&self, filters: &Filters) -> Result<Box<dyn FilterChain>, FilterFailure>;
}

/// Builds [`NativeChain`]s: the built-in filters in Rust, no plugin support.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeChainBuilder;

impl ChainBuilder for NativeChainBuilder {
    fn build(&self, filters: &Filters) -> Result<Box<dyn FilterChain>, FilterFailure> {
        let pattern = filters
            .pattern
            .as_deref()
            .map(logfleet_protocol::filters::compile_pattern)
            .transpose()
            .map_err(|e| FilterFailure {
                plugin: "pattern".into(),
                message: e.to_string(),
            })?;
        Ok(Box::new(NativeChain {
            levels: filters.levels.clone(),
            sources: filters.sources.clone(),
            pattern,
            pending_failures: filters
                .plugins
                .iter()
                .map(|p| FilterFailure {
                    plugin: p.name.clone(),
                    message:
                        "plugins need the WebAssembly runtime, which this agent does not run; \
                              the plugin is skipped"
                            .into(),
                })
                .collect(),
        }))
    }
}

/// The built-in filters, compiled once per session.
#[derive(Debug)]
pub struct NativeChain {
    /// Empty means any level.
    levels: Vec<Level>,
    /// Empty means any source.
    sources: Vec<String>,
    pattern: Option<Regex>,
    /// Plugin failures not reported yet; handed out by the first `apply`.
    pending_failures: Vec<FilterFailure>,
}

impl NativeChain {
    fn keeps(&self, record: &Record) -> bool {
        (self.levels.is_empty() || self.levels.contains(&record.level))
            && (self.sources.is_empty() || self.sources.contains(&record.source))
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| p.is_match(&record.message))
    }
}

impl FilterChain for NativeChain {
    fn apply(&mut self, records: &[Record]) -> ChainOutput {
        let kept = records
            .iter()
            .enumerate()
            .filter(|(_, r)| self.keeps(r))
            .map(|(i, _)| Kept {
                // Batches are far below u32::MAX records (the tailer bounds them).
                index: i as u32,
                message: None,
            })
            .collect();
        ChainOutput {
            kept,
            failures: std::mem::take(&mut self.pending_failures),
        }
    }
}

/// A chain that keeps nothing: what a session runs when its filters could not be built, so
/// a filter the agent cannot apply never turns into "stream everything".
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectAll;

impl FilterChain for RejectAll {
    fn apply(&mut self, _records: &[Record]) -> ChainOutput {
        ChainOutput::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use logfleet_protocol::PluginRef;

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

    fn kept(filters: Filters, records: &[Record]) -> Vec<u32> {
        let mut chain = NativeChainBuilder.build(&filters).unwrap();
        chain.apply(records).kept.iter().map(|k| k.index).collect()
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

    #[test]
    fn no_filters_keep_everything() {
        assert_eq!(kept(Filters::default(), &sample()), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn or_within_a_list_and_across_filters() {
        let f = Filters {
            levels: vec![Level::Error, Level::Warn],
            ..Filters::default()
        };
        assert_eq!(kept(f, &sample()), vec![0, 2, 3]);
        let f = Filters {
            sources: vec!["api".into(), "db".into()],
            ..Filters::default()
        };
        assert_eq!(kept(f, &sample()), vec![2, 3, 4]);
        let f = Filters {
            levels: vec![Level::Error],
            sources: vec!["api".into()],
            pattern: Some("user_id=\\d+".into()),
            plugins: vec![],
        };
        assert_eq!(kept(f, &sample()), vec![3]);
        let f = Filters {
            levels: vec![Level::Error, Level::Warn],
            pattern: Some("timed? ?out".into()),
            ..Filters::default()
        };
        assert_eq!(kept(f, &sample()), vec![0, 2]);
    }

    #[test]
    fn source_names_match_exactly() {
        let f = Filters {
            sources: vec!["ngin".into()],
            ..Filters::default()
        };
        assert_eq!(kept(f, &sample()), Vec::<u32>::new());
    }

    #[test]
    fn plugins_fail_once_and_are_skipped() {
        let f = Filters {
            levels: vec![Level::Fatal],
            plugins: vec![PluginRef {
                name: "redact".into(),
                config: "{}".into(),
                digest: "sha256:00".into(),
            }],
            ..Filters::default()
        };
        let mut chain = NativeChainBuilder.build(&f).unwrap();
        let first = chain.apply(&sample());
        assert_eq!(first.kept.len(), 1);
        assert_eq!(first.failures.len(), 1);
        assert_eq!(first.failures[0].plugin, "redact");
        assert!(chain.apply(&sample()).failures.is_empty());
    }

    #[test]
    fn bad_pattern_is_a_failure_not_a_panic() {
        let f = Filters {
            pattern: Some("(".into()),
            ..Filters::default()
        };
        let err = NativeChainBuilder.build(&f).err().unwrap();
        assert_eq!(err.plugin, "pattern");
        assert!(RejectAll.apply(&sample()).kept.is_empty());
    }
}
