//! `POST /api/v1/stream/start`, `POST /api/v1/stream/stop`, `GET /api/v1/stream/sessions`,
//! `GET` and `PATCH /api/v1/stream/sessions/{id}`.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use logfleet_protocol::agent::RateLimits;
use logfleet_protocol::rest::{
    Backfill, DEFAULT_TIMEOUT_SECONDS, MAX_BACKFILL_LINES, MAX_TIMEOUT_SECONDS,
    PatchSessionRequest, Session, SessionList, SessionResponse, StartRequest, StopRequest,
};
use logfleet_protocol::{FilterSpec, Filters, Limits};

use super::body::JsonBody;
use crate::audit::Kind;
use crate::auth::User;
use crate::config::{Config, LimitConfig};
use crate::error::{ApiError, echo};
use crate::filter_check::{PluginCheckError, check_plugins};
use crate::plugins::Plugins;
use crate::session::{
    MAX_AGENTS_PER_SESSION, NewSession, NewTarget, SessionView, StartRefused, StopRefused, Target,
};
use crate::state::AppState;
use crate::time::rfc3339;

pub use crate::session::{MAX_SESSIONS_PER_AGENT, MAX_SESSIONS_PER_ORG};

pub async fn start(
    State(state): State<AppState>,
    User(claims): User,
    headers: HeaderMap,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let timeout = checked_timeout(req.timeout_seconds)?;
    let filters = validated(req.filters.as_ref())?;
    let limits = effective_limits(req.limits.as_ref(), &state.config.limits)?;
    let backfill = checked_backfill(req.backfill)?;
    let target = target(&state, &claims.org, &req)?;
    let named = match &target {
        NewTarget::Agent(agent) => {
            // Checked early to spare the plugin check; `start` checks again under its lock.
            if state.sessions.count_for_agent(&agent.key) >= MAX_SESSIONS_PER_AGENT {
                return Err(too_many_sessions(&agent.name));
            }
            agent.name.clone()
        }
        NewTarget::Fleet(_) if backfill.is_some() => {
            // Each member would send its own N and its own end; not designed yet.
            return Err(ApiError::bad_request(
                "invalid_backfill",
                "backfill works with single-agent sessions only (agent_id)",
            ));
        }
        NewTarget::Fleet(_) => "every matching agent".to_owned(),
    };
    let filters = checked_plugins(&state, &claims.org, filters).await?;
    let mut details = serde_json::json!({
        "filters": audit_filters(&filters),
        "limits": limits,
        "timeout_seconds": timeout.as_secs(),
    });
    match (&target, &req.selector) {
        (NewTarget::Agent(agent), _) => {
            details["agent_id"] = serde_json::json!(agent.key.id);
            details["agent_name"] = agent.name.clone().into();
        }
        (NewTarget::Fleet(_), Some(selector)) => details["selector"] = serde_json::json!(selector),
        (NewTarget::Fleet(_), None) => details["agent_ids"] = serde_json::json!(req.agent_ids),
    }
    let view = state
        .sessions
        .start(NewSession {
            created_by: claims.sub.clone(),
            org: claims.org.clone(),
            target,
            filters,
            limits,
            timeout,
            backfill,
        })
        .map_err(|refused| start_refused(refused, &named))?;
    details["session_id"] = view.id.clone().into();
    if let Some(ids) = &view.agent_ids {
        details["members"] = serde_json::json!(ids);
    }
    state
        .audit
        .record(Kind::SessionStart, Some(&claims.org), &claims.sub, details);
    Ok(Json(SessionResponse {
        session: session_body(&view, "active", &state.config, &headers),
    }))
}

/// Where a start request runs: exactly one of `agent_id` (one online agent), `agent_ids` (a
/// fleet of these agents, each of the caller's org) or `selector` (a fleet of the caller's
/// org's agents it matches). None of them is 400 `invalid_request` (a missing field, as it
/// always was); more than one, or an empty or malformed list or selector, 400 `invalid_target`.
fn target(state: &AppState, org: &str, req: &StartRequest) -> Result<NewTarget, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_target", message);
    match (&req.agent_id, &req.agent_ids, &req.selector) {
        (Some(id), None, None) => {
            let agent = state
                .agents
                .resolve(org, id)
                .ok_or_else(|| ApiError::agent_not_found(id))?;
            if !agent.online {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "agent_offline",
                    format!("agent '{}' is offline", agent.name),
                ));
            }
            Ok(NewTarget::Agent(agent))
        }
        (None, Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_AGENTS_PER_SESSION {
                return Err(invalid(format!(
                    "agent_ids lists 1..={MAX_AGENTS_PER_SESSION} agents"
                )));
            }
            let mut keys = BTreeSet::new();
            for id in ids {
                let agent = state
                    .agents
                    .resolve(org, id)
                    .ok_or_else(|| ApiError::agent_not_found(id))?;
                keys.insert(agent.key.id);
            }
            Ok(NewTarget::Fleet(Target::Agents(keys)))
        }
        (None, None, Some(selector)) => {
            selector
                .check()
                .map_err(|e| invalid(format!("selector: {e}")))?;
            Ok(NewTarget::Fleet(Target::Selector(selector.clone())))
        }
        (None, None, None) => Err(ApiError::bad_request(
            "invalid_request",
            "missing field `agent_id` (or `agent_ids`, or `selector`)".to_owned(),
        )),
        _ => Err(invalid(
            "give exactly one of agent_id, agent_ids and selector".to_owned(),
        )),
    }
}

/// The answer to a start the sessions refused; `named` says which agent(s).
fn start_refused(refused: StartRefused, named: &str) -> ApiError {
    match refused {
        StartRefused::TooMany => too_many_sessions(named),
        StartRefused::OrgFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!(
                "your organisation already runs {MAX_SESSIONS_PER_ORG} sessions; stop one first"
            ),
        ),
        StartRefused::NoMatch => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_matching_agents",
            "no agent of your organisation matches the selector".to_owned(),
        ),
        StartRefused::NoneOnline => ApiError::new(
            StatusCode::CONFLICT,
            "agent_offline",
            "every matching agent is offline".to_owned(),
        ),
        StartRefused::TooManyAgents(n) => ApiError::new(
            StatusCode::CONFLICT,
            "too_many_agents",
            format!(
                "{n} online agents match; a session runs on at most {MAX_AGENTS_PER_SESSION}: narrow the selector"
            ),
        ),
    }
}

/// A user stops the sessions it started; an admin any session of the org.
pub async fn stop(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    JsonBody(req): JsonBody<StopRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let claims = &user.0;
    let view = state
        .sessions
        .stop(&claims.org, &req.session_id, &claims.sub, user.is_admin())
        .map_err(|refused| match refused {
            StopRefused::NotFound => ApiError::session_not_found(&req.session_id),
            StopRefused::NotOwner => ApiError::forbidden(
                "this session was started by another user; only they or an admin may stop it",
            ),
        })?;
    state.audit.record(
        Kind::SessionStop,
        Some(&claims.org),
        &claims.sub,
        serde_json::json!({"session_id": view.id, "agent_id": view.agent_id, "agent_ids": view.agent_ids}),
    );
    Ok(Json(SessionResponse {
        session: session_body(&view, "stopped", &state.config, &headers),
    }))
}

/// One session of the caller's org, with its filters.
pub async fn get(
    State(state): State<AppState>,
    User(claims): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SessionResponse>, ApiError> {
    let view = state
        .sessions
        .get(&claims.org, &id)
        .ok_or_else(|| ApiError::session_not_found(&id))?;
    let mut session = session_body(&view, "active", &state.config, &headers);
    session.filters = Some(view.filters.to_spec());
    session.usage = serde_json::to_value(&view.usage).ok();
    Ok(Json(SessionResponse { session }))
}

/// New filters for a running session, checked as at start; who may change a session is who
/// may stop it. Clients get `filters_changed` when the agent applies them.
pub async fn patch(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PatchSessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let claims = &user.0;
    // Not found, or not theirs to change, before any work on the filters (checking plugins
    // instantiates them); another org's id answers as one that does not exist.
    let current = state
        .sessions
        .get(&claims.org, &id)
        .ok_or_else(|| ApiError::session_not_found(&id))?;
    let not_owner = || {
        ApiError::forbidden(
            "this session was started by another user; only they or an admin may change it",
        )
    };
    if !user.is_admin() && current.created_by != claims.sub {
        return Err(not_owner());
    }
    let filters = validated(Some(&req.filters))?;
    let filters = checked_plugins(&state, &claims.org, filters).await?;
    let details = serde_json::json!({"session_id": id, "filters": audit_filters(&filters)});
    let view = state
        .sessions
        .change_filters(&claims.org, &id, &claims.sub, user.is_admin(), filters)
        .map_err(|refused| match refused {
            StopRefused::NotFound => ApiError::session_not_found(&id),
            StopRefused::NotOwner => not_owner(),
        })?;
    state
        .audit
        .record(Kind::SessionPatch, Some(&claims.org), &claims.sub, details);
    let mut session = session_body(&view, "active", &state.config, &headers);
    session.filters = Some(view.filters.to_spec());
    Ok(Json(SessionResponse { session }))
}

/// A start or patch request's filters, validated (no filters: everything passes).
fn validated(spec: Option<&FilterSpec>) -> Result<Filters, ApiError> {
    Ok(match spec {
        Some(spec) => spec.validate()?,
        None => Filters::default(),
    })
}

/// Valid filters with their plugins resolved to this org's digests and their configs checked
/// by instantiating them.
async fn checked_plugins(
    state: &AppState,
    org: &str,
    filters: Filters,
) -> Result<Filters, ApiError> {
    let filters = resolve_plugins(filters, &state.plugins, org)?;
    check_plugins(
        &state.runtime,
        &state.validations,
        &state.plugins,
        org,
        &filters.plugins,
    )
    .await
    .map_err(check_error)?;
    Ok(filters)
}

pub async fn list(State(state): State<AppState>, User(claims): User) -> Json<SessionList> {
    let sessions: Vec<_> = state
        .sessions
        .list(&claims.org)
        .iter()
        .map(SessionView::summary)
        .collect();
    Json(SessionList {
        total: sessions.len(),
        sessions,
    })
}

/// Filters as the audit trail keeps them: plugins by name and digest (not their configs: a config may be 64 KiB of user data, and one tenant's records
/// must not rotate the others' away).
fn audit_filters(filters: &Filters) -> serde_json::Value {
    let plugins: Vec<_> = filters
        .plugins
        .iter()
        .map(|p| serde_json::json!({"name": p.name, "digest": p.digest}))
        .collect();
    serde_json::json!({
        "levels": filters.levels,
        "sources": filters.sources,
        "pattern": filters.pattern,
        "plugins": plugins,
    })
}

fn too_many_sessions(agent: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_sessions",
        format!(
            "agent '{}' already runs {MAX_SESSIONS_PER_AGENT} sessions; stop one first",
            echo(agent)
        ),
    )
}

fn checked_timeout(timeout: Option<u64>) -> Result<Duration, ApiError> {
    let seconds = timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        return Err(ApiError::bad_request(
            "invalid_timeout",
            format!("timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS}, got {seconds}"),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// The backfill asked for: `lines` within 1..=[`MAX_BACKFILL_LINES`], else 400
/// `invalid_backfill`.
fn checked_backfill(asked: Option<Backfill>) -> Result<Option<u32>, ApiError> {
    match asked {
        None => Ok(None),
        Some(b) if b.is_valid() => Ok(Some(b.lines)),
        Some(b) => Err(ApiError::bad_request(
            "invalid_backfill",
            format!(
                "backfill.lines must be between 1 and {MAX_BACKFILL_LINES}, got {}",
                b.lines
            ),
        )),
    }
}

fn effective_limits(asked: Option<&Limits>, cfg: &LimitConfig) -> Result<RateLimits, ApiError> {
    let asked = asked.copied().unwrap_or_default();
    let lines = asked
        .lines_per_second
        .unwrap_or(cfg.default.lines_per_second);
    let bytes = asked
        .bytes_per_second
        .unwrap_or(cfg.default.bytes_per_second);
    if lines == 0 || lines > cfg.max.lines_per_second {
        return Err(ApiError::bad_request(
            "invalid_limits",
            format!(
                "limits.lines_per_second must be between 1 and {}",
                cfg.max.lines_per_second
            ),
        ));
    }
    if bytes == 0 || bytes > cfg.max.bytes_per_second {
        return Err(ApiError::bad_request(
            "invalid_limits",
            format!(
                "limits.bytes_per_second must be between 1 and {}",
                cfg.max.bytes_per_second
            ),
        ));
    }
    Ok(RateLimits {
        lines_per_second: lines,
        bytes_per_second: bytes,
    })
}

/// Pins each plugin name to the digest stored now, so the agent runs exactly that component
/// even if the name is re-uploaded during the session.
fn resolve_plugins(
    mut filters: Filters,
    plugins: &Plugins,
    org: &str,
) -> Result<Filters, ApiError> {
    for p in &mut filters.plugins {
        let info = plugins.get(org, &p.name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "plugin_not_found",
                format!(
                    "no plugin '{}'; upload it with POST /api/v1/plugins?name={}",
                    p.name, p.name
                ),
            )
        })?;
        p.digest = info.digest;
    }
    Ok(filters)
}

fn check_error(e: PluginCheckError) -> ApiError {
    match e {
        PluginCheckError::Refused(_) => ApiError::bad_request("invalid_filter", e.to_string()),
        PluginCheckError::Deleted(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", e.to_string())
        }
        PluginCheckError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        PluginCheckError::Corrupt(_) | PluginCheckError::Panicked(_) => {
            tracing::error!(error = %e, "checking a session's plugins failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

fn session_body(view: &SessionView, status: &str, config: &Config, headers: &HeaderMap) -> Session {
    Session {
        id: view.id.clone(),
        agent_id: view.agent_id.to_string(),
        agent_ids: view.agent_ids_text(),
        status: status.to_owned(),
        started_at: rfc3339(view.started_at),
        expires_at: rfc3339(view.expires_at),
        websocket_url: format!(
            "{}/api/v1/stream/ws/{}",
            websocket_base(config, headers),
            view.id
        ),
        filters: None,
        usage: None,
    }
}

/// `ws(s)://host[:port]` clients should use: `--public-url` if set, else the request's host,
/// `wss` when the host serves TLS itself or `X-Forwarded-Proto` says a proxy in front does.
fn websocket_base(config: &Config, headers: &HeaderMap) -> String {
    if let Some(url) = &config.public_url {
        let url = url.trim_end_matches('/');
        return match url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some(("http", rest)) => format!("ws://{rest}"),
            _ => url.to_owned(),
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| config.listen.to_string());
    let secure = config.tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if secure { "wss" } else { "ws" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_bounds() {
        assert_eq!(checked_timeout(None).unwrap(), Duration::from_secs(300));
        assert!(checked_timeout(Some(0)).is_err());
        assert!(checked_timeout(Some(3600)).is_ok());
        assert_eq!(
            checked_timeout(Some(3601)).unwrap_err().code,
            "invalid_timeout"
        );
    }

    #[test]
    fn limits_default_and_max() {
        let cfg = LimitConfig::default();
        assert_eq!(effective_limits(None, &cfg).unwrap(), cfg.default);
        let over = Limits {
            lines_per_second: Some(cfg.max.lines_per_second + 1),
            bytes_per_second: None,
        };
        assert_eq!(
            effective_limits(Some(&over), &cfg).unwrap_err().code,
            "invalid_limits"
        );
    }
}
