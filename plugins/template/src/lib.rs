//! Plugin template: copy this crate (`cp -r template my-filter`), rename it in `Cargo.toml`,
//! add it to the workspace `members`, and replace the logic below.
//!
//! This example keeps records whose message contains a configured text and, optionally,
//! tags them: config `{"contains": "timeout", "tag": "[slow]"}`.
//!
//! Build: `cargo build --release --target wasm32-wasip2` → `target/wasm32-wasip2/release/template.wasm`.
//! Test:  `cargo test -p template` (runs natively, no WebAssembly needed).

use logfleet_filter_sdk::{Fields, Filter, Record, Verdict, export_filter, parse_config};
use serde::Deserialize;

/// The plugin's config, parsed from the session's JSON. `deny_unknown_fields` turns typos into
/// clear errors instead of silently ignored settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    contains: String,
    tag: Option<String>,
}

/// The configured filter; lives for the whole session.
struct Template {
    config: Config,
}

impl Filter for Template {
    // Declare only the columns you read: the host then sends nothing else.
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.contains.is_empty() {
            // This text is what the user sees when starting the session.
            return Err("template: `contains` must be a non-empty string".to_owned());
        }
        Ok(Template { config })
    }

    fn record(&mut self, record: Record<'_>) -> Verdict {
        let message = record.message();
        if !message.contains(&self.config.contains) {
            return Verdict::Drop;
        }
        match &self.config.tag {
            Some(tag) => Verdict::Rewrite(format!("{tag} {message}")),
            None => Verdict::Keep,
        }
    }
}

export_filter!(Template);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep, Rewrite};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn keeps_and_tags_matching_lines() {
        let mut f = Template::configure(r#"{"contains":"timeout","tag":"[slow]"}"#).unwrap();
        let out = run(
            &mut f,
            &[TestRecord::new("db timeout"), TestRecord::new("ok")],
        );
        assert_eq!(out, [Rewrite("[slow] db timeout".into()), Drop]);

        let mut f = Template::configure(r#"{"contains":"ok"}"#).unwrap();
        assert_eq!(run(&mut f, &[TestRecord::new("ok")]), [Keep]);
    }

    #[test]
    fn bad_config_is_explained() {
        assert!(Template::configure(r#"{"contains":""}"#).is_err());
        assert!(Template::configure(r#"{"contain":"x"}"#).is_err());
    }
}
