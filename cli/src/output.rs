//! How the CLI prints things: log lines as text or JSON (control characters made safe for a
//! terminal), notices for control events, and tables of agents, sessions and plugins. Pure
//! functions from data to strings, so they are easy to test and reuse.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use logfleet_protocol::Level;
use logfleet_protocol::client::{ClientMessage, Control, EndReason, LogMessage};
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

/// One log line of a fleet session: as [`format_log`], with the agent's name (`agent`) as a
/// column before the source in text (`TIMESTAMP LEVEL agent source: message`); JSON already
/// carries `agent_id`.
pub fn format_log_from(log: &LogMessage, agent: &str, format: Format, colour: bool) -> String {
    match format {
        Format::Json => format_log(log, format, colour),
        Format::Text => {
            let level = log.level.as_str();
            let (on, off) = if colour {
                (level_colour(log.level), RESET)
            } else {
                ("", "")
            };
            format!(
                "{} {on}{level:<5}{off} {agent} {}: {}",
                log.timestamp, log.source, log.message
            )
        }
    }
}

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

/// `text` with every control character a terminal would act on shown as an escape instead:
/// ESC as `\e`, CR as `\r`, other C0 controls and DEL as `\xNN`, C1 controls (which some
/// terminals also obey, e.g. U+009B as CSI) as `\u{NN}`. Tab and newline stay: a terminal only
/// moves the cursor forward for them, and multi-line records (stack traces) stay readable.
/// Anyone who can write a log line controls its content, so on a terminal this is the
/// difference between showing `ESC[2J` and clearing the operator's screen.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\x1b' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            c if needs(c) && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `log` with [`escape_controls`] applied to every text field a log line prints.
pub fn escaped(log: &LogMessage) -> LogMessage {
    let esc = |s: &str| escape_controls(s).into_owned();
    LogMessage {
        seq: log.seq,
        agent_seq: log.agent_seq,
        agent_id: esc(&log.agent_id),
        timestamp: esc(&log.timestamp),
        level: log.level,
        source: esc(&log.source),
        message: esc(&log.message),
        metadata: logfleet_protocol::client::Metadata {
            host: esc(&log.metadata.host),
            file: esc(&log.metadata.file),
            line: log.metadata.line,
            read_at: esc(&log.metadata.read_at),
            // Printed as JSON (`-o json`), where serde escapes control characters.
            fields: log.metadata.fields.clone(),
        },
        backfill: log.backfill,
    }
}

/// How a session's end reads in a notice ("session X timed out").
pub fn ended_text(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Timeout => "timed out",
        EndReason::Stopped => "was stopped",
        EndReason::Shutdown => "ended: the host is shutting down",
        EndReason::FilterFailed => "ended: a filter failed (see the filter error above)",
    }
}

/// One line for a control event other than ending/ended.
pub fn control_text(control: &Control) -> String {
    match control {
        Control::AgentDisconnected { agent_id } => format!(
            "agent{} disconnected; the session continues when it reconnects",
            named(agent_id.as_deref())
        ),
        Control::AgentReconnected { agent_id } => {
            format!("agent{} reconnected", named(agent_id.as_deref()))
        }
        Control::AgentJoined { agent_id } => format!("agent {agent_id} joined the session"),
        Control::LogsDropped {
            count,
            reason,
            agent_id,
        } => {
            let why = match reason {
                logfleet_protocol::client::DropReason::ClientLagging => {
                    "this client fell behind or was disconnected longer than the host's replay buffer covers"
                }
                logfleet_protocol::client::DropReason::RateLimited => "the session's rate limit",
                logfleet_protocol::client::DropReason::AgentBufferFull => {
                    "the agent's buffer was full"
                }
                logfleet_protocol::client::DropReason::FilterFailed => {
                    "a filter failed before deciding about them"
                }
            };
            match agent_id {
                Some(agent) => format!("{count} log lines of agent {agent} dropped: {why}"),
                None => format!("{count} log lines dropped: {why}"),
            }
        }
        Control::FilterError { plugin, message } => {
            format!("plugin '{plugin}' failed and is disabled for this session: {message}")
        }
        Control::SessionEnding {
            seconds_remaining, ..
        } => format!("session ends in {seconds_remaining}s"),
        Control::SessionEnded { reason } => format!("session {}", ended_text(*reason)),
        Control::BandwidthWarning {
            bytes_per_hour,
            budget,
        } => format!(
            "your organisation streamed {bytes_per_hour} bytes in the last hour, over its budget of {budget}"
        ),
        Control::FiltersChanged { filters, .. } => format!(
            "filters changed: {}",
            serde_json::to_string(filters).unwrap_or_default()
        ),
        Control::BackfillDone { count, truncated } => {
            let cut = if *truncated {
                " (the agent's scan limit was reached before it found as many as asked for)"
            } else {
                ""
            };
            format!("backfill done: {count} earlier line(s) above{cut}; live lines from here")
        }
    }
}

/// ` ID` for a control naming an agent, nothing otherwise.
fn named(agent_id: Option<&str>) -> String {
    agent_id.map(|id| format!(" {id}")).unwrap_or_default()
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
            // A fleet session: its first member and how many more run it.
            let agent = match s.agent_ids.as_ref().map_or(0, Vec::len) {
                more @ 2.. => format!("{} +{}", s.agent_name, more - 1),
                _ => s.agent_name.clone(),
            };
            vec![
                s.id.clone(),
                agent,
                s.status.clone(),
                ago(&s.started_at, now),
                until(&s.expires_at, now),
                s.created_by.clone(),
                s.clients.to_string(),
                rate(s.usage.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "AGENT", "STATUS", "STARTED", "EXPIRES", "BY", "CLIENTS", "RATE",
        ],
        &rows,
    )
}

/// A session's current rate from its `usage` (`lines_per_second`, `bytes_per_second`):
/// `12 lines/s 3.4 KB/s`; `-` when the host sent none.
pub fn rate(usage: Option<&serde_json::Value>) -> String {
    let Some(usage) = usage else {
        return "-".to_owned();
    };
    let (Some(lines), Some(bytes)) = (
        usage
            .get("lines_per_second")
            .and_then(serde_json::Value::as_f64),
        usage
            .get("bytes_per_second")
            .and_then(serde_json::Value::as_f64),
    ) else {
        return "-".to_owned();
    };
    format!("{} lines/s {}/s", round_rate(lines), human_bytes(bytes))
}

/// A rate with one decimal below 10, whole above.
fn round_rate(value: f64) -> String {
    if value < 10.0 && value.fract() != 0.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// Bytes in B, KB, MB or GB (powers of 1000, as rates are usually read).
fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{} {}", round_rate(value), UNITS[unit])
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
            agent_seq: None,
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
            backfill: false,
        }
    }

    /// The sessions table's rate reads as people say rates, and says `-` when the host sent
    /// no usage.
    #[test]
    fn rates_read_naturally() {
        let usage = |lines: f64, bytes: f64| {
            serde_json::json!({"lines": 1, "bytes": 2, "dropped": {},
                "lines_per_second": lines, "bytes_per_second": bytes})
        };
        assert_eq!(rate(Some(&usage(12.0, 3400.0))), "12 lines/s 3.4 KB/s");
        assert_eq!(rate(Some(&usage(0.5, 0.0))), "0.5 lines/s 0 B/s");
        assert_eq!(
            rate(Some(&usage(2000.0, 2_500_000.0))),
            "2000 lines/s 2.5 MB/s"
        );
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(&serde_json::json!({}))), "-");
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

    /// The sessions table shows a fleet session by its first agent and how many more run it.
    #[test]
    fn fleet_sessions_show_their_size() {
        let now = Utc::now();
        let session = SessionSummary {
            id: "sess_1".into(),
            agent_id: "a".into(),
            agent_name: "edge-1".into(),
            agent_ids: Some(vec!["a".into(), "b".into(), "c".into()]),
            status: "active".into(),
            started_at: now.to_rfc3339(),
            expires_at: now.to_rfc3339(),
            created_by: "alice".into(),
            clients: 1,
            usage: None,
        };
        assert!(sessions_table(&[session], now).contains("edge-1 +2"));
    }

    /// A fleet session's text lines name the agent that read them, before the source.
    #[test]
    fn fleet_lines_carry_the_agent_name() {
        assert_eq!(
            format_log_from(&log(), "edge-1", Format::Text, false),
            "2024-01-15T10:00:00.123Z ERROR edge-1 nginx: upstream timed out"
        );
        assert_eq!(
            format_log_from(&log(), "edge-1", Format::Json, false),
            format_log(&log(), Format::Json, false)
        );
    }

    /// Control characters in log content never reach the terminal as themselves.
    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(
            escape_controls("a\x1b[2J\x1b]0;pwned\x07b\rc\x7f\u{9b}"),
            "a\\e[2J\\e]0;pwned\\x07b\\rc\\x7f\\u{9b}"
        );
        assert!(matches!(
            escape_controls("tab\tnew\nline é"),
            Cow::Borrowed(_)
        ));
        let mut hostile = log();
        hostile.message = "\x1b[2J".into();
        hostile.source = "s\x07".into();
        let line = format_log(&escaped(&hostile), Format::Text, false);
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
        assert!(line.ends_with("s\\x07: \\e[2J"), "{line:?}");
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
