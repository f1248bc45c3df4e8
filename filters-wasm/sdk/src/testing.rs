//! Run a [`Filter`] natively, in `cargo test`, exactly as the host would call it: only the
//! declared columns are sent, verdicts start as "keep".
//!
//! ```ignore
//! let mut filter = MyFilter::configure(r#"{"n": 2}"#).unwrap();
//! let out = testing::run(&mut filter, &[TestRecord::new("a"), TestRecord::new("b")]);
//! assert_eq!(out, [Verdict::Keep, Verdict::Drop]);
//! ```

use crate::bindings::Batch as RawBatch;
use crate::{Batch, Fields, Filter, Level, Verdict, Verdicts};

/// A record to feed a filter under test; build with [`TestRecord::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub message: String,
    pub level: Level,
    pub source: String,
    pub file: String,
    pub line: u64,
    pub timestamp_ms: i64,
}

impl TestRecord {
    /// An `INFO` record from source `app`, file `/var/log/app.log` line 1, at time 0.
    pub fn new(message: &str) -> TestRecord {
        TestRecord {
            message: message.to_owned(),
            level: Level::Info,
            source: "app".to_owned(),
            file: "/var/log/app.log".to_owned(),
            line: 1,
            timestamp_ms: 0,
        }
    }

    /// Sets the level.
    pub fn level(mut self, level: Level) -> TestRecord {
        self.level = level;
        self
    }

    /// Sets the source name.
    pub fn source(mut self, source: &str) -> TestRecord {
        self.source = source.to_owned();
        self
    }

    /// Sets the file path and line number.
    pub fn at(mut self, file: &str, line: u64) -> TestRecord {
        self.file = file.to_owned();
        self.line = line;
        self
    }

    /// Sets the read time, ms since the Unix epoch.
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> TestRecord {
        self.timestamp_ms = timestamp_ms;
        self
    }
}

/// Calls `filter` on one batch of `records` and returns its verdict for each.
pub fn run<F: Filter>(filter: &mut F, records: &[TestRecord]) -> Vec<Verdict> {
    let raw = encode(records, filter.fields());
    let batch = Batch::new(&raw);
    let mut verdicts = Verdicts::keep_all(batch.len());
    filter.batch(&batch, &mut verdicts);
    verdicts.to_vec()
}

/// Builds the columnar wire form the host would send for `records`, with only `fields`.
fn encode(records: &[TestRecord], fields: Fields) -> RawBatch {
    let mut raw = RawBatch {
        len: u32::try_from(records.len()).unwrap_or(u32::MAX),
        messages: String::new(),
        message_ends: Vec::new(),
        levels: Vec::new(),
        sources: Vec::new(),
        source_ids: Vec::new(),
        files: Vec::new(),
        file_ids: Vec::new(),
        lines: Vec::new(),
        timestamps: Vec::new(),
    };
    for r in records {
        if fields.contains(Fields::MESSAGE) {
            raw.messages.push_str(&r.message);
            raw.message_ends
                .push(u32::try_from(raw.messages.len()).unwrap_or(u32::MAX));
        }
        if fields.contains(Fields::LEVEL) {
            raw.levels.push(r.level as u8);
        }
        if fields.contains(Fields::SOURCE) {
            raw.source_ids.push(intern(&mut raw.sources, &r.source));
        }
        if fields.contains(Fields::FILE) {
            raw.file_ids.push(intern(&mut raw.files, &r.file));
        }
        if fields.contains(Fields::LINE) {
            raw.lines.push(r.line);
        }
        if fields.contains(Fields::TIMESTAMP) {
            raw.timestamps.push(r.timestamp_ms);
        }
    }
    raw
}

/// Index of `value` in `table`, appending it if new.
fn intern(table: &mut Vec<String>, value: &str) -> u16 {
    let index = match table.iter().position(|v| v == value) {
        Some(i) => i,
        None => {
            table.push(value.to_owned());
            table.len() - 1
        }
    };
    u16::try_from(index).unwrap_or(u16::MAX)
}
