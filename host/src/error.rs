//! The one error type every handler returns; it renders the documented JSON error body
//! `{"error": {"code": "snake_case", "message": "human text"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logfleet_protocol::rest::{ErrorBody, ErrorDetail};

/// Most bytes of a caller's input (an id, a name) an error message repeats back: enough to
/// recognise it, not enough to turn a 900 KiB id into a 900 KiB answer.
pub const MAX_ECHO_BYTES: usize = 128;
/// Longest error message sent, whatever produced it (a compiler's or a plugin's own message
/// can be long); longer ones are cut, marked with `…`.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// `input` as an error message may repeat it: cut at [`MAX_ECHO_BYTES`] (on a character
/// boundary) and marked with `…` when cut.
pub fn echo(input: &str) -> String {
    truncate_bytes(input, MAX_ECHO_BYTES)
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    logfleet_protocol::agent_limits::clip(s, max)
}

/// An API failure: an HTTP status, a stable machine code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn agent_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "agent_not_found",
            format!("no agent '{}'", echo(id)),
        )
    }

    pub fn session_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no active session '{}'", echo(id)),
        )
    }

    /// A failure of the host's own (storage, a task); the message says what, not the cause's
    /// internals.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: truncate_bytes(&self.message, MAX_ERROR_MESSAGE_BYTES),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<logfleet_protocol::FilterError> for ApiError {
    fn from(e: logfleet_protocol::FilterError) -> Self {
        ApiError::bad_request("invalid_filter", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_input_is_cut_on_a_character_boundary() {
        assert_eq!(echo("edge-1"), "edge-1");
        let long = "é".repeat(MAX_ECHO_BYTES);
        let cut = echo(&long);
        assert!(cut.len() <= MAX_ECHO_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        let message = ApiError::agent_not_found(&"x".repeat(900 * 1024)).message;
        assert!(message.len() < 200, "{} bytes", message.len());
    }
}
