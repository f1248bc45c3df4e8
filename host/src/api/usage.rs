//! `GET /api/v1/usage?window=1h`: what the caller's org's agents sent the host over a window,
//! metrics and streaming bytes, per agent and in total.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::Uri;

use crate::api::query::query_text;
use crate::auth::User;
use crate::error::ApiError;
use crate::state::AppState;
use crate::usage::{MINUTE_WINDOW, OrgReport};

/// The window when none is given.
pub const DEFAULT_WINDOW: Duration = MINUTE_WINDOW;

pub async fn get(
    State(state): State<AppState>,
    User(claims): User,
    uri: Uri,
) -> Result<Json<OrgReport>, ApiError> {
    let window = match query_text(&uri, "window")? {
        Some(w) => parse_window(&w)?,
        None => DEFAULT_WINDOW,
    };
    Ok(Json(state.usage.report(
        &claims.org,
        window,
        Instant::now(),
    )))
}

/// Whole minutes up to an hour or whole hours up to a day: `15m`, `60m`, `1h`, `24h`.
fn parse_window(text: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_request",
            "window is whole minutes up to 60m or whole hours up to 24h, e.g. 15m, 1h, 24h",
        )
    };
    let (number, unit) = match (text.strip_suffix('m'), text.strip_suffix('h')) {
        (Some(n), _) => (n, "m"),
        (_, Some(n)) => (n, "h"),
        _ => return Err(bad()),
    };
    // Exactly the OpenAPI document's pattern: no sign, no leading zero.
    if number.is_empty()
        || number.len() > 2
        || number.starts_with('0')
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let window = match unit {
        "m" if (1..=60).contains(&n) => Duration::from_secs(n * 60),
        "h" if (1..=24).contains(&n) => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    };
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::MAX_WINDOW;

    #[test]
    fn windows() {
        assert_eq!(parse_window("1h").unwrap(), MINUTE_WINDOW);
        assert_eq!(parse_window("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_window("24h").unwrap(), MAX_WINDOW);
        assert_eq!(parse_window("60m").unwrap(), MINUTE_WINDOW);
        for bad in [
            "", "0m", "90s", "25h", "90m", "soon", "1h30m", "01m", "m", "+5m", "1d",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
