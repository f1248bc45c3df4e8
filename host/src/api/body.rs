//! A JSON body extractor whose failures render as the documented error body (axum's `Json`
//! answers in plain text), with the request size cap, and lenient about `Content-Type`.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest accepted JSON request body: anything of 1 MiB or more is refused with 413.
pub const MAX_JSON_BODY_BYTES: usize = (1 << 20) - 1;

/// A JSON request body of type `T`; unknown fields are refused where `T` says so.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "request body must be under {} bytes",
                        MAX_JSON_BODY_BYTES + 1
                    ),
                )
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("invalid JSON body: {e}"))
        })
    }
}
