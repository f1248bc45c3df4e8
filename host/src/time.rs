//! Timestamp formatting shared by every response: RFC 3339, UTC, `Z`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Whole seconds, as the reference shows session times (`2024-01-15T10:00:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Milliseconds since the epoch to RFC 3339 with milliseconds (`2024-01-15T10:00:00.123Z`).
pub fn rfc3339_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}
