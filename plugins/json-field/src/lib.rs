//! `json-field` plugin: for log lines that are JSON objects, keeps those whose field meets a
//! condition.
//!
//! Config: `field` (a top-level key, or a dotted path such as `"http.status"`) and exactly one
//! condition:
//! - `{"field": "status", "equals": 500}` — the field equals this JSON value (`500` also
//!   matches the string `"500"`);
//! - `{"field": "user", "matches": "^adm"}` — the field, as text, matches this regex;
//! - `{"field": "trace_id", "exists": true}` — the field is present (or absent with `false`).
//!
//! Lines that are not JSON objects are dropped, or kept with `"keep_non_json": true`.

mod condition;

use logfleet_filter_sdk::{Fields, Filter, Record, Verdict, export_filter};

pub use condition::Selector;

/// The configured plugin.
struct JsonField {
    selector: Selector,
}

impl Filter for JsonField {
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        Ok(JsonField {
            selector: Selector::from_config(config)?,
        })
    }

    fn record(&mut self, record: Record<'_>) -> Verdict {
        Verdict::keep_if(self.selector.keep(record.message()))
    }
}

export_filter!(JsonField);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn filters_a_batch() {
        let mut f = JsonField::configure(r#"{"field":"status","equals":500}"#).unwrap();
        let out = run(
            &mut f,
            &[
                TestRecord::new(r#"{"status":500,"path":"/"}"#),
                TestRecord::new(r#"{"status":200}"#),
                TestRecord::new("not json"),
            ],
        );
        assert_eq!(out, [Keep, Drop, Drop]);
    }
}
