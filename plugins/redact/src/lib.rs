//! `redact` plugin: masks personal data and secrets in messages before they leave the edge.
//!
//! By default it masks e-mail addresses (`<email>`), IPv6 and IPv4 addresses (`<ipv6>`,
//! `<ipv4>`) and the values of `password=`, `passwd=`, `pwd=`, `token=`, `secret=` and
//! `api_key=` (also with `:`; the key is kept: `password=***`). Records are never dropped.
//!
//! Config (all optional):
//! ```json
//! {"patterns": ["card=\\d+", "ssn \\d{3}-\\d{2}-\\d{4}"], "replacement": "***", "defaults": true}
//! ```
//! `patterns` are extra regexes whose whole match becomes `replacement` (default `***`);
//! `defaults: false` turns the built-in maskers off.

mod mask;

use logfleet_filter_sdk::{Fields, Filter, Record, Verdict, export_filter, parse_config};
use serde::Deserialize;

pub use mask::Masker;

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    patterns: Vec<String>,
    replacement: Option<String>,
    defaults: Option<bool>,
}

/// The configured plugin.
struct Redact {
    masker: Masker,
}

impl Filter for Redact {
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        let masker = Masker::new(
            config.defaults.unwrap_or(true),
            &config.patterns,
            config.replacement.as_deref().unwrap_or("***"),
        )?;
        Ok(Redact { masker })
    }

    fn record(&mut self, record: Record<'_>) -> Verdict {
        match self.masker.mask(record.message()) {
            Some(masked) => Verdict::Rewrite(masked),
            None => Verdict::Keep,
        }
    }
}

export_filter!(Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Keep, Rewrite};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn rewrites_only_what_needs_masking() {
        let mut f = Redact::configure("null").unwrap();
        let out = run(
            &mut f,
            &[
                TestRecord::new("login ok for bob@example.com"),
                TestRecord::new("nothing to see"),
            ],
        );
        assert_eq!(out, [Rewrite("login ok for <email>".into()), Keep]);
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = Redact::configure(r#"{"patterns":["("]}"#).err().unwrap();
        assert!(err.contains("patterns[0]"), "{err}");
        let err = Redact::configure(r#"{"pattern":"x"}"#).err().unwrap();
        assert!(err.contains("unknown field"), "{err}");
    }
}
