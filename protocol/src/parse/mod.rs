//! Parsed records: what a log line says beyond its text — its message without the prefix a
//! logger put before it, its event time, its level, and the key/values of structured lines.
//!
//! Pure (a line in, a [`Parsed`] out), so the fuzz targets reach it without the agent. Formats
//! ([`Format`], a source's `format`):
//!
//! - `plain`: the whole line is the message; only the level is detected.
//! - `nginx` and free text (in `auto`): a leading time (bare or in brackets), a level token and
//!   nginx's `pid#tid: *conn ` are stripped ([`text`]).
//! - `json`: one object per line ([`json`]); `logfmt`: `key=value` pairs ([`logfmt`]);
//!   `syslog`: RFC 5424 and the BSD form in files ([`syslog`]). Key/values other than message,
//!   level and time go to `fields`, at most [`MAX_FIELDS_BYTES`] of them as JSON.
//! - `auto` (the default) picks one of those per line from its first bytes.
//!
//! A line a format does not recognise keeps its whole text as the message and the read time as
//! its time: parsing never loses a line or a byte of it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Level;
use crate::line_level::detect_level;

mod json;
mod logfmt;
mod syslog;
mod text;
pub mod time;

pub use time::{BadTimezone, Timezone};

/// Most bytes of `fields` (as JSON text) kept per record; keys that do not fit are counted in
/// a `"_truncated"` field instead.
pub const MAX_FIELDS_BYTES: usize = 16 * 1024;

/// How a source's lines are parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Nginx,
    Json,
    Logfmt,
    Syslog,
    Plain,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Auto,
        Format::Nginx,
        Format::Json,
        Format::Logfmt,
        Format::Syslog,
        Format::Plain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Nginx => "nginx",
            Format::Json => "json",
            Format::Logfmt => "logfmt",
            Format::Syslog => "syslog",
            Format::Plain => "plain",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let all: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown format '{s}'; use one of {}", all.join(", "))
            })
    }
}

/// What one line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<'a> {
    pub level: Level,
    /// The line without what the parser recognised; the whole line when it recognised nothing.
    pub message: Cow<'a, str>,
    /// The time the line says it happened, ms since the Unix epoch.
    pub event_ms: Option<i64>,
    /// Other key/values of a structured line: a JSON object, at most [`MAX_FIELDS_BYTES`].
    pub fields: Option<String>,
}

/// Parses `line` as `format`; times without a zone are in `tz`, year-less ones near `now_ms`.
pub fn parse_line(line: &str, format: Format, tz: Timezone, now_ms: i64) -> Parsed<'_> {
    let trimmed = line.trim_start().as_bytes();
    let parsed = match format {
        Format::Plain => None,
        Format::Nginx => Some(text::parse(line, tz, now_ms, true)),
        Format::Json => json::parse(line, tz, now_ms),
        Format::Logfmt => logfmt::parse(line, tz, now_ms),
        Format::Syslog => syslog::parse(line, tz, now_ms),
        Format::Auto => match trimmed.first() {
            Some(b'{') => json::parse(line, tz, now_ms),
            Some(b'<') => syslog::parse(line, tz, now_ms),
            Some(c) if c.is_ascii_uppercase() && trimmed.get(3) == Some(&b' ') => {
                syslog::parse(line, tz, now_ms)
            }
            Some(c) if c.is_ascii_alphabetic() && looks_logfmt(trimmed) => {
                logfmt::parse(line, tz, now_ms)
            }
            _ => None,
        }
        .or_else(|| Some(text::parse(line, tz, now_ms, false))),
    };
    parsed.unwrap_or_else(|| Parsed {
        level: detect_level(line),
        message: line.into(),
        event_ms: None,
        fields: None,
    })
}

/// Whether the first word is `key=...`.
fn looks_logfmt(b: &[u8]) -> bool {
    let word = b.split(u8::is_ascii_whitespace).next().unwrap_or_default();
    word.iter()
        .position(|&c| c == b'=')
        .is_some_and(|eq| eq > 0)
}

/// A level word (`error`, `WARNING`, `crit`, …), any case.
pub(crate) fn level_word(word: &[u8]) -> Option<Level> {
    std::str::from_utf8(word).ok().and_then(Level::parse)
}

/// Builds `fields` as a JSON object within [`MAX_FIELDS_BYTES`].
struct FieldsWriter {
    text: String,
    truncated: u64,
}

impl FieldsWriter {
    fn new() -> FieldsWriter {
        FieldsWriter {
            text: String::new(),
            truncated: 0,
        }
    }

    fn push(&mut self, key: &str, value: &Value) {
        let entry = format!("{}:{}", Value::String(key.to_owned()), value);
        // Room for the separator, braces and a `"_truncated":N` entry.
        if self.text.len() + entry.len() + 40 > MAX_FIELDS_BYTES {
            self.truncated += 1;
            return;
        }
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        self.text.push_str(&entry);
    }

    fn finish(mut self) -> Option<String> {
        if self.truncated > 0 {
            self.text.push(if self.text.is_empty() { '{' } else { ',' });
            self.text
                .push_str(&format!("\"_truncated\":{}", self.truncated));
        }
        if self.text.is_empty() {
            return None;
        }
        self.text.push('}');
        Some(self.text)
    }
}

#[cfg(test)]
mod tests;
