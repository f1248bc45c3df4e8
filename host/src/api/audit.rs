//! `GET /api/v1/audit` (admin): the org's audit trail, newest first.
//! `?since=RFC3339&actor=NAME&kind=KIND&limit=N&offset=M`.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{self, Event, Kind, Query};
use crate::auth::{Admin, query_count, query_param};
use crate::error::ApiError;
use crate::state::AppState;

/// Events per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;

/// `{"events": [...], "more": bool}`: `more` tells whether `offset + limit` has a next page.
#[derive(Serialize)]
pub struct AuditPage {
    events: Vec<Event>,
    more: bool,
}

pub async fn list(
    State(state): State<AppState>,
    Admin(claims): Admin,
    uri: Uri,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query_count(&uri, "limit")?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > audit::MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit must be between 1 and {}", audit::MAX_PAGE),
        ));
    }
    let since = query_param(&uri, "since")
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_request",
                        "since must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
                    )
                })
        })
        .transpose()?;
    let kind = query_param(&uri, "kind")
        .map(|k| {
            Kind::parse(&k).ok_or_else(|| {
                let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::bad_request(
                    "invalid_request",
                    format!("kind must be one of {}", kinds.join(", ")),
                )
            })
        })
        .transpose()?;
    let query = Query {
        org: claims.org,
        since,
        actor: query_param(&uri, "actor"),
        kind,
        limit,
        offset: query_count(&uri, "offset")?.unwrap_or(0),
    };
    let (events, more) = state.audit.read(query).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the audit log");
        ApiError::internal("cannot read the audit log")
    })?;
    Ok(Json(AuditPage { events, more }))
}
