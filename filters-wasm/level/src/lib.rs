//! Built-in `level` filter: keeps records whose level is one of a list.
//!
//! Config: `{"levels": ["WARN", "ERROR"]}` (canonical names, any case; the host has already
//! mapped synonyms such as `warning` onto them). Reads only the level column.

use logfleet_filter_sdk::{Batch, Fields, Filter, Level, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// The session's `filters.level`, as the agent passes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    levels: Vec<String>,
}

/// The configured filter: which of the six levels pass, indexed by level.
struct LevelFilter {
    allowed: [bool; Level::ALL.len()],
}

impl Filter for LevelFilter {
    const FIELDS: Fields = Fields::LEVEL;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.levels.is_empty() {
            return Err("level: `levels` must list at least one level".to_owned());
        }
        let mut allowed = [false; Level::ALL.len()];
        for name in &config.levels {
            let level = Level::parse(name).ok_or_else(|| {
                format!("level: unknown level '{name}' (expected TRACE, DEBUG, INFO, WARN, ERROR or FATAL)")
            })?;
            allowed[level as usize] = true;
        }
        Ok(LevelFilter { allowed })
    }

    fn batch(&mut self, batch: &Batch<'_>, verdicts: &mut Verdicts) {
        for record in batch.iter() {
            verdicts.set(record.index(), self.allowed[record.level() as usize]);
        }
    }
}

export_filter!(LevelFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn keeps_listed_levels_only() {
        let mut f = LevelFilter::configure(r#"{"levels":["error","WARN"]}"#).unwrap();
        let records = [
            TestRecord::new("a").level(Level::Error),
            TestRecord::new("b").level(Level::Info),
            TestRecord::new("c").level(Level::Warn),
        ];
        assert_eq!(run(&mut f, &records), [Keep, Drop, Keep]);
    }

    #[test]
    fn bad_config_is_refused_with_reason() {
        let err = LevelFilter::configure(r#"{"levels":["LOUD"]}"#)
            .err()
            .unwrap();
        assert!(err.contains("unknown level 'LOUD'"), "{err}");
        assert!(LevelFilter::configure("null").is_err());
        assert!(LevelFilter::configure(r#"{"level":["ERROR"]}"#).is_err());
    }
}
