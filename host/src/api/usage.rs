//! `GET /api/v1/usage?window=1h`: what the caller's org's agents sent the host over a window,
//! metrics and streaming bytes, per agent and in total.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::Uri;

use crate::auth::{User, query_param};
use crate::error::ApiError;
use crate::state::AppState;
use crate::usage::{MAX_WINDOW, MINUTE_WINDOW, OrgReport};

/// The window when none is given.
pub const DEFAULT_WINDOW: Duration = MINUTE_WINDOW;

pub async fn get(
    State(state): State<AppState>,
    User(claims): User,
    uri: Uri,
) -> Result<Json<OrgReport>, ApiError> {
    let window = match query_param(&uri, "window") {
        Some(w) => parse_window(&w)?,
        None => DEFAULT_WINDOW,
    };
    Ok(Json(state.usage.report(
        &claims.org,
        window,
        Instant::now(),
    )))
}

/// Whole minutes up to an hour, whole hours up to a day (`15m`, `1h`, `24h`).
fn parse_window(text: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_request",
            "window must be whole minutes up to 1h or whole hours up to 24h, e.g. 15m, 1h, 24h",
        )
    };
    let window = humantime::parse_duration(text).map_err(|_| bad())?;
    let secs = window.as_secs();
    let whole = if window <= MINUTE_WINDOW {
        secs % 60 == 0
    } else {
        secs % 3600 == 0
    };
    if secs == 0 || window > MAX_WINDOW || !whole || window.subsec_nanos() != 0 {
        return Err(bad());
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("1h").unwrap(), MINUTE_WINDOW);
        assert_eq!(parse_window("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_window("24h").unwrap(), MAX_WINDOW);
        for bad in ["0s", "90s", "25h", "90m", "soon", "1h30m"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
