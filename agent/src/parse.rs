//! From a line read to a record: level detection for metrics, and the full parse (message,
//! event time, fields; see [`logfleet_protocol::parse`]) for lines a session streams.
//!
//! The parsers are pure, so they live in the protocol crate, where the fuzz targets reach them
//! without building the agent's WebAssembly runtime; this module holds the agent's use of them.

use std::borrow::Cow;
use std::collections::HashMap;

use logfleet_protocol::agent::Record;
use logfleet_protocol::agent_limits::fit_record;
use logfleet_protocol::parse::{Format, Timezone, parse_line};

pub use logfleet_protocol::line_level::{BRACKET_SCAN_BYTES, MAX_LEVEL_TOKENS, detect_level};

use crate::config::SourceConfig;
use crate::tail::TailLine;

/// Each source's format and time zone, by source name.
#[derive(Debug, Default)]
pub struct Parsers {
    by_source: HashMap<String, (Format, Timezone)>,
}

impl Parsers {
    pub fn new(sources: &[SourceConfig]) -> Parsers {
        Parsers {
            by_source: sources
                .iter()
                .map(|s| (s.name.clone(), (s.format, s.timezone)))
                .collect(),
        }
    }

    /// The record of `line`, numbered `seq`. The line's text is moved, not copied, when the
    /// message is all of it.
    pub fn record(&self, seq: u64, line: TailLine) -> Record {
        let (format, tz) = self
            .by_source
            .get(&*line.source)
            .copied()
            .unwrap_or_default();
        let parsed = parse_line(&line.text, format, tz, line.read_at_ms);
        let (level, event_ms, fields) = (parsed.level, parsed.event_ms, parsed.fields);
        let part: Option<String> = match parsed.message {
            Cow::Borrowed(m) if m.len() == line.text.len() => None,
            m => Some(m.into_owned()),
        };
        let (message, raw) = match part {
            Some(message) => (message, Some(line.text)),
            None => (line.text, None),
        };
        let mut record = Record {
            seq,
            timestamp_ms: line.read_at_ms,
            level,
            source: line.source.to_string(),
            file: line.file.to_string(),
            line: line.line,
            message,
            event_ms,
            fields,
            raw,
        };
        fit_record(&mut record);
        record
    }
}
