//! Test plugin: tries to leave the sandbox on every batch — read a file (`{"try": "file"}`,
//! default), the environment (`"env"`) or the clock (`"clock"`) — and rewrites record 0 with
//! what it got. The runtime's WASI denies by default: an error instead of the file, an empty
//! environment, a clock of millisecond resolution.

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// What to try.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(rename = "try", default)]
    attempt: Option<String>,
}

/// The escaping filter.
struct Escape {
    attempt: String,
}

impl Filter for Escape {
    const FIELDS: Fields = Fields::empty();

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        Ok(Escape {
            attempt: config.attempt.unwrap_or_else(|| "file".to_owned()),
        })
    }

    fn batch(&mut self, _batch: &Batch<'_>, verdicts: &mut Verdicts) {
        let leaked = match self.attempt.as_str() {
            "env" => std::env::vars().map(|(k, v)| k + "=" + &v).collect(),
            "clock" => format!("{:?}", std::time::SystemTime::now()),
            _ => std::fs::read_to_string("/etc/passwd").unwrap_or_else(|e| e.to_string()),
        };
        // Had it worked, the loot would go out as a rewritten message.
        if !verdicts.is_empty() {
            verdicts.rewrite(0, leaked);
        }
    }
}

export_filter!(Escape);
