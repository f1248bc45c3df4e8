//! JSON configuration helpers: a session's plugin `config` arrives as JSON text.

use serde::de::DeserializeOwned;

/// Parses a filter's JSON config into `T`. `null` (no config given) and an empty string give
/// `T::default()`. Errors read `invalid config: …` with serde's description (field, line,
/// column), which is what the user will see. Add `#[serde(deny_unknown_fields)]` to `T` to
/// catch typos.
pub fn parse_config<T: DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    let trimmed = config.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(trimmed).map_err(|e| format!("invalid config: {e}"))
}
