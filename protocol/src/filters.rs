//! The `filters` and `limits` objects of a start request, and their validation.
//!
//! [`FilterSpec`] is what a user sends; [`FilterSpec::validate`] turns it into [`Filters`], the
//! normalised form the host stores and pushes to the agent. Every check a user could fail happens
//! here, on the host, before anything reaches an agent.

use serde::{Deserialize, Serialize};

use crate::Level;

/// Longest accepted `pattern`, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled-size cap for a `pattern` regex, so one pattern cannot eat the agent's memory.
pub const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;
/// Most `source` names in one filter.
pub const MAX_SOURCES: usize = 64;
/// Longest `source` name, in bytes.
pub const MAX_SOURCE_BYTES: usize = 256;
/// Most plugins in one session's chain.
pub const MAX_PLUGINS: usize = 16;
/// Longest plugin `config`, serialised as JSON.
pub const MAX_PLUGIN_CONFIG_BYTES: usize = 64 * 1024;
/// Longest plugin name.
pub const MAX_PLUGIN_NAME_BYTES: usize = 64;

/// `filters` as a user writes it in `POST /api/v1/stream/start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Level names or synonyms; any of them matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Vec<String>>,
    /// One source name, or a list of which any matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<OneOrMany>,
    /// A regex (regex crate syntax) the message must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// User plugins, applied after the built-ins, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<PluginSpec>>,
}

/// `"nginx"` or `["nginx", "api"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One entry of `filters.plugins` as a user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Validated, normalised filters: what the host stores and the agent runs.
/// Empty `levels`/`sources` and a `None` pattern mean "no such filter".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub levels: Vec<Level>,
    pub sources: Vec<String>,
    pub pattern: Option<String>,
    pub plugins: Vec<PluginRef>,
}

/// A plugin in a session's chain, resolved by the host to the exact component to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub name: String,
    /// The plugin's `config`, as JSON text (the agent link is not self-describing).
    pub config: String,
    /// `sha256:<hex>` of the component, filled in by the host's plugin registry.
    pub digest: String,
}

/// Why a `filters` object was refused. Rendered to users as `400 invalid_filter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filters.level: {0}")]
    UnknownLevel(#[from] crate::level::UnknownLevel),
    #[error("filters.{0} must not be an empty list")]
    EmptyList(&'static str),
    #[error(
        "filters.source: names must be 1..={MAX_SOURCE_BYTES} bytes, at most {MAX_SOURCES} of them"
    )]
    BadSource,
    #[error("filters.pattern is {0} bytes; the limit is {MAX_PATTERN_BYTES}")]
    PatternTooLong(usize),
    #[error("filters.pattern is not a valid regex: {0}")]
    BadPattern(String),
    #[error("filters.plugins: at most {MAX_PLUGINS} plugins per session")]
    TooManyPlugins,
    #[error(
        "filters.plugins: invalid plugin name '{0}' (1..={MAX_PLUGIN_NAME_BYTES} of a-z, 0-9, '-', '_', starting with a letter or digit)"
    )]
    BadPluginName(String),
    #[error("filters.plugins: config of '{0}' is over {MAX_PLUGIN_CONFIG_BYTES} bytes")]
    PluginConfigTooLong(String),
}

impl Filters {
    /// The filters as a client writes them (plugins by name, with their configs), for
    /// showing a session's filters back.
    pub fn to_spec(&self) -> FilterSpec {
        FilterSpec {
            level: (!self.levels.is_empty())
                .then(|| self.levels.iter().map(|l| l.as_str().to_owned()).collect()),
            source: (!self.sources.is_empty()).then(|| OneOrMany::Many(self.sources.clone())),
            pattern: self.pattern.clone(),
            plugins: (!self.plugins.is_empty()).then(|| {
                self.plugins
                    .iter()
                    .map(|p| PluginSpec {
                        name: p.name.clone(),
                        config: serde_json::from_str(&p.config).unwrap_or_default(),
                    })
                    .collect()
            }),
        }
    }
}

impl FilterSpec {
    /// Checks and normalises the filters. Plugin digests are left empty for the host to resolve.
    pub fn validate(&self) -> Result<Filters, FilterError> {
        let mut levels = Vec::new();
        if let Some(list) = &self.level {
            if list.is_empty() {
                return Err(FilterError::EmptyList("level"));
            }
            for name in list {
                let level: Level = name.parse()?;
                if !levels.contains(&level) {
                    levels.push(level);
                }
            }
            levels.sort();
        }

        let sources = match &self.source {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(list)) if list.is_empty() => {
                return Err(FilterError::EmptyList("source"));
            }
            Some(OneOrMany::Many(list)) => list.clone(),
        };
        if sources.len() > MAX_SOURCES
            || sources
                .iter()
                .any(|s| s.is_empty() || s.len() > MAX_SOURCE_BYTES)
        {
            return Err(FilterError::BadSource);
        }

        let pattern = match &self.pattern {
            None => None,
            Some(p) => {
                compile_pattern(p)?;
                Some(p.clone())
            }
        };

        let mut plugins = Vec::new();
        for spec in self.plugins.iter().flatten() {
            if !valid_plugin_name(&spec.name) {
                return Err(FilterError::BadPluginName(spec.name.clone()));
            }
            let config = spec.config.to_string();
            if config.len() > MAX_PLUGIN_CONFIG_BYTES {
                return Err(FilterError::PluginConfigTooLong(spec.name.clone()));
            }
            plugins.push(PluginRef {
                name: spec.name.clone(),
                config,
                digest: String::new(),
            });
        }
        if plugins.len() > MAX_PLUGINS {
            return Err(FilterError::TooManyPlugins);
        }

        Ok(Filters {
            levels,
            sources,
            pattern,
            plugins,
        })
    }
}

/// Compiles a `pattern` with the size limits the agent uses too, so a pattern the host accepts
/// always compiles on the agent.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, FilterError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(FilterError::PatternTooLong(pattern.len()));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_PATTERN_COMPILED_BYTES)
        .build()
        .map_err(|e| FilterError::BadPattern(e.to_string()))
}

/// Plugin names: what the registry stores and URLs carry, so kept to a safe alphabet.
pub fn valid_plugin_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_PLUGIN_NAME_BYTES
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Per-session rate limits applied on the agent. Omitted fields take the host's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FilterSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reference_filters_validate() {
        let f = spec(r#"{"level":["ERROR","warning"],"source":"nginx","pattern":"timeout"}"#)
            .validate()
            .unwrap();
        assert_eq!(f.levels, vec![Level::Warn, Level::Error]);
        assert_eq!(f.sources, vec!["nginx"]);
        assert_eq!(f.pattern.as_deref(), Some("timeout"));
    }

    #[test]
    fn source_list_and_plugins() {
        let f = spec(r#"{"source":["a","b"],"plugins":[{"name":"redact","config":{"x":1}}]}"#)
            .validate()
            .unwrap();
        assert_eq!(f.sources, vec!["a", "b"]);
        assert_eq!(f.plugins[0].config, r#"{"x":1}"#);
    }

    #[test]
    fn bad_input_is_refused_with_reason() {
        assert!(matches!(
            spec(r#"{"level":["LOUD"]}"#).validate(),
            Err(FilterError::UnknownLevel(_))
        ));
        assert!(matches!(
            spec(r#"{"pattern":"("}"#).validate(),
            Err(FilterError::BadPattern(_))
        ));
        let long = format!(r#"{{"pattern":"{}"}}"#, "a".repeat(MAX_PATTERN_BYTES + 1));
        assert!(matches!(
            spec(&long).validate(),
            Err(FilterError::PatternTooLong(_))
        ));
        assert!(matches!(
            spec(r#"{"level":[]}"#).validate(),
            Err(FilterError::EmptyList("level"))
        ));
        assert!(matches!(
            spec(r#"{"plugins":[{"name":"../x"}]}"#).validate(),
            Err(FilterError::BadPluginName(_))
        ));
        assert!(serde_json::from_str::<FilterSpec>(r#"{"levels":["ERROR"]}"#).is_err());
    }
}
