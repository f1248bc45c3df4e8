//! Cross-origin REST access for browser clients served from another origin (`--cors-origin`).
//!
//! Policy: off by default. Without a listed origin the host sends no CORS headers, so browsers
//! keep pages of other origins from reading its answers; same-origin pages, the CLI and the
//! Node/Python clients are not affected either way. Each `--cors-origin` allows exactly one
//! origin (scheme, host and port; no wildcard: the API acts on bearer tokens, and only pages the
//! operator trusts should hold one). For a listed origin, preflights are answered with the
//! methods and request headers the REST API uses ([`ALLOWED_METHODS`], [`ALLOWED_HEADERS`]) and
//! cached by the browser for [`PREFLIGHT_MAX_AGE`]; every answer (errors included, so a page can
//! read `{"error": …}`) carries `Access-Control-Allow-Origin` with that origin and
//! `Vary: Origin`. Credentials (cookies) are never allowed: tokens travel in `Authorization`.
//! Other origins get answers without CORS headers, which their browsers refuse to expose.
//!
//! Session WebSockets are not subject to CORS: browsers connect them from any origin, and the
//! host does not check their `Origin`. That is safe because nothing ambient authenticates them
//! (no cookies): the token must be sent explicitly (`Authorization`, the `logfleet.token.`
//! subprotocol or `?token=`), so a page of another origin can open one only with a token it
//! already holds, which works from any HTTP client too. This concerns the REST calls a
//! browser client makes first.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The methods the REST API uses.
pub const ALLOWED_METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PATCH, Method::DELETE];

/// The request headers browser clients send beyond the always-allowed ones.
pub const ALLOWED_HEADERS: [HeaderName; 2] = [header::AUTHORIZATION, header::CONTENT_TYPE];

/// How long a browser may cache a preflight answer: one preflight per endpoint per session
/// start-stop cycle instead of one per call, short enough that removing an origin takes effect
/// soon.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Why an `--cors-origin` value is not an origin.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{value}' is not an origin ({why}); give scheme, host and optional port, e.g. https://app.example.com"
)]
pub struct InvalidOrigin {
    value: String,
    why: &'static str,
}

/// Checks and normalises an origin as browsers send it in `Origin`: `http(s)://host[:port]`,
/// lowercase scheme and host, no path (a trailing `/` is dropped), query or user info.
pub fn parse_origin(value: &str) -> Result<String, InvalidOrigin> {
    let invalid = |why| InvalidOrigin {
        value: value.to_owned(),
        why,
    };
    let trimmed = value.trim().trim_end_matches('/');
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| invalid("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    if rest.is_empty() {
        return Err(invalid("no host"));
    }
    if rest.contains(['/', '?', '#', '@', ' ']) || rest == "*" || rest.contains('*') {
        return Err(invalid("only scheme, host and port belong in an origin"));
    }
    let origin = format!("{scheme}://{}", rest.to_ascii_lowercase());
    HeaderValue::from_str(&origin).map_err(|_| invalid("not a valid header value"))?;
    Ok(origin)
}

/// The layer allowing `origins` (already [`parse_origin`]d); `None` when the list is empty,
/// which leaves CORS off.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods(ALLOWED_METHODS.to_vec())
            .allow_headers(ALLOWED_HEADERS.to_vec())
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Origins are accepted in the form browsers send them, and anything else is refused with
    /// the value named.
    #[test]
    fn origins_are_checked_and_normalised() {
        assert_eq!(
            parse_origin("HTTPS://App.Example.com/").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:5173").unwrap(),
            "http://localhost:5173"
        );
        for bad in [
            "app.example.com",
            "ftp://x",
            "https://",
            "https://x/path",
            "https://*.example.com",
            "*",
            "https://u@x",
        ] {
            let e = parse_origin(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(layer(&[]).is_none());
    }
}
