//! How the CLI prints things: log lines as text or JSON, and tables of agents, sessions and
//! plugins. Pure functions from data to strings, so they are easy to test and reuse.

use chrono::{DateTime, Utc};
use logfleet_protocol::Level;
use logfleet_protocol::client::{ClientMessage, LogMessage};
use logfleet_protocol::rest::{AgentInfo, PluginInfo, SessionSummary};

/// How `stream` prints log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `TIMESTAMP LEVEL source: message`, optionally coloured by level.
    #[default]
    Text,
    /// One log object per line, exactly as the reference's "Log Message Format" (plus `seq`).
    Json,
}

/// ANSI colour of a level: red for errors, yellow for warnings, dim for debug noise.
fn level_colour(level: Level) -> &'static str {
    match level {
        Level::Fatal => "\x1b[1;31m",
        Level::Error => "\x1b[31m",
        Level::Warn => "\x1b[33m",
        Level::Info => "\x1b[32m",
        Level::Debug | Level::Trace => "\x1b[2m",
    }
}

const RESET: &str = "\x1b[0m";

/// One log line, without the trailing newline.
pub fn format_log(log: &LogMessage, format: Format, colour: bool) -> String {
    match format {
        Format::Json => {
            // Serialising plain strings and numbers cannot fail; fall back to text anyway.
            serde_json::to_string(&ClientMessage::Log(log.clone()))
                .unwrap_or_else(|_| format_log(log, Format::Text, false))
        }
        Format::Text => {
            let level = log.level.as_str();
            if colour {
                format!(
                    "{} {}{level:<5}{RESET} {}: {}",
                    log.timestamp,
                    level_colour(log.level),
                    log.source,
                    log.message
                )
            } else {
                format!(
                    "{} {level:<5} {}: {}",
                    log.timestamp, log.source, log.message
                )
            }
        }
    }
}

/// Whether to colour output: only on a terminal, and never when `NO_COLOR` is set to
/// anything non-empty (<https://no-color.org>).
pub fn use_colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Aligns rows under headers, two spaces between columns, no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// "5s ago", "3m ago", "2h ago", "4d ago" relative to `now`; the raw text if unparsable.
pub fn ago(timestamp: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(timestamp) else {
        return timestamp.to_owned();
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// "in 4m 10s" until `timestamp`, relative to `now`.
pub fn until(timestamp: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(timestamp) else {
        return timestamp.to_owned();
    };
    let secs = (t.with_timezone(&Utc) - now).num_seconds().max(0);
    if secs >= 60 {
        format!("in {}m {}s", secs / 60, secs % 60)
    } else {
        format!("in {secs}s")
    }
}

/// The `agents` table: name, id, status, last seen, sources.
pub fn agents_table(agents: &[AgentInfo], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let sources: Vec<&str> = a.sources.iter().map(|s| s.name.as_str()).collect();
            vec![
                a.name.clone(),
                a.id.clone(),
                a.status.clone(),
                ago(&a.last_seen, now),
                sources.join(","),
            ]
        })
        .collect();
    table(&["NAME", "ID", "STATUS", "LAST SEEN", "SOURCES"], &rows)
}

/// The `sessions` table.
pub fn sessions_table(sessions: &[SessionSummary], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.agent_name.clone(),
                s.status.clone(),
                ago(&s.started_at, now),
                until(&s.expires_at, now),
                s.created_by.clone(),
                s.clients.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "AGENT", "STATUS", "STARTED", "EXPIRES", "BY", "CLIENTS",
        ],
        &rows,
    )
}

/// The `plugins list` table.
pub fn plugins_table(plugins: &[PluginInfo]) -> String {
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.digest.clone(),
                p.size.to_string(),
                p.uploaded_at.clone(),
            ]
        })
        .collect();
    table(&["NAME", "DIGEST", "SIZE", "UPLOADED"], &rows)
}

#[cfg(test)]
mod tests {
    use logfleet_protocol::client::Metadata;

    use super::*;

    fn log() -> LogMessage {
        LogMessage {
            seq: 7,
            agent_id: "a1".into(),
            timestamp: "2024-01-15T10:00:00.123Z".into(),
            level: Level::Error,
            source: "nginx".into(),
            message: "upstream timed out".into(),
            metadata: Metadata {
                host: "edge-1".into(),
                file: "/var/log/nginx/error.log".into(),
                line: 3,
                read_at: "2024-01-15T10:00:00.125Z".into(),
                fields: None,
            },
        }
    }

    #[test]
    fn text_and_json_lines() {
        assert_eq!(
            format_log(&log(), Format::Text, false),
            "2024-01-15T10:00:00.123Z ERROR nginx: upstream timed out"
        );
        assert!(format_log(&log(), Format::Text, true).contains("\x1b[31mERROR\x1b[0m"));
        let json: serde_json::Value =
            serde_json::from_str(&format_log(&log(), Format::Json, true)).unwrap();
        assert_eq!(json["type"], "log");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["metadata"]["line"], 3);
    }

    #[test]
    fn colour_rules() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("")));
        assert!(!use_colour(true, Some("1")));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn relative_times() {
        let now = DateTime::parse_from_rfc3339("2024-01-15T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ago("2024-01-15T10:04:55Z", now), "5s ago");
        assert_eq!(ago("2024-01-15T08:04:55Z", now), "2h ago");
        assert_eq!(until("2024-01-15T10:09:10Z", now), "in 4m 10s");
        assert_eq!(ago("garbage", now), "garbage");
    }
}
