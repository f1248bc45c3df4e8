//! `GET /api/v1/agents`, `GET /api/v1/agents/{id}`, `GET /api/v1/agents/{id}/metrics`, and,
//! for admins, `POST /api/v1/agents` (enroll) and `DELETE /api/v1/agents/{id}` (revoke).
//! `{id}` is an agent's UUID or its name.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use logfleet_protocol::labels::{Labels, MAX_LABELS, parse_label};
use logfleet_protocol::rest::{
    AgentInfo, AgentMetrics, EnrollRequest, EnrollResponse, RevokeResponse,
};
use serde::Serialize;
use uuid::Uuid;

use super::body::JsonBody;
use crate::api::query::{query_count_repeating, query_values};
use crate::audit::Kind;
use crate::auth::{Admin, Role, User};
use crate::enrollment::EnrollmentError;
use crate::error::ApiError;
use crate::identity::AgentKey;
use crate::state::AppState;
use crate::time::rfc3339;

/// Lifetime of a token handed out at enrollment (as `logfleet-host token agent`'s default).
pub const ENROLLED_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// `?limit=N&offset=M` page through a large fleet (sorted by name); without them the whole
/// list is returned. `total` is the number of agents in the organisation, or with
/// `?label=KEY=VALUE` (repeatable: all must match) the number that carry those labels.
pub async fn list(
    State(state): State<AppState>,
    User(claims): User,
    uri: Uri,
) -> Result<Response, ApiError> {
    let offset = query_count_repeating(&uri, "offset", Some("label"))?.unwrap_or(0);
    let limit = query_count_repeating(&uri, "limit", Some("label"))?.unwrap_or(usize::MAX);
    let mut labels = Labels::new();
    for pair in query_values(&uri, "label")? {
        let (key, value) = parse_label(&pair)
            .map_err(|e| ApiError::bad_request("invalid_label", format!("label: {e}")))?;
        labels.insert(key, value);
    }
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    let sessions = state.sessions.counts_by_agent(&claims.org);
    let body = state
        .agents
        .list_json(&claims.org, offset, limit, &sessions, &labels);
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
                .info(&a.key, state.sessions.count_for_agent(&a.key))
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
        .and_then(|a| state.agents.metrics(&a.key))
        .map(Json)
        .ok_or_else(|| ApiError::agent_not_found(&id))
}

/// Enrolls an agent of the admin's org: a new id, stored under the data dir, listed (offline)
/// at once, and a token for it.
pub async fn enroll(
    State(state): State<AppState>,
    Admin(claims): Admin,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let enrollments = state.enrollments.clone();
    let (org, by) = (claims.org.clone(), claims.sub.clone());
    let labels = req.labels.clone();
    let name = req.name.clone();
    let enrolled =
        tokio::task::spawn_blocking(move || enrollments.enroll(&org, &name, labels, &by))
            .await
            .map_err(|_| ApiError::internal("enrollment task failed"))?
            .map_err(enrollment_error)?;
    let key = AgentKey::new(claims.org.clone(), enrolled.id);
    let token = state
        .auth
        .mint(
            &enrolled.id.to_string(),
            &claims.org,
            Role::Agent,
            Some(&enrolled.name),
            ENROLLED_TOKEN_TTL,
        )
        .map_err(|e| ApiError::internal(format!("cannot mint the agent token: {e}")))?;
    state
        .agents
        .enroll(&key, &enrolled.name, enrolled.labels.clone());
    state.audit.record(
        Kind::AgentEnroll,
        Some(&claims.org),
        &claims.sub,
        serde_json::json!({"agent_id": enrolled.id, "name": enrolled.name, "labels": enrolled.labels}),
    );
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            agent_id: enrolled.id.to_string(),
            token,
        }),
    ))
}

/// Revokes an agent of the admin's org: persisted first, then its sessions end, its live link
/// is closed (code 4010) and it leaves the list. A UUID this host has not seen is revoked too,
/// so a stolen token can be refused before its agent ever connects here.
pub async fn revoke(
    State(state): State<AppState>,
    Admin(claims): Admin,
    Path(id): Path<String>,
) -> Result<Json<RevokeResponse>, ApiError> {
    // Revocation cannot be undone: an id means that agent and no other (never an agent whose
    // name looks like it), and a name must say which agent it means.
    let key = match Uuid::parse_str(&id) {
        Ok(uuid) => AgentKey::new(claims.org.clone(), uuid),
        Err(_) => {
            if state.agents.count_named(&claims.org, &id) > 1 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ambiguous_agent",
                    "several agents have this name; revoke by agent id",
                ));
            }
            state
                .agents
                .resolve(&claims.org, &id)
                .ok_or_else(|| ApiError::agent_not_found(&id))?
                .key
        }
    };
    let enrollments = state.enrollments.clone();
    let (revoking, by) = (key.clone(), claims.sub.clone());
    let revoked = tokio::task::spawn_blocking(move || enrollments.revoke(&revoking, &by))
        .await
        .map_err(|_| ApiError::internal("revocation task failed"))?;
    // The agent is refused from here on (its token at connect, and a link that connected in
    // the meantime checks again after registering). Unlist it before ending its sessions, so
    // no new session can be started on it in between.
    let in_force = !matches!(
        revoked,
        Err(EnrollmentError::Invalid(_) | EnrollmentError::TooMany)
    );
    let sessions_ended = if in_force {
        state.agents.remove(&key);
        state.sessions.end_for_agent(&key)
    } else {
        0
    };
    let revoked = revoked.map_err(enrollment_error)?;
    tracing::info!(agent = %key, by = %claims.sub, sessions_ended, "agent revoked");
    state.audit.record(
        Kind::AgentRevoke,
        Some(&claims.org),
        &claims.sub,
        serde_json::json!({"agent_id": key.id, "sessions_ended": sessions_ended}),
    );
    Ok(Json(RevokeResponse {
        agent_id: key.id.to_string(),
        revoked_at: rfc3339(revoked.revoked_at),
        sessions_ended,
    }))
}

fn enrollment_error(e: EnrollmentError) -> ApiError {
    match e {
        EnrollmentError::Invalid(message) => ApiError::bad_request("invalid_request", message),
        EnrollmentError::TooMany => {
            ApiError::new(StatusCode::CONFLICT, "too_many_agents", e.to_string())
        }
        EnrollmentError::Io(_) | EnrollmentError::Corrupt(_) => {
            tracing::error!(error = %e, "agent store");
            ApiError::internal("cannot store the change; try again")
        }
        EnrollmentError::NotPersisted(_) => {
            tracing::error!(error = %e, "agent store");
            ApiError::internal(
                "the agent is cut off, but its revocation could not be saved and would be lost at a restart; revoke it again",
            )
        }
    }
}
