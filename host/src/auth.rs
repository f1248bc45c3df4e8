//! Who is calling: the extractors handlers use, on top of [`crate::jwt`]'s verification.
//!
//! REST takes `Authorization: Bearer`. WebSockets also take the token as a subprotocol
//! ([`WS_TOKEN_PROTOCOL_PREFIX`], how browser pages send it: they cannot set headers on a
//! WebSocket, and a subprotocol keeps it out of URLs and the logs that record them) or as
//! `?token=` (the reference's form). Every refused authentication is counted and audited.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

pub use crate::jwt::{Auth, Claims, Role};

use crate::error::ApiError;
use crate::identity::AgentKey;
use crate::state::AppState;

/// A caller holding a user or admin token. Agent tokens are refused with 403.
#[derive(Debug, Clone)]
pub struct User(pub Claims);

impl User {
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }
}

/// A caller holding an admin token; users get 403 `forbidden`, agents too.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

/// Like [`User`], but the token may also come in `?token=` (WebSocket upgrades).
#[derive(Debug, Clone)]
pub struct WsUser(pub Claims);

/// A connecting agent: its identity (org and the UUID in `sub`) and the token's display name.
/// User tokens are refused with 403, revoked agents with 401.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub key: AgentKey,
    pub name: Option<String>,
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::unauthorized(
            "Authorization header must be `Bearer <token>`",
        )),
    }
}

/// The subprotocol a browser offers together with its token ([`WS_TOKEN_PROTOCOL_PREFIX`]),
/// and the one the host selects in its answer: a browser fails a WebSocket whose answer
/// selects none of the subprotocols it offered.
pub const WS_PROTOCOL: &str = "logfleet";

/// A WebSocket's token as a subprotocol: `Sec-WebSocket-Protocol: logfleet,
/// logfleet.token.<JWT>` (a JWT's characters are all valid in a subprotocol name).
pub const WS_TOKEN_PROTOCOL_PREFIX: &str = "logfleet.token.";

/// The token offered as a subprotocol, if any.
fn protocol_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_TOKEN_PROTOCOL_PREFIX))
        .map(str::to_owned)
}

/// Query strings are read in [`crate::api::query`] (decoded, duplicates refused); `?token=`
/// below goes through it too.
pub use crate::api::query::{query_count, query_param};

fn authenticate(parts: &Parts, state: &AppState, allow_query: bool) -> Result<Claims, ApiError> {
    let result = match bearer(parts)? {
        Some(token) => state.auth.verify(token),
        None => match allow_query
            .then(|| protocol_token(parts).or_else(|| query_param(&parts.uri, "token")))
            .flatten()
        {
            Some(token) => state.auth.verify(&token),
            None => {
                return Err(ApiError::unauthorized(if allow_query {
                    "missing token: send `Authorization: Bearer <token>`, the subprotocols \
                     `logfleet, logfleet.token.<token>`, or `?token=<token>`"
                } else {
                    "missing token: send `Authorization: Bearer <token>`"
                }));
            }
        },
    };
    result.map_err(|e| {
        state.audit.auth_refused(None, None, parts.uri.path(), &e.0);
        ApiError::unauthorized(e.0)
    })
}

fn require_user(claims: Claims) -> Result<Claims, ApiError> {
    match claims.role {
        Role::User | Role::Admin => Ok(claims),
        Role::Agent => Err(ApiError::forbidden(
            "agent tokens cannot call user endpoints",
        )),
    }
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, false)
            .and_then(require_user)
            .map(User)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = authenticate(parts, state, false).and_then(require_user)?;
        if claims.role != Role::Admin {
            let why = "this needs the admin role";
            state
                .audit
                .auth_refused(Some(&claims.org), Some(&claims.sub), parts.uri.path(), why);
            return Err(ApiError::forbidden(why));
        }
        Ok(Admin(claims))
    }
}

impl FromRequestParts<AppState> for WsUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, true)
            .and_then(require_user)
            .map(WsUser)
    }
}

impl FromRequestParts<AppState> for AgentIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = authenticate(parts, state, true)?;
        if claims.role != Role::Agent {
            return Err(ApiError::forbidden(
                "only agent tokens can connect as an agent",
            ));
        }
        let id = Uuid::parse_str(&claims.sub)
            .map_err(|_| ApiError::unauthorized("agent token `sub` must be the agent's UUID"))?;
        let key = AgentKey::new(claims.org, id);
        if state.enrollments.is_revoked(&key) {
            let actor = format!("agent:{}", key.id);
            state.audit.auth_refused(
                Some(&key.org),
                Some(&actor),
                parts.uri.path(),
                "revoked agent",
            );
            return Err(ApiError::unauthorized("this agent was revoked"));
        }
        Ok(AgentIdentity {
            key,
            name: claims.name,
        })
    }
}
