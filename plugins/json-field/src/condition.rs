//! Field selection and conditions, independent of the component bindings so they are
//! unit-tested natively.

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;

/// Longest `matches` pattern, in bytes (as for the built-in `pattern` filter).
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled-size cap of the `matches` regex (as for the built-in `pattern` filter).
pub const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;
/// Most segments in a dotted field path.
pub const MAX_PATH_SEGMENTS: usize = 16;

/// The plugin's config, as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    equals: Option<Value>,
    matches: Option<String>,
    exists: Option<bool>,
    #[serde(default)]
    keep_non_json: bool,
}

/// What must hold for the selected field.
#[derive(Debug)]
enum Condition {
    Equals(Value),
    Matches(Regex),
    Exists(bool),
}

/// A configured field path plus condition.
#[derive(Debug)]
pub struct Selector {
    path: Vec<String>,
    condition: Condition,
    keep_non_json: bool,
}

impl Selector {
    /// Parses the plugin's JSON config; errors say what to fix.
    pub fn from_config(config: &str) -> Result<Selector, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| {
            format!(
                "json-field: invalid config ({e}); expected e.g. {{\"field\": \"status\", \"equals\": 500}}"
            )
        })?;
        if config.field.is_empty() {
            return Err("json-field: `field` must not be empty".to_owned());
        }
        let path: Vec<String> = config.field.split('.').map(str::to_owned).collect();
        if path.len() > MAX_PATH_SEGMENTS {
            return Err(format!(
                "json-field: `field` has more than {MAX_PATH_SEGMENTS} segments"
            ));
        }
        let condition = match (config.equals, config.matches, config.exists) {
            (Some(value), None, None) => Condition::Equals(value),
            (None, Some(pattern), None) => {
                if pattern.len() > MAX_PATTERN_BYTES {
                    return Err(format!(
                        "json-field: `matches` is over {MAX_PATTERN_BYTES} bytes"
                    ));
                }
                let re = RegexBuilder::new(&pattern)
                    .size_limit(MAX_PATTERN_COMPILED_BYTES)
                    .build()
                    .map_err(|e| format!("json-field: `matches` is not a valid regex: {e}"))?;
                Condition::Matches(re)
            }
            (None, None, Some(exists)) => Condition::Exists(exists),
            _ => {
                return Err(
                    "json-field: give exactly one condition: `equals`, `matches` or `exists`"
                        .to_owned(),
                );
            }
        };
        Ok(Selector {
            path,
            condition,
            keep_non_json: config.keep_non_json,
        })
    }

    /// Whether a line with this message is kept.
    pub fn keep(&self, message: &str) -> bool {
        let trimmed = message.trim_start();
        // Cheap pre-check: most non-JSON lines never reach the parser.
        if !trimmed.starts_with('{') {
            return self.keep_non_json;
        }
        let Ok(root) = serde_json::from_str::<Value>(trimmed) else {
            return self.keep_non_json;
        };
        let field = self
            .path
            .iter()
            .try_fold(&root, |value, key| value.get(key.as_str()));
        match (&self.condition, field) {
            (Condition::Exists(want), field) => field.is_some() == *want,
            (_, None) => false,
            (Condition::Equals(want), Some(value)) => equals(value, want),
            (Condition::Matches(re), Some(Value::String(s))) => re.is_match(s),
            (Condition::Matches(re), Some(value)) => re.is_match(&value.to_string()),
        }
    }
}

/// JSON equality, except that a number and a string holding that number are equal: log
/// producers disagree on whether `status` is `500` or `"500"`.
fn equals(value: &Value, want: &Value) -> bool {
    match (value, want) {
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.trim() == n.to_string()
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => value == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_with_number_string_leniency() {
        let s = Selector::from_config(r#"{"field":"status","equals":500}"#).unwrap();
        assert!(s.keep(r#"{"status":500}"#));
        assert!(s.keep(r#"{"status":"500"}"#));
        assert!(s.keep(r#"{"status":500.0}"#));
        assert!(!s.keep(r#"{"status":200}"#));
        assert!(!s.keep(r#"{"other":500}"#));
        assert!(!s.keep("500"));
        assert!(!s.keep(r#"{"status": 5"#)); // truncated JSON
    }

    #[test]
    fn nested_paths_and_regex() {
        let s = Selector::from_config(r#"{"field":"req.user","matches":"^adm"}"#).unwrap();
        assert!(s.keep(r#"{"req":{"user":"admin"}}"#));
        assert!(!s.keep(r#"{"req":{"user":"bob"}}"#));
        assert!(!s.keep(r#"{"req":"admin"}"#));
        let s = Selector::from_config(r#"{"field":"code","matches":"^5\\d\\d$"}"#).unwrap();
        assert!(s.keep(r#"{"code":503}"#));
    }

    #[test]
    fn exists_and_non_json_lines() {
        let s = Selector::from_config(r#"{"field":"trace","exists":true,"keep_non_json":true}"#)
            .unwrap();
        assert!(s.keep(r#"{"trace":null}"#));
        assert!(!s.keep(r#"{"span":1}"#));
        assert!(s.keep("plain text line"));
        let s = Selector::from_config(r#"{"field":"trace","exists":false}"#).unwrap();
        assert!(s.keep(r#"{"span":1}"#));
        assert!(!s.keep("plain"));
    }

    #[test]
    fn bad_config_says_what_to_fix() {
        for (config, expect) in [
            ("null", "invalid config"),
            (r#"{"field":"a"}"#, "exactly one condition"),
            (
                r#"{"field":"a","equals":1,"exists":true}"#,
                "exactly one condition",
            ),
            (r#"{"field":"a","matches":"("}"#, "not a valid regex"),
            (r#"{"field":"","exists":true}"#, "must not be empty"),
            (r#"{"field":"a","equal":1}"#, "unknown field"),
        ] {
            let err = Selector::from_config(config).unwrap_err();
            assert!(err.contains(expect), "{config}: {err}");
        }
    }
}
