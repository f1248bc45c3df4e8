//! JWT authentication: the claims, minting, verification, and the extractors handlers use.
//!
//! Tokens are HS256 with the host's secret. Any standard JWT library can mint one with these
//! claims. REST takes `Authorization: Bearer`; WebSockets also take `?token=` because browsers
//! cannot set headers on a WebSocket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Clock skew tolerated on `exp`, in seconds.
const EXP_LEEWAY_SECONDS: u64 = 5;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Agent,
}

/// The claims LogFleet reads. Others a minting library adds (`nbf`, `jti`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's name, or the agent's UUID.
    pub sub: String,
    /// The tenant.
    pub org: String,
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// An agent's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Signs and verifies tokens with the host's secret.
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Auth {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = EXP_LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `sub` in `org` valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        org: &str,
        role: Role,
        name: Option<&str>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            org: org.to_owned(),
            role,
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            name: name.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies signature, algorithm and expiry. `alg: none` and other algorithms are refused.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                ApiError::unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::InvalidSignature => "token signature is not valid".to_owned(),
                    ErrorKind::InvalidAlgorithm => "token must be signed with HS256".to_owned(),
                    _ => format!("invalid token: {e}"),
                })
            })
    }
}

/// A caller holding a user or admin token. Agent tokens are refused with 403.
#[derive(Debug, Clone)]
pub struct User(pub Claims);

/// Like [`User`], but the token may also come in `?token=` (WebSocket upgrades).
#[derive(Debug, Clone)]
pub struct WsUser(pub Claims);

/// A connecting agent: its id (from `sub`) and tenant. User tokens are refused with 403.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub id: Uuid,
    pub org: String,
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

/// Query strings are read in [`crate::api::query`] (decoded, duplicates refused); `?token=`
/// below goes through it too.
pub use crate::api::query::{query_count, query_param};

fn authenticate(parts: &Parts, state: &AppState, allow_query: bool) -> Result<Claims, ApiError> {
    let claims = match bearer(parts)? {
        Some(token) => state.auth.verify(token)?,
        None => match allow_query
            .then(|| query_param(&parts.uri, "token"))
            .flatten()
        {
            Some(token) => state.auth.verify(&token)?,
            None => {
                return Err(ApiError::unauthorized(if allow_query {
                    "missing token: send `Authorization: Bearer <token>` or `?token=<token>`"
                } else {
                    "missing token: send `Authorization: Bearer <token>`"
                }));
            }
        },
    };
    Ok(claims)
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
        Ok(AgentIdentity {
            id,
            org: claims.org,
            name: claims.name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn mint_and_verify() {
        let auth = Auth::new(SECRET);
        let t = auth
            .mint("alice", "acme", Role::User, None, Duration::from_secs(60))
            .unwrap();
        let c = auth.verify(&t).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.org.as_str(), c.role),
            ("alice", "acme", Role::User)
        );
    }

    #[test]
    fn wrong_secret_expired_and_none_are_refused() {
        let auth = Auth::new(SECRET);
        let other = Auth::new(b"ffffffffffffffffffffffffffffffff");
        let t = other
            .mint("a", "o", Role::User, None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            auth.verify(&t).unwrap_err().message,
            "token signature is not valid"
        );

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub":"a","org":"o","role":"user","exp":1}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(auth.verify(&expired).unwrap_err().message, "token expired");

        // {"alg":"none","typ":"JWT"} . {"sub":"a","org":"o","role":"admin","exp":9999999999} .
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwib3JnIjoibyIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(auth.verify(none).unwrap_err().status, 401);
    }
}
