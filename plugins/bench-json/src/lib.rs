//! Benchmark-only component: the built-in chain's logic (level → source → pattern) over one
//! JSON document per batch, as a JSON-in/JSON-out filter ABI (Fluent Bit's) would do it.
//! `filter-runtime/benches/chain.rs` compares it with the columnar `logfleet:filter` world.

use std::cell::RefCell;

use regex::Regex;
use serde::Deserialize;

wit_bindgen::generate!({
    inline: "
        package bench:json;

        world json-filter {
            export configure: func(config: string) -> result<_, string>;
            export filter-json: func(batch: string) -> list<u8>;
        }
    ",
});

/// `{"levels": [...], "sources": [...], "pattern": "..."}`.
#[derive(Deserialize)]
struct Config {
    levels: Vec<String>,
    sources: Vec<String>,
    pattern: String,
}

/// One record as the host serialises `logfleet_protocol::agent::Record`; unread fields skipped.
#[derive(Deserialize)]
struct JsonRecord<'a> {
    level: &'a str,
    source: &'a str,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

/// The configured filter.
struct State {
    levels: Vec<String>,
    sources: Vec<String>,
    regex: Regex,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// The component's exports.
struct JsonFilter;

impl Guest for JsonFilter {
    fn configure(config: String) -> Result<(), String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        let regex = Regex::new(&config.pattern).map_err(|e| e.to_string())?;
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                levels: config.levels,
                sources: config.sources,
                regex,
            })
        });
        Ok(())
    }

    fn filter_json(batch: String) -> Vec<u8> {
        let records: Vec<JsonRecord<'_>> = serde_json::from_str(&batch).unwrap_or_default();
        STATE.with(|s| {
            let state = s.borrow();
            let Some(state) = state.as_ref() else {
                return vec![0; records.len()];
            };
            records
                .iter()
                .map(|r| {
                    u8::from(
                        state.levels.iter().any(|l| l == r.level)
                            && state.sources.iter().any(|s| s == r.source)
                            && state.regex.is_match(&r.message),
                    )
                })
                .collect()
        })
    }
}

export!(JsonFilter);
