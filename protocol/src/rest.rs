//! REST request and response bodies. Field names and shapes follow the public reference
//! (`shared/reference/streaming-api.md`) exactly; timestamps are RFC 3339 UTC strings.

use serde::{Deserialize, Serialize};

use crate::{FilterSpec, Limits};

/// Default session length when `timeout_seconds` is omitted.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// Longest session a user may ask for.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
/// How long before expiry clients are warned with `session_ending`.
pub const WARNING_SECONDS: u64 = 30;

/// `POST /api/v1/stream/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The agent's id (UUID) or its name. Exactly one of `agent_id`, `agent_ids` and
    /// `selector` is given (the host answers 400 `invalid_target` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// A fleet session on these agents (ids or names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<String>>,
    /// A fleet session on every agent the selector matches, now and while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<crate::labels::Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FilterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Recent records to send before the live ones (see [`Backfill`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
}

/// Most records a start request may ask to be backfilled.
pub const MAX_BACKFILL_LINES: u32 = 10_000;

/// `"backfill": {"lines": N}` in a start request: before the live records, the agent sends the
/// `lines` most recent records of the session's sources that pass its filters, oldest first,
/// then a `backfill_done` control. `lines` is 1..=[`MAX_BACKFILL_LINES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    pub lines: u32,
}

impl Backfill {
    /// Whether `lines` is within 1..=[`MAX_BACKFILL_LINES`].
    pub fn is_valid(&self) -> bool {
        (1..=MAX_BACKFILL_LINES).contains(&self.lines)
    }
}

/// `{"session": {...}}`, the answer to start and stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResponse {
    pub session: Session,
}

/// A session as start and stop return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    /// The agent of a single-agent session; a fleet session's first member.
    pub agent_id: String,
    /// A fleet session's current members (absent for a single-agent session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<String>>,
    /// `active`, or `stopped` / `expired` once ended.
    pub status: String,
    pub started_at: String,
    pub expires_at: String,
    pub websocket_url: String,
    /// The session's filters (`GET` and `PATCH` of one session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<crate::FilterSpec>,
    /// What the agent shipped for the session (`GET` of one session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
}

/// `POST /api/v1/agents` (admin): enrolls a new agent of the caller's org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `201` answer to an enrollment: the new agent's id and its token (shown once; the host
/// keeps no copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    pub token: String,
}

/// Answer to `DELETE /api/v1/agents/{id}` (admin): the agent is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub agent_id: String,
    pub revoked_at: String,
    /// Its sessions that were active and are now ended.
    pub sessions_ended: usize,
}

/// `PATCH /api/v1/stream/sessions/{id}`: new filters for a running session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSessionRequest {
    pub filters: crate::FilterSpec,
}

/// `POST /api/v1/stream/stop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    pub session_id: String,
}

/// `GET /api/v1/stream/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionSummary>,
    pub total: usize,
}

/// One entry of the sessions list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub agent_id: String,
    pub agent_name: String,
    /// A fleet session's current members (absent for a single-agent session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<String>>,
    pub status: String,
    pub started_at: String,
    pub expires_at: String,
    /// Who started it (the token's `sub`).
    pub created_by: String,
    /// Number of WebSocket clients connected right now.
    pub clients: usize,
    /// What the agent shipped for the session (see the host's `usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
}

/// `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
    pub total: usize,
}

/// What the host knows of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub version: String,
    /// `online` or `offline`.
    pub status: String,
    /// Labels given at enrollment (`POST /api/v1/agents`) and by the agent (`--label`,
    /// `[labels]`; enrollment's win on a shared key); absent when there are none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    pub sources: Vec<SourceInfo>,
    pub connected_at: Option<String>,
    pub last_seen: String,
    /// Sessions of this agent that are active now.
    pub active_sessions: usize,
}

/// A configured source on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    /// A path or glob.
    pub path: String,
}

/// `GET /api/v1/agents/{id}/metrics`: the latest report and the last hour of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMetrics {
    pub agent_id: String,
    pub latest: Option<MetricsReport>,
    pub history: Vec<MetricsReport>,
}

/// One metrics interval of an agent, as users see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// End of the interval.
    pub timestamp: String,
    pub interval_seconds: f64,
    pub sources: Vec<SourceMetrics>,
    pub agent: AgentHealth,
}

/// Per-source counts over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceMetrics {
    pub name: String,
    pub lines: u64,
    pub bytes: u64,
    /// Lines per level, keyed by level name; levels with no lines are omitted.
    pub levels: std::collections::BTreeMap<String, u64>,
}

/// The agent's own health at the end of an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub uptime_seconds: u64,
    pub rss_bytes: u64,
    pub files_watched: u32,
    pub active_sessions: u32,
    /// Lines cut to the agent's maximum line length, this interval.
    pub lines_truncated: u64,
    /// Bytes waiting in the uplink buffer.
    pub buffered_bytes: u64,
}

/// `{"error": {"code": "snake_case", "message": "human text"}}`, every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// A stored plugin, as the plugin registry reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub uploaded_at: String,
}

/// `{"plugin": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginResponse {
    pub plugin: PluginInfo,
}

/// `GET /api/v1/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginList {
    pub plugins: Vec<PluginInfo>,
    pub total: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_start_request_parses() {
        let req: StartRequest = serde_json::from_str(
            r#"{"agent_id":"a1b2c3d4-e5f6-7890-abcd-ef1234567890","timeout_seconds":300,
                "filters":{"level":["ERROR","WARN"],"source":"nginx"}}"#,
        )
        .unwrap();
        assert_eq!(req.timeout_seconds, Some(300));
        let extend: StartRequest =
            serde_json::from_str(r#"{"agent_id":"x","timeout_seconds":300}"#).unwrap();
        assert!(extend.filters.is_none());
        let fleet: StartRequest =
            serde_json::from_str(r#"{"selector":{"labels":{"env":"prod"},"name":"edge-*"}}"#)
                .unwrap();
        assert_eq!(fleet.selector.unwrap().labels["env"], "prod");
        let listed: StartRequest = serde_json::from_str(r#"{"agent_ids":["a","b"]}"#).unwrap();
        assert_eq!(listed.agent_ids.unwrap().len(), 2);
        assert!(serde_json::from_str::<StartRequest>(r#"{"agent_id":"x","bogus":1}"#).is_err());
        let backfill: StartRequest =
            serde_json::from_str(r#"{"agent_id":"x","backfill":{"lines":100}}"#).unwrap();
        assert_eq!(backfill.backfill, Some(Backfill { lines: 100 }));
        assert!(
            serde_json::from_str::<StartRequest>(r#"{"agent_id":"x","backfill":{"n":1}}"#).is_err()
        );
        assert!(!Backfill { lines: 0 }.is_valid());
        assert!(
            !Backfill {
                lines: MAX_BACKFILL_LINES + 1
            }
            .is_valid()
        );
    }
}
