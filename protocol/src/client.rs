//! Messages the host sends to session WebSocket clients: one JSON object per text frame.

use serde::{Deserialize, Serialize};

use crate::Level;

/// Every message on a session WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Log(LogMessage),
    Control(Control),
}

/// One log line, in the reference's "Log Message Format" plus `seq` and `agent_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    /// Per-agent line counter: +1 for every line the agent reads. In a fleet session (started
    /// with `agent_ids` or `selector`) the session's own counter instead: +1 per record the
    /// host received for the session, in the order clients get them, so `?since_seq=` and
    /// de-duplication by `seq` work across agents; the agent's counter is then `agent_seq`.
    pub seq: u64,
    /// The agent's own `seq` of this record, in a fleet session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_seq: Option<u64>,
    /// The agent that read the line.
    pub agent_id: String,
    /// When the line says it happened (its parsed event time), else when the agent read it;
    /// RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub level: Level,
    pub source: String,
    /// The line without the prefix its parser recognised (the whole line when none).
    pub message: String,
    pub metadata: Metadata,
    /// Sent before the live records because the start request asked for a backfill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub host: String,
    pub file: String,
    /// 1-based line number in the file.
    pub line: u64,
    /// When the agent read the line, RFC 3339 UTC with milliseconds.
    pub read_at: String,
    /// Key/values of a JSON or logfmt line other than its message, level and time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Control events. `reason` strings are part of the public contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Control {
    SessionEnding {
        reason: EndReason,
        seconds_remaining: u64,
    },
    SessionEnded {
        reason: EndReason,
    },
    /// The agent (named by `agent_id`; absent from hosts before fleet sessions) lost its link.
    AgentDisconnected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },
    AgentReconnected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },
    /// An agent started running this fleet session (it came online or started matching).
    AgentJoined {
        agent_id: String,
    },
    LogsDropped {
        count: u64,
        reason: DropReason,
        /// The agent that dropped them (drops on the agent); absent for drops on the host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },
    FilterError {
        plugin: String,
        message: String,
    },
    /// The session's filters were changed (`PATCH`): every record after this one passed
    /// these filters, every record before it the previous ones.
    FiltersChanged {
        filters: crate::FilterSpec,
        /// In a fleet session, the agent whose records from here on passed these filters
        /// (each member says so for itself).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },
    /// The session's organisation received more streaming bytes over the last hour than its
    /// configured budget.
    BandwidthWarning {
        bytes_per_hour: u64,
        budget: u64,
    },
    /// The backfill asked for at start is complete: `count` records were sent (each with
    /// `"backfill": true`); live records follow. `truncated`: the agent's scan bound stopped
    /// the search before it found as many as asked for.
    BackfillDone {
        count: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Timeout,
    Stopped,
    /// The host is shutting down.
    Shutdown,
    /// A filter of the session failed (trap, deadline, memory, fetch or configure). Filters
    /// fail closed: the session ends rather than stream records no filter decided about.
    FilterFailed,
}

/// Why lines were dropped. Data is never lost without one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// This client read too slowly and its queue overflowed (or asked to resume from a point
    /// the replay buffer no longer holds).
    ClientLagging,
    /// The session's rate limit on the agent.
    RateLimited,
    /// The agent's uplink buffer overflowed while the host was unreachable.
    AgentBufferFull,
    /// Records a failed filter held (not yet decided about) when its session ended.
    FilterFailed,
}

/// WebSocket close code sent to a client that stayed too far behind for too long.
pub const CLOSE_CLIENT_TOO_SLOW: u16 = 4008;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_match_reference() {
        let m = ClientMessage::Control(Control::SessionEnding {
            reason: EndReason::Timeout,
            seconds_remaining: 30,
        });
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type":"control","event":"session_ending","reason":"timeout","seconds_remaining":30})
        );
        let back: ClientMessage = serde_json::from_value(serde_json::json!(
            {"type":"control","event":"logs_dropped","count":3,"reason":"client_lagging"}
        ))
        .unwrap();
        assert_eq!(
            back,
            ClientMessage::Control(Control::LogsDropped {
                count: 3,
                reason: DropReason::ClientLagging,
                agent_id: None,
            })
        );
    }

    #[test]
    fn log_message_matches_reference() {
        let m = ClientMessage::Log(LogMessage {
            seq: 7,
            agent_seq: None,
            agent_id: "a1b2".into(),
            timestamp: "2024-01-15T10:00:00.000Z".into(),
            level: Level::Error,
            source: "nginx".into(),
            message: "upstream timed out".into(),
            metadata: Metadata {
                host: "edge-location-01".into(),
                file: "/var/log/nginx/error.log".into(),
                line: 12345,
                read_at: "2024-01-15T10:00:00.123Z".into(),
                fields: None,
            },
            backfill: false,
        });
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type":"log","seq":7,"agent_id":"a1b2",
                "timestamp":"2024-01-15T10:00:00.000Z",
                "level":"ERROR","source":"nginx","message":"upstream timed out",
                "metadata":{"host":"edge-location-01","file":"/var/log/nginx/error.log","line":12345,
                    "read_at":"2024-01-15T10:00:00.123Z"}})
        );
    }
}
