//! Built-in `source` filter: keeps records from one of a list of sources.
//!
//! Config: `{"sources": ["nginx", "api"]}` (exact names). Reads only the source column, and
//! decides once per distinct source name in a batch, not once per record.

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// The session's `filters.source`, as the agent passes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    sources: Vec<String>,
}

/// The configured filter, plus a per-batch scratch table so batches allocate nothing.
struct SourceFilter {
    sources: Vec<String>,
    /// `allowed[id]` for each entry of the current batch's source table.
    allowed: Vec<bool>,
}

impl Filter for SourceFilter {
    const FIELDS: Fields = Fields::SOURCE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.sources.is_empty() {
            return Err("source: `sources` must list at least one source".to_owned());
        }
        Ok(SourceFilter {
            sources: config.sources,
            allowed: Vec::new(),
        })
    }

    fn batch(&mut self, batch: &Batch<'_>, verdicts: &mut Verdicts) {
        self.allowed.clear();
        self.allowed.extend(
            batch
                .source_table()
                .iter()
                .map(|name| self.sources.iter().any(|s| s == name)),
        );
        for record in batch.iter() {
            let keep = self
                .allowed
                .get(record.source_id())
                .copied()
                .unwrap_or(false);
            verdicts.set(record.index(), keep);
        }
    }
}

export_filter!(SourceFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn keeps_listed_sources_only() {
        let mut f = SourceFilter::configure(r#"{"sources":["nginx","api"]}"#).unwrap();
        let records = [
            TestRecord::new("a").source("api"),
            TestRecord::new("b").source("db"),
            TestRecord::new("c").source("nginx"),
            TestRecord::new("d").source("api"),
        ];
        assert_eq!(run(&mut f, &records), [Keep, Drop, Keep, Keep]);
    }

    #[test]
    fn empty_list_is_refused() {
        let err = SourceFilter::configure(r#"{"sources":[]}"#).err().unwrap();
        assert!(err.contains("at least one"), "{err}");
    }
}
