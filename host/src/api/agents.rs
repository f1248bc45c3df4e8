//! `GET /api/v1/agents`, `GET /api/v1/agents/{id}`, `GET /api/v1/agents/{id}/metrics`.
//! `{id}` is an agent's UUID or its name.

use axum::Json;
use axum::extract::{Path, State};
use logfleet_protocol::rest::{AgentInfo, AgentList, AgentMetrics};
use serde::Serialize;

use crate::auth::User;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, User(claims): User) -> Json<AgentList> {
    let agents = state
        .agents
        .list(&claims.org, |id| state.sessions.count_for_agent(id));
    Json(AgentList {
        total: agents.len(),
        agents,
    })
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
