//! Log levels. Six canonical levels; parsing accepts the common synonyms found in real logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A normalised log level, serialised in upper case (`"ERROR"`), ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    /// Every level, least severe first; `Level::ALL[l.index()] == l`.
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    /// Position in [`Level::ALL`]; used to index per-level counters and to encode compactly.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses a level name or synonym, ignoring ASCII case. Accepts what real logs use:
    /// `warning`, `err`, `crit`, `critical`, `emerg`, `alert`, `panic`, `notice`, `informational`…
    pub fn parse(s: &str) -> Option<Level> {
        // Longest synonym is "informational" (13); anything longer is not a level.
        if s.is_empty() || s.len() > 13 {
            return None;
        }
        let mut buf = [0u8; 13];
        let lower = &mut buf[..s.len()];
        lower.copy_from_slice(s.as_bytes());
        lower.make_ascii_lowercase();
        Some(match &*lower {
            b"trace" | b"trc" | b"verbose" | b"finest" | b"finer" => Level::Trace,
            b"debug" | b"dbg" | b"fine" => Level::Debug,
            b"info" | b"inf" | b"information" | b"informational" | b"notice" => Level::Info,
            b"warn" | b"warning" | b"wrn" => Level::Warn,
            b"error" | b"err" | b"eror" | b"severe" => Level::Error,
            b"fatal" | b"crit" | b"critical" | b"emerg" | b"emergency" | b"alert" | b"panic"
            | b"ftl" => Level::Fatal,
            _ => return None,
        })
    }

    /// Maps a syslog severity (0 emerg … 7 debug) onto a level.
    pub fn from_syslog_severity(severity: u8) -> Level {
        match severity {
            0..=2 => Level::Fatal,
            3 => Level::Error,
            4 => Level::Warn,
            5 | 6 => Level::Info,
            _ => Level::Debug,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level '{0}' (expected one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL)")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::parse(s).ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_and_case() {
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("ERR"), Some(Level::Error));
        assert_eq!(Level::parse("Crit"), Some(Level::Fatal));
        assert_eq!(Level::parse("notice"), Some(Level::Info));
        assert_eq!(Level::parse("informational"), Some(Level::Info));
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::parse("informationalx"), None);
        assert_eq!(Level::parse(""), None);
    }

    #[test]
    fn index_round_trips() {
        for l in Level::ALL {
            assert_eq!(Level::ALL[l.index()], l);
        }
    }

    #[test]
    fn serialises_upper_case() {
        assert_eq!(serde_json::to_string(&Level::Warn).unwrap(), "\"WARN\"");
    }
}
