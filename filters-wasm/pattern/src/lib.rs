//! Built-in `pattern` filter: keeps records whose message matches a regex.
//!
//! Config: `{"pattern": "timeout|refused"}` (regex crate syntax, unanchored). The size limits
//! are the host's (`logfleet_protocol::filters::compile_pattern`), so any pattern the host
//! accepted compiles here too. Reads only the message column.

use logfleet_filter_sdk::{
    Batch, Fields, Filter, Record, Verdict, Verdicts, export_filter, parse_config,
};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// Longest accepted pattern, in bytes. Must equal `logfleet_protocol::filters::MAX_PATTERN_BYTES`.
const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled-size cap of the regex. Must equal
/// `logfleet_protocol::filters::MAX_PATTERN_COMPILED_BYTES`.
const MAX_PATTERN_COMPILED_BYTES: usize = 1 << 20;

/// The session's `filters.pattern`, as the agent passes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    pattern: Option<String>,
}

/// The configured filter: the compiled regex.
struct PatternFilter {
    regex: Regex,
    /// How a batch is searched; see [`Scan`].
    scan: Scan,
}

/// How [`PatternFilter`] searches a batch. Searching each message separately starts one
/// regex search per record (≈ 1,000 per batch), each with its own setup. A pattern with no
/// look-around assertion (`^`, `$`, `\b`, …) matches a string exactly where it matches that
/// string inside any longer text, so such a pattern can instead search the batch's whole
/// message column in one pass, jump from match to match (the regex's literal prefilter
/// skipping the bytes between them), and only re-check, on its own, a record whose match
/// ran past its end into the next record's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Search each record's message separately (patterns with look-around).
    PerRecord,
    /// Search the message column in one pass.
    Column,
    /// The pattern matches the empty string and has no look-around, so it matches every
    /// message: keep everything.
    Everything,
}

impl Filter for PatternFilter {
    const FIELDS: Fields = Fields::MESSAGE;

    fn configure(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        let Some(pattern) = config.pattern else {
            return Err("pattern: `pattern` is required".to_owned());
        };
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "pattern: {} bytes; the limit is {MAX_PATTERN_BYTES}",
                pattern.len()
            ));
        }
        let regex = RegexBuilder::new(&pattern)
            .size_limit(MAX_PATTERN_COMPILED_BYTES)
            .build()
            .map_err(|e| format!("pattern: not a valid regex: {e}"))?;
        // Parsed with the same (default) syntax flags as the regex just built.
        let no_look = regex_syntax::Parser::new()
            .parse(&pattern)
            .is_ok_and(|hir| hir.properties().look_set().is_empty());
        let scan = match (no_look, regex.is_match("")) {
            (false, _) => Scan::PerRecord,
            (true, false) => Scan::Column,
            (true, true) => Scan::Everything,
        };
        Ok(PatternFilter { regex, scan })
    }

    fn record(&mut self, record: Record<'_>) -> Verdict {
        Verdict::keep_if(self.regex.is_match(record.message()))
    }

    fn batch(&mut self, batch: &Batch<'_>, verdicts: &mut Verdicts) {
        match self.scan {
            Scan::Everything => {}
            Scan::Column => {
                let (text, ends) = batch.message_column();
                if !column_is_sound(text, ends) {
                    // Not what the host sends; searching per record stays within bounds.
                    return self.per_record(batch, verdicts);
                }
                verdicts.discard_all();
                self.scan_column(text, ends, verdicts);
            }
            Scan::PerRecord => self.per_record(batch, verdicts),
        }
    }
}

impl PatternFilter {
    fn per_record(&mut self, batch: &Batch<'_>, verdicts: &mut Verdicts) {
        for record in batch.iter() {
            verdicts.set(record.index(), self.regex.is_match(record.message()));
        }
    }

    /// Keeps exactly the records whose message the pattern matches on its own. Sound only
    /// for [`Scan::Column`] patterns: a match found in the column that lies within one record
    /// is a match of that record; one that spans records proves nothing and its first record
    /// is checked alone; and since any match of a record is a match in the column, the
    /// leftmost column match from a record's start never skips a matching record.
    fn scan_column(&self, text: &str, ends: &[u32], verdicts: &mut Verdicts) {
        let mut record = 0;
        let mut from = 0;
        while let Some(found) = self.regex.find_at(text, from) {
            // The record the match starts in: the first whose end lies past the start.
            while record < ends.len() && ends[record] as usize <= found.start() {
                record += 1;
            }
            let Some(&end) = ends.get(record) else {
                break;
            };
            let end = end as usize;
            let start = if record == 0 {
                0
            } else {
                ends[record - 1] as usize
            };
            if found.end() <= end || self.regex.is_match(&text[start..end]) {
                verdicts.keep(record);
            }
            record += 1;
            from = end;
        }
    }
}

/// Whether `ends` splits `text` as the host promises: ascending, on character boundaries,
/// the last at `text.len()`.
fn column_is_sound(text: &str, ends: &[u32]) -> bool {
    let mut previous = 0;
    ends.iter().all(|&end| {
        let end = end as usize;
        let ok = end >= previous && text.is_char_boundary(end);
        previous = end;
        ok
    }) && ends.last().is_none_or(|&last| last as usize == text.len())
}

export_filter!(PatternFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_filter_sdk::Verdict::{Drop, Keep};
    use logfleet_filter_sdk::testing::{TestRecord, run};

    #[test]
    fn keeps_matching_messages() {
        let mut f = PatternFilter::configure(r#"{"pattern":"time(out)?\\b"}"#).unwrap();
        let records = [
            TestRecord::new("upstream timeout"),
            TestRecord::new("all fine"),
            TestRecord::new("time is up"),
        ];
        assert_eq!(run(&mut f, &records), [Keep, Drop, Keep]);
    }

    /// Searching the batch's message column in one pass keeps exactly the records a
    /// per-record search keeps, including when a match in the column would run across
    /// records, and patterns with look-around (searched per record) keep their meaning.
    #[test]
    fn one_pass_search_decides_like_a_search_per_record() {
        let messages = [
            "xa",
            "bx",
            "",
            "ab",
            "a",
            "b",
            "zzab",
            "é a",
            "b é",
            "upstream timed out (110:",
            "upstream reset",
            " (12:",
            "ab",
        ];
        let records: Vec<TestRecord> = messages.iter().map(|m| TestRecord::new(m)).collect();
        for pattern in [
            "ab",
            "a.*b",
            "a\\s*b",
            "b",
            "^b",
            "a$",
            "\\bb",
            "upstream (timed out|reset) \\(\\d+:",
            "é a",
            "q",
            "x*",
            "^",
        ] {
            let config = format!(r#"{{"pattern":"{}"}}"#, pattern.replace('\\', "\\\\"));
            let mut filter = PatternFilter::configure(&config).unwrap();
            let regex = Regex::new(pattern).unwrap();
            let expected: Vec<Verdict> = messages
                .iter()
                .map(|m| Verdict::keep_if(regex.is_match(m)))
                .collect();
            assert_eq!(run(&mut filter, &records), expected, "pattern {pattern}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        let err = PatternFilter::configure(r#"{"pattern":"("}"#)
            .err()
            .unwrap();
        assert!(err.contains("not a valid regex"), "{err}");
        let long = format!(r#"{{"pattern":"{}"}}"#, "a".repeat(MAX_PATTERN_BYTES + 1));
        assert!(PatternFilter::configure(&long).is_err());
        assert!(PatternFilter::configure("null").is_err());
    }
}
