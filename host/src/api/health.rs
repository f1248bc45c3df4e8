//! `GET /healthz`, `GET /metrics` (Prometheus text format) and `GET /api/v1/openapi.json`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::LimitConfig;
use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The OpenAPI document of this API, checked against the router by tests.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi(State(state): State<AppState>) -> Response {
    match document(&state.config.limits) {
        Some(doc) => Json(doc).into_response(),
        // Unreachable while the unit test below passes; the document as written is still right
        // for a host with the default maxima.
        None => ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response(),
    }
}

/// [`OPENAPI`] as this host serves it: the rate-limit maxima are this host's own
/// (`--max-lines-per-second`, `--max-bytes-per-second`), so a client or a conformance tool
/// reading the document knows which `limits` the host accepts.
pub fn document(limits: &LimitConfig) -> Option<Value> {
    let mut doc: Value = serde_json::from_str(OPENAPI).ok()?;
    let props = doc.pointer_mut("/components/schemas/Limits/properties")?;
    *props.pointer_mut("/lines_per_second/maximum")? = json!(limits.max.lines_per_second);
    *props.pointer_mut("/bytes_per_second/maximum")? = json!(limits.max.bytes_per_second);
    Some(doc)
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = &state.stats;
    let (replay_bytes, queue_bytes) = state.sessions.fanout_bytes();
    let rows: [(&str, &str, &str, u64); 13] = [
        (
            "logfleet_agents_online",
            "gauge",
            "Agents connected now.",
            state.agents.online() as u64,
        ),
        (
            "logfleet_sessions_active",
            "gauge",
            "Active streaming sessions.",
            state.sessions.active() as u64,
        ),
        (
            "logfleet_agent_connections_total",
            "counter",
            "Agent connections accepted.",
            s.agent_connections.load(Ordering::Relaxed),
        ),
        (
            "logfleet_log_lines_received_total",
            "counter",
            "Log lines received from agents.",
            s.log_lines_received.load(Ordering::Relaxed),
        ),
        (
            "logfleet_agent_dropped_lines_total",
            "counter",
            "Lines agents reported dropped (rate limit, full buffer).",
            s.agent_drops_reported.load(Ordering::Relaxed),
        ),
        (
            "logfleet_duplicate_lines_skipped_total",
            "counter",
            "Log lines agents sent again that their session already had (resends after a restart).",
            s.duplicate_lines_skipped.load(Ordering::Relaxed),
        ),
        (
            "logfleet_client_messages_dropped_total",
            "counter",
            "Messages slow WebSocket clients lost.",
            s.client_messages_dropped.load(Ordering::Relaxed),
        ),
        (
            "logfleet_clients_closed_slow_total",
            "counter",
            "WebSocket clients closed for being too slow.",
            s.clients_closed_slow.load(Ordering::Relaxed),
        ),
        (
            "logfleet_agent_limit_violations_total",
            "counter",
            "Agent links closed (code 4011) for breaking a limit on what an agent sends.",
            s.agent_limit_violations.load(Ordering::Relaxed),
        ),
        (
            "logfleet_agent_write_timeouts_total",
            "counter",
            "Agent links dropped because the agent did not read what the host wrote in time.",
            s.agent_write_timeouts.load(Ordering::Relaxed),
        ),
        (
            "logfleet_replay_bytes",
            "gauge",
            "Bytes every session's resume buffer holds now (--replay-budget-bytes).",
            replay_bytes as u64,
        ),
        (
            "logfleet_client_queue_bytes",
            "gauge",
            "Bytes every session's live client queue holds now (--queue-budget-bytes).",
            queue_bytes as u64,
        ),
        (
            "logfleet_audit_events_pending_loss",
            "gauge",
            "Audit events lost to a full writer queue and not yet reported in a written event.",
            state.audit.lost(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[cfg(test)]
mod tests {
    use logfleet_protocol::Level;

    use super::*;

    /// The served document carries this host's rate-limit maxima, and as written it carries
    /// the defaults (so the file itself is right for a host started without the flags).
    #[test]
    fn served_document_states_this_hosts_maxima() {
        let written: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document(&LimitConfig::default()), Some(written));
        let mut limits = LimitConfig::default();
        limits.max.lines_per_second = 7;
        limits.max.bytes_per_second = 9;
        let doc = document(&limits).unwrap();
        let props = &doc["components"]["schemas"]["Limits"]["properties"];
        assert_eq!(props["lines_per_second"]["maximum"], 7);
        assert_eq!(props["bytes_per_second"]["maximum"], 9);
    }

    /// The document's pattern for level names matches exactly the names the host accepts:
    /// every string of up to four lower-case letters, and the longer names in several cases.
    #[test]
    fn level_pattern_is_exactly_the_accepted_names() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let pattern =
            doc["components"]["schemas"]["Filters"]["properties"]["level"]["items"]["pattern"]
                .as_str()
                .unwrap();
        let pattern = regex::Regex::new(pattern).unwrap();
        let agree = |name: &str| {
            assert_eq!(
                pattern.is_match(name),
                Level::parse(name).is_some(),
                "{name:?}"
            );
        };
        let letters = b'a'..=b'z';
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .filter(|n| n.len() == names.last().map_or(0, String::len))
                .flat_map(|n| letters.clone().map(move |c| format!("{n}{}", c as char)))
                .collect();
            names.extend(longer);
        }
        assert_eq!(names.len(), (0..=4).map(|n| 26usize.pow(n)).sum::<usize>());
        for name in &names {
            agree(name);
        }
        for name in [
            "trace",
            "verbose",
            "finest",
            "finer",
            "debug",
            "information",
            "informational",
            "notice",
            "warning",
            "error",
            "severe",
            "fatal",
            "critical",
            "emerg",
            "emergency",
            "alert",
            "panic",
            "errors",
            "informationals",
            "loud",
            "warn ",
            " warn",
        ] {
            for cased in [
                name.to_owned(),
                name.to_uppercase(),
                name.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect(),
            ] {
                agree(&cased);
            }
        }
    }
}
