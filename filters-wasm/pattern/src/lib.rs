//! Built-in `pattern` filter: keeps records whose message matches a regex.
//!
//! Config: `{"pattern": "timeout|refused"}` (regex crate syntax, unanchored). The size limits
//! are the host's (`logfleet_protocol::filters::compile_pattern`), so any pattern the host
//! accepted compiles here too. Reads only the message column.

use logfleet_filter_sdk::{Fields, Filter, Record, Verdict, export_filter, parse_config};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// Longest accepted pattern, in bytes. Must equal `logfleet_protocol::filters::MAX_PATTERN_BYTES`.
const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled-size cap of the regex. Must equal
/// `logfleet_protocol::filters::MAX_PATTERN_COMPILED_BYTES`.
const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;

/// The session's `filters.pattern`, as the agent passes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    pattern: Option<String>,
}

/// The configured filter: the compiled regex.
struct PatternFilter {
    regex: Regex,
}

impl Filter for PatternFilter {
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        let Some(pattern) = config.pattern else {
            return Err("pattern: `pattern` is required".to_owned());
        };
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "pattern: {} bytes; the limit is {MAX_PATTERN_BYTES}",
                pattern.len()
            ));
        }
        let regex = RegexBuilder::new(&pattern)
            .size_limit(MAX_PATTERN_COMPILED_BYTES)
            .build()
            .map_err(|e| format!("pattern: not a valid regex: {e}"))?;
        Ok(PatternFilter { regex })
    }

    fn record(&mut self, record: Record<'_>) -> Verdict {
        Verdict::keep_if(self.regex.is_match(record.message()))
    }
}

export_filter!(PatternFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn keeps_matching_messages() {
        let mut f = PatternFilter::configure(r#"{"pattern":"time(out)?\\b"}"#).unwrap();
        let records = [
            TestRecord::new("upstream timeout"),
            TestRecord::new("all fine"),
            TestRecord::new("time is up"),
        ];
        assert_eq!(run(&mut f, &records), [Keep, Drop, Keep]);
    }

    #[test]
    fn bad_patterns_are_refused() {
        let err = PatternFilter::configure(r#"{"pattern":"("}"#)
            .err()
            .unwrap();
        assert!(err.contains("not a valid regex"), "{err}");
        let long = format!(r#"{{"pattern":"{}"}}"#, "a".repeat(MAX_PATTERN_BYTES + 1));
        assert!(PatternFilter::configure(&long).is_err());
        assert!(PatternFilter::configure("null").is_err());
    }
}
