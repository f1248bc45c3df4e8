//! `GET /api/v1/agents`, `GET /api/v1/agents/{id}`, `GET /api/v1/agents/{id}/metrics`.
//! `{id}` is an agent's UUID or its name.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use logfleet_protocol::rest::{AgentInfo, AgentMetrics};
use serde::Serialize;

use crate::auth::{User, query_count};
use crate::error::ApiError;
use crate::state::AppState;

/// `?limit=N&offset=M` page through a large fleet (sorted by name); without them the whole
/// list is returned. `total` is always the number of agents in the organisation.
pub async fn list(
    State(state): State<AppState>,
    User(claims): User,
    uri: Uri,
) -> Result<Response, ApiError> {
    let offset = query_count(&uri, "offset")?.unwrap_or(0);
    let limit = query_count(&uri, "limit")?.unwrap_or(usize::MAX);
    let sessions = state.sessions.counts_by_agent();
    let body = state
        .agents
        .list_json(&claims.org, offset, limit, &sessions);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `{"agent": {...}}`.
#[derive(Serialize)]
pub struct AgentResponse {
    agent: AgentInfo,
}

pub async fn get(
    State(state): State<AppState>,
    User(claims): User,
    Path(id): Path<String>,
) -> Result<Json<AgentResponse>, ApiError> {
    let agent = state
        .agents
        .resolve(&claims.org, &id)
        .and_then(|a| {
            state
                .agents
                .info(&claims.org, a.id, state.sessions.count_for_agent(a.id))
        })
        .ok_or_else(|| ApiError::agent_not_found(&id))?;
    Ok(Json(AgentResponse { agent }))
}

pub async fn metrics(
    State(state): State<AppState>,
    User(claims): User,
    Path(id): Path<String>,
) -> Result<Json<AgentMetrics>, ApiError> {
    state
        .agents
        .resolve(&claims.org, &id)
        .and_then(|a| state.agents.metrics(&claims.org, a.id))
        .map(Json)
        .ok_or_else(|| ApiError::agent_not_found(&id))
}
