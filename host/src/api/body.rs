//! Request bodies: a JSON extractor whose failures render as the documented error body (axum's
//! `Json` answers in plain text), and a bounded body reader that tells a body that is too large
//! (413) from one that is malformed (400).
//!
//! A JSON body must be sent as `Content-Type: application/json` (415 otherwise) and must be an
//! object wherever the type has a struct ([`super::strict_json`]).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::strict_json;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest accepted JSON request body: anything of 1 MiB or more is refused with 413.
pub const MAX_JSON_BODY_BYTES: usize = (1 << 20) - 1;

/// A JSON request body of type `T`; unknown fields are refused where `T` says so.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, ApiError> {
        let is_json = is_json(req.headers());
        // Read first, even when the type is wrong: answering while the client still sends
        // makes the server close the connection, and the client sees a broken pipe instead.
        let bytes = read_body(req.into_body(), MAX_JSON_BODY_BYTES, || {
            format!(
                "request body must be under {} bytes",
                MAX_JSON_BODY_BYTES + 1
            )
        })
        .await?;
        if !is_json {
            return Err(unsupported_media_type());
        }
        strict_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("invalid JSON body: {e}"))
        })
    }
}

/// The 415 a JSON endpoint answers to another (or no) `Content-Type`.
pub fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with `Content-Type: application/json`",
    )
}

/// `application/json` (parameters such as `charset` allowed) or a `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Reads a whole body of at most `limit` bytes. Over it: 413 `payload_too_large` with
/// `too_large()` as the message; a body that cannot be read (a malformed chunked encoding, a
/// connection cut mid-body): 400 `invalid_request`.
pub async fn read_body(
    body: Body,
    limit: usize,
    too_large: impl FnOnce() -> String,
) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "invalid_request",
                format!("could not read the request body: {e}"),
            )
        })?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                too_large(),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// Reads and discards a body of at most `limit` bytes, holding one chunk at a time: for a
/// request that will be refused (the caller may not do it), so the client still reads the
/// refusal instead of a broken pipe, and the refusal costs no memory.
pub async fn discard_body(body: Body, limit: usize) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_content_types() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("application/jsonp"));
        assert!(!with("+json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
