//! `sample` plugin: thins a stream.
//!
//! Config, one of:
//! - `{"one_in": 10}` keeps the 1st, 11th, 21st… record (counted across batches);
//! - `{"per_second": 100}` keeps at most 100 records per second of record time (the agent's
//!   read timestamps: filters have no clock), dropping the rest of each second.

mod sampler;

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

pub use sampler::Sampler;

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    one_in: Option<u64>,
    per_second: Option<u64>,
}

/// The configured plugin.
struct Sample {
    sampler: Sampler,
}

impl Filter for Sample {
    const FIELDS: Fields = Fields::TIMESTAMP;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        let sampler = match (config.one_in, config.per_second) {
            (Some(n), None) => Sampler::one_in(n)?,
            (None, Some(n)) => Sampler::per_second(n)?,
            _ => {
                return Err(
                    "sample: give exactly one of `one_in` (keep 1 in N) or `per_second` (keep at most N per second)"
                        .to_owned(),
                );
            }
        };
        Ok(Sample { sampler })
    }

    /// Timestamps only matter per second; 1-in-N reads nothing at all.
    fn fields(&self) -> Fields {
        if self.sampler.needs_time() {
            Fields::TIMESTAMP
        } else {
            Fields::empty()
        }
    }

    fn batch(&mut self, batch: &Batch<'_>, verdicts: &mut Verdicts) {
        let timed = self.sampler.needs_time();
        for record in batch.iter() {
            let ts = if timed { record.timestamp_ms() } else { 0 };
            verdicts.set(record.index(), self.sampler.keep(ts));
        }
    }
}

export_filter!(Sample);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn one_in_n_counts_across_batches() {
        let mut f = Sample::configure(r#"{"one_in":2}"#).unwrap();
        assert_eq!(f.fields(), Fields::empty());
        let r = [
            TestRecord::new("a"),
            TestRecord::new("b"),
            TestRecord::new("c"),
        ];
        assert_eq!(run(&mut f, &r), [Keep, Drop, Keep]);
        assert_eq!(run(&mut f, &r), [Drop, Keep, Drop]);
    }

    #[test]
    fn per_second_uses_record_time() {
        let mut f = Sample::configure(r#"{"per_second":1}"#).unwrap();
        let r = [
            TestRecord::new("a").timestamp_ms(1_000),
            TestRecord::new("b").timestamp_ms(1_500),
            TestRecord::new("c").timestamp_ms(2_000),
        ];
        assert_eq!(run(&mut f, &r), [Keep, Drop, Keep]);
    }

    #[test]
    fn config_must_pick_one_mode() {
        assert!(Sample::configure("null").is_err());
        assert!(Sample::configure(r#"{"one_in":2,"per_second":3}"#).is_err());
        assert!(Sample::configure(r#"{"one_in":0}"#).is_err());
    }
}
