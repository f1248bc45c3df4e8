//! `GET /healthz`, `GET /metrics` (Prometheus text format) and `GET /api/v1/openapi.json`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The OpenAPI document of this API, checked against the router by tests.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = &state.stats;
    let rows: [(&str, &str, &str, u64); 9] = [
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
