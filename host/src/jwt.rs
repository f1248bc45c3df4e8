//! JWT keys: which key verifies a token, the checks every token passes, and minting.
//!
//! - HS256 tokens are the host's own (agent tokens, and user tokens minted with
//!   `logfleet-host token` or by the operator's tooling). A token without `kid` is checked
//!   against the primary secret; one with `kid` against that secret of the secrets file, so a
//!   new secret can be rolled in while tokens signed with the old one still work.
//! - RS256/ES256 tokens come from an organisation's identity provider and are checked against
//!   its public keys in a JWKS file. They may carry user or admin roles only, and each key is
//!   bound to one org (`"org"` beside the key) and verifies tokens of that org only.
//!
//! The algorithm is never taken from the token alone: the key is chosen first (by `kid` and
//! key type) and the token's `alg` must be the one that key is for.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 5;
/// Shortest accepted HS256 secret, in bytes (HS256 wants at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token read, in bytes: a header or query string is bounded anyway, this keeps the
/// work per refused request small.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Agent,
}

/// The claims LogFleet reads. `nbf` and `aud` are checked by the validation itself; others a
/// minting library adds (`jti`, …) are ignored.
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
    /// Read here so a `nbf` of the wrong type is refused, not skipped; the validation checks
    /// its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// An agent's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why a token was refused; the message is for the caller (no secrets, no token echo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// Why the key configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

/// The keys beside the primary HS256 secret (`LOGFLEET_JWT_SECRET`), as flags and files give
/// them. The primary secret verifies tokens without `kid` and signs new ones unless
/// `signing_kid` names another.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// More HS256 secrets by `kid` (rotation).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// The `kid` new tokens are signed with.
    pub signing_kid: Option<String>,
    /// Public keys for identity-provider tokens.
    pub public_keys: Vec<PublicKey>,
    /// When set, tokens must carry this `aud`; otherwise `aud` is not checked.
    pub audience: Option<String>,
}

/// One key of a JWKS file.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    /// Tokens verified with this key must be of this org.
    pub org: String,
    key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("org", &self.org)
            .finish_non_exhaustive()
    }
}

/// The secrets file: `{"signing_kid": "2026-12", "secrets": {"2026-12": "…", "2026-06": "…"}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    #[serde(default)]
    signing_kid: Option<String>,
    secrets: BTreeMap<String, String>,
}

impl JwtConfig {
    /// Adds the secrets of a secrets file (see [`SecretsFile`]'s shape in the README).
    pub fn load_secrets_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let invalid = |message: String| KeyError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let file: SecretsFile =
            serde_json::from_slice(&read(path)?).map_err(|e| invalid(e.to_string()))?;
        for (kid, secret) in file.secrets {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(invalid(format!(
                    "secret '{kid}' is {} bytes; at least {MIN_SECRET_BYTES} are required",
                    secret.len()
                )));
            }
            self.secrets.insert(kid, secret.into_bytes());
        }
        if let Some(kid) = &file.signing_kid
            && !self.secrets.contains_key(kid)
        {
            return Err(invalid(format!(
                "signing_kid '{kid}' is not among the secrets"
            )));
        }
        self.signing_kid = file.signing_kid;
        Ok(())
    }

    /// Adds the public keys of a JWKS file (`{"keys": [...]}`, RFC 7517). RSA keys verify
    /// RS256, EC P-256 keys ES256, P-384 ES384, unless the key's `alg` says otherwise within
    /// its family. Every key carries a non-standard `"org"`: the one org it may sign for.
    pub fn load_jwks_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let invalid = |message: String| KeyError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&read(path)?).map_err(|e| invalid(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| invalid("expected {\"keys\": [...]}".to_owned()))?;
        for (i, value) in keys.iter().enumerate() {
            // An identity provider is one organisation's: a key that could mint tokens for every
            // org of a multi-tenant host is refused rather than trusted.
            let org = value
                .get("org")
                .and_then(|o| o.as_str())
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    invalid(format!(
                        "key {i} has no \"org\": name the organisation whose tokens it signs"
                    ))
                })?;
            let jwk: Jwk = serde_json::from_value(value.clone())
                .map_err(|e| invalid(format!("key {i}: {e}")))?;
            let algorithm = key_algorithm(&jwk).map_err(|m| invalid(format!("key {i}: {m}")))?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(format!("key {i}: {e}")))?;
            self.public_keys.push(PublicKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                org,
                key,
            });
        }
        if self.public_keys.len() > 1 && self.public_keys.iter().any(|k| k.kid.is_none()) {
            return Err(invalid(
                "with more than one key, every key needs a `kid`".to_owned(),
            ));
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The one algorithm a JWKS key verifies.
fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let declared = jwk.common.key_algorithm;
    let (default, allowed): (Algorithm, &[KeyAlgorithm]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            &[
                KeyAlgorithm::RS256,
                KeyAlgorithm::RS384,
                KeyAlgorithm::RS512,
            ],
        ),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => (Algorithm::ES256, &[KeyAlgorithm::ES256]),
            EllipticCurve::P384 => (Algorithm::ES384, &[KeyAlgorithm::ES384]),
            _ => return Err("only P-256 and P-384 EC keys are supported".to_owned()),
        },
        _ => return Err("only RSA and EC public keys belong in a JWKS file".to_owned()),
    };
    match declared {
        None => Ok(default),
        Some(alg) if allowed.contains(&alg) => Ok(match alg {
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            _ => Algorithm::RS256,
        }),
        Some(alg) => Err(format!("`alg` {alg:?} does not fit the key type")),
    }
}

/// Verifies and mints tokens. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    keys: Arc<Keys>,
}

struct Keys {
    signing: Option<(Option<String>, EncodingKey)>,
    primary: Option<DecodingKey>,
    by_kid: BTreeMap<String, DecodingKey>,
    public: Vec<PublicKey>,
    audience: Option<String>,
}

/// A key chosen for a token, and what tokens it may verify.
struct Chosen<'a> {
    key: &'a DecodingKey,
    algorithm: Algorithm,
    /// Identity-provider key: user roles only, maybe bound to an org.
    external: Option<&'a PublicKey>,
}

impl Auth {
    /// One HS256 secret, no rotation, no identity provider (tests, `token` subcommands).
    pub fn new(secret: &[u8]) -> Self {
        Self::from_config(Some(secret), &JwtConfig::default())
    }

    /// The primary secret (if any) and the other keys.
    pub fn from_config(primary: Option<&[u8]>, config: &JwtConfig) -> Self {
        let signing = match &config.signing_kid {
            Some(kid) => config
                .secrets
                .get(kid)
                .map(|s| (Some(kid.clone()), EncodingKey::from_secret(s))),
            None => primary.map(|s| (None, EncodingKey::from_secret(s))),
        };
        Auth {
            keys: Arc::new(Keys {
                signing,
                primary: primary.map(DecodingKey::from_secret),
                by_kid: config
                    .secrets
                    .iter()
                    .map(|(kid, s)| (kid.clone(), DecodingKey::from_secret(s)))
                    .collect(),
                public: config.public_keys.clone(),
                audience: config.audience.clone(),
            }),
        }
    }

    /// Mints an HS256 token for `sub` in `org` valid for `ttl`, with the signing key's `kid`.
    pub fn mint(
        &self,
        sub: &str,
        org: &str,
        role: Role,
        name: Option<&str>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let Some((kid, key)) = &self.keys.signing else {
            return Err(ErrorKind::InvalidKeyFormat.into());
        };
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
            nbf: None,
            name: name.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.clone();
        jsonwebtoken::encode(&header, &claims, key)
    }

    /// Verifies key, algorithm, signature, `exp` (required), `nbf` and `aud`, and what an
    /// identity-provider key may sign.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError(format!("token is over {MAX_TOKEN_BYTES} bytes")));
        }
        // Messages never repeat the token's content: they are answered to anyone and audited.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            TokenError("invalid token: not a JWT with a readable header".to_owned())
        })?;
        let chosen = self.choose(&header)?;
        let mut validation = Validation::new(chosen.algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.keys.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Claims>(token, chosen.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                TokenError(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".to_owned(),
                    ErrorKind::InvalidSignature => "token signature is not valid".to_owned(),
                    ErrorKind::InvalidAudience => {
                        "token audience (aud) is not this host's".to_owned()
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("token lacks the required `{claim}` claim")
                    }
                    ErrorKind::InvalidAlgorithm => {
                        "token algorithm does not fit its key".to_owned()
                    }
                    _ => "invalid token: its claims are not LogFleet's (sub, org, role, exp)"
                        .to_owned(),
                })
            })?;
        if let Some(external) = chosen.external {
            if claims.role == Role::Agent {
                return Err(TokenError(
                    "agent tokens must be minted by the host (enroll the agent)".to_owned(),
                ));
            }
            if external.org != claims.org {
                return Err(TokenError(
                    "this signing key may not mint tokens for that org".to_owned(),
                ));
            }
        }
        Ok(claims)
    }

    fn choose(&self, header: &Header) -> Result<Chosen<'_>, TokenError> {
        let keys = &self.keys;
        match header.alg {
            Algorithm::HS256 => {
                let key = match &header.kid {
                    Some(kid) => keys.by_kid.get(kid).ok_or_else(|| {
                        TokenError("token key id (kid) is not known to this host".to_owned())
                    })?,
                    None => keys.primary.as_ref().ok_or_else(|| {
                        TokenError("token has no key id (kid); this host needs one".to_owned())
                    })?,
                };
                Ok(Chosen {
                    key,
                    algorithm: Algorithm::HS256,
                    external: None,
                })
            }
            alg @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384) => {
                let candidates = keys.public.iter().filter(|k| match &header.kid {
                    Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
                    None => keys.public.len() == 1,
                });
                let key = candidates.into_iter().next().ok_or_else(|| {
                    TokenError(if keys.public.is_empty() {
                        format!("{alg:?} tokens are not accepted: this host has no --jwks-file")
                    } else {
                        "token key id (kid) is not in this host's JWKS".to_owned()
                    })
                })?;
                if key.algorithm != alg {
                    return Err(TokenError(format!(
                        "token is signed with {alg:?} but its key is for {:?}",
                        key.algorithm
                    )));
                }
                Ok(Chosen {
                    key: &key.key,
                    algorithm: alg,
                    external: Some(key),
                })
            }
            other => Err(TokenError(format!(
                "token algorithm {other:?} is not accepted (HS256, or RS256/ES256 with --jwks-file)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(kid: Option<&str>, secret: &[u8], claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c =
            serde_json::json!({"sub": "alice", "org": "acme", "role": "user", "exp": now() + 60});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

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
            auth.verify(&t).unwrap_err().0,
            "token signature is not valid"
        );
        let expired = hs256(None, SECRET, claims(serde_json::json!({"exp": 1})));
        assert_eq!(auth.verify(&expired).unwrap_err().0, "token expired");
        let no_exp = hs256(
            None,
            SECRET,
            serde_json::json!({"sub":"a","org":"o","role":"user"}),
        );
        assert!(auth.verify(&no_exp).unwrap_err().0.contains("exp"));
        // {"alg":"none","typ":"JWT"} . {"sub":"a","org":"o","role":"admin","exp":9999999999} .
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwib3JnIjoibyIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(auth.verify(none).is_err());
    }

    /// `nbf` in the future (beyond the leeway) is refused; `aud` is accepted when the host
    /// checks none and must match when it does.
    #[test]
    fn nbf_is_honoured_and_aud_checked_only_when_configured() {
        let auth = Auth::new(SECRET);
        let later = hs256(
            None,
            SECRET,
            claims(serde_json::json!({"nbf": now() + 600})),
        );
        assert_eq!(
            auth.verify(&later).unwrap_err().0,
            "token is not valid yet (nbf)"
        );
        let skewed = hs256(None, SECRET, claims(serde_json::json!({"nbf": now() + 2})));
        assert!(auth.verify(&skewed).is_ok(), "within the leeway");
        let with_aud = hs256(None, SECRET, claims(serde_json::json!({"aud": "logfleet"})));
        assert!(auth.verify(&with_aud).is_ok());

        let strict = Auth::from_config(
            Some(SECRET),
            &JwtConfig {
                audience: Some("logfleet".into()),
                ..JwtConfig::default()
            },
        );
        assert!(strict.verify(&with_aud).is_ok());
        let other = hs256(None, SECRET, claims(serde_json::json!({"aud": "grafana"})));
        assert!(strict.verify(&other).unwrap_err().0.contains("audience"));
        let none = hs256(None, SECRET, claims(serde_json::json!({})));
        assert!(strict.verify(&none).unwrap_err().0.contains("aud"));
    }

    /// Several secrets by `kid`: tokens of the old and the new secret both verify, an unknown
    /// `kid` is refused, and new tokens carry the signing `kid`.
    #[test]
    fn secrets_rotate_by_kid() {
        let old = b"old-secret-old-secret-old-secret!!".to_vec();
        let new = b"new-secret-new-secret-new-secret!!".to_vec();
        let auth = Auth::from_config(
            None,
            &JwtConfig {
                secrets: BTreeMap::from([("old".into(), old.clone()), ("new".into(), new.clone())]),
                signing_kid: Some("new".into()),
                ..JwtConfig::default()
            },
        );
        let minted = auth
            .mint("bob", "acme", Role::Admin, None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&minted).unwrap().kid.as_deref(),
            Some("new")
        );
        assert!(auth.verify(&minted).is_ok());
        assert!(
            auth.verify(&hs256(Some("old"), &old, claims(serde_json::json!({}))))
                .is_ok()
        );
        let swapped = hs256(Some("new"), &old, claims(serde_json::json!({})));
        assert!(auth.verify(&swapped).is_err(), "the kid picks the key");
        let unknown = hs256(Some("gone"), &old, claims(serde_json::json!({})));
        assert!(auth.verify(&unknown).unwrap_err().0.contains("kid"));
        let kidless = hs256(None, &old, claims(serde_json::json!({})));
        assert!(
            auth.verify(&kidless).is_err(),
            "no primary secret configured"
        );
    }

    #[test]
    fn secrets_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let write = |v: serde_json::Value| std::fs::write(&path, v.to_string()).unwrap();
        write(serde_json::json!({"signing_kid": "a", "secrets": {"a": "x".repeat(32)}}));
        let mut config = JwtConfig::default();
        config.load_secrets_file(&path).unwrap();
        assert_eq!(config.signing_kid.as_deref(), Some("a"));
        write(serde_json::json!({"secrets": {"a": "short"}}));
        assert!(JwtConfig::default().load_secrets_file(&path).is_err());
        write(serde_json::json!({"signing_kid": "b", "secrets": {"a": "x".repeat(32)}}));
        assert!(JwtConfig::default().load_secrets_file(&path).is_err());
    }

    /// A JWKS key that does not name its org is refused at start: it could sign for every
    /// tenant of the host.
    #[test]
    fn jwks_keys_must_name_their_org() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rsa-test-key.jwk.json");
        let mut key: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let write = |key: &serde_json::Value| {
            std::fs::write(&path, serde_json::json!({"keys": [key]}).to_string()).unwrap()
        };
        write(&key);
        assert!(JwtConfig::default().load_jwks_file(&path).is_ok());
        key.as_object_mut().unwrap().remove("org");
        write(&key);
        let err = JwtConfig::default().load_jwks_file(&path).unwrap_err();
        assert!(err.to_string().contains("org"), "{err}");
    }
}
