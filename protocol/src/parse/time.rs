//! Event times in log lines: RFC 3339 / ISO 8601, nginx's `YYYY/MM/DD HH:MM:SS`, syslog's
//! `Mmm dd HH:MM:SS`, and epoch seconds or milliseconds. Hand-written scanners: they run per
//! line, so no allocation and no regex.

use std::fmt;
use std::str::FromStr;

/// A source's time zone for times written without one: a fixed offset from UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timezone {
    /// Seconds east of UTC.
    pub offset_seconds: i32,
}

impl Timezone {
    pub const UTC: Timezone = Timezone { offset_seconds: 0 };
}

/// Why a `timezone` setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid timezone '{0}': use UTC or a fixed offset such as +02:00 or -0530 (zone names are not supported)"
)]
pub struct BadTimezone(pub String);

impl FromStr for Timezone {
    type Err = BadTimezone;

    fn from_str(s: &str) -> Result<Timezone, BadTimezone> {
        let bad = || BadTimezone(s.to_owned());
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") || t == "+00:00" {
            return Ok(Timezone::UTC);
        }
        let b = t.as_bytes();
        let (offset, used) = offset(b, 0).ok_or_else(bad)?;
        if used != b.len() {
            return Err(bad());
        }
        Ok(Timezone {
            offset_seconds: offset,
        })
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.offset_seconds == 0 {
            return f.write_str("UTC");
        }
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        let abs = self.offset_seconds.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a time in ms since the epoch (UTC).
pub fn year_of(ms: i64) -> i64 {
    let days = ms.div_euclid(86_400_000);
    // Inverse of `days_from_civil`, year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `±HH:MM`, `±HHMM` or `±HH` at `at`: seconds east of UTC and the bytes used.
fn offset(b: &[u8], at: usize) -> Option<(i32, usize)> {
    let sign = match b.get(at)? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h = digits(b, at + 1, 2)?;
    let (m, used) = if b.get(at + 3) == Some(&b':') {
        (digits(b, at + 4, 2)?, 6)
    } else if let Some(m) = digits(b, at + 3, 2) {
        (m, 5)
    } else {
        (0, 3)
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((sign * (h * 3600 + m * 60) as i32, used))
}

fn valid(month: u32, day: u32, hour: u32, min: u32, sec: u32) -> bool {
    (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && min < 60 && sec <= 60
}

fn to_ms(year: i64, month: u32, day: u32, hms: (u32, u32, u32), frac_ms: u32) -> i64 {
    let (h, m, s) = hms;
    days_from_civil(year, month, day) * 86_400_000
        + i64::from(h * 3600 + m * 60 + s) * 1000
        + i64::from(frac_ms)
}

/// A fraction (`.123456` or `,123`) at `at`: milliseconds and bytes used.
fn fraction(b: &[u8], at: usize) -> (u32, usize) {
    if !matches!(b.get(at), Some(b'.' | b',')) {
        return (0, 0);
    }
    let n = b[at + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 {
        return (0, 0);
    }
    let ms = b[at + 1..at + 1 + n.min(3)]
        .iter()
        .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
        * 10u32.pow(3 - n.min(3) as u32);
    (ms, 1 + n)
}

/// A time written at the start of `b`: ms since the epoch and the bytes it took. Times without
/// a zone are in `tz`; syslog's year-less times take the year of `now_ms` (or the one before,
/// when that would put them more than a day in the future).
pub fn leading_time(b: &[u8], tz: Timezone, now_ms: i64) -> Option<(i64, usize)> {
    iso_or_nginx(b, tz).or_else(|| syslog_time(b, tz, now_ms))
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.f][zone]` or `YYYY/MM/DD HH:MM:SS`.
fn iso_or_nginx(b: &[u8], tz: Timezone) -> Option<(i64, usize)> {
    let year = digits(b, 0, 4)?;
    let sep = *b.get(4)?;
    if !(sep == b'-' || sep == b'/') || b.get(7) != Some(&sep) {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b' ')) || sep == b'/' && b[10] != b' ' {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    let min = (b.get(13) == Some(&b':')).then(|| digits(b, 14, 2))??;
    let sec = (b.get(16) == Some(&b':')).then(|| digits(b, 17, 2))??;
    if !valid(month, day, hour, min, sec) {
        return None;
    }
    let mut at = 19;
    let (frac, used) = fraction(b, at);
    at += used;
    let zone = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            Some(0)
        }
        Some(b'+' | b'-') if sep == b'-' => offset(b, at).map(|(o, used)| {
            at += used;
            o
        }),
        _ => None,
    };
    let local = to_ms(i64::from(year), month, day, (hour, min, sec), frac);
    let offset = zone.unwrap_or(tz.offset_seconds);
    Some((local - i64::from(offset) * 1000, at))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Mmm dd HH:MM:SS` (day space-padded or not).
fn syslog_time(b: &[u8], tz: Timezone, now_ms: i64) -> Option<(i64, usize)> {
    let month = MONTHS.iter().position(|m| b.get(..3) == Some(&m[..]))? as u32 + 1;
    if b.get(3) != Some(&b' ') {
        return None;
    }
    let mut at = 4;
    if b.get(at) == Some(&b' ') {
        at += 1;
    }
    let day_len = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=2).contains(&day_len) {
        return None;
    }
    let day = digits(b, at, day_len)?;
    at += day_len;
    if b.get(at) != Some(&b' ') {
        return None;
    }
    let hour = digits(b, at + 1, 2)?;
    let min = (b.get(at + 3) == Some(&b':')).then(|| digits(b, at + 4, 2))??;
    let sec = (b.get(at + 6) == Some(&b':')).then(|| digits(b, at + 7, 2))??;
    if !valid(month, day, hour, min, sec) {
        return None;
    }
    at += 9;
    let (frac, used) = fraction(b, at);
    at += used;
    let offset = i64::from(tz.offset_seconds) * 1000;
    let year = year_of(now_ms + offset);
    let mut ms = to_ms(year, month, day, (hour, min, sec), frac) - offset;
    if ms > now_ms + 86_400_000 {
        ms = to_ms(year - 1, month, day, (hour, min, sec), frac) - offset;
    }
    Some((ms, at))
}

/// An epoch time as JSON numbers carry it: seconds (with a fraction) below 10^11, else
/// milliseconds. `None` for values no log line means (negative, or past year 9999).
pub fn epoch_ms(value: f64) -> Option<i64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let ms = if value < 1e11 { value * 1000.0 } else { value };
    (ms < 253_402_300_800_000.0).then_some(ms as i64)
}

/// A whole string that is a time (JSON `"time": "…"`).
pub fn whole_time(s: &str, tz: Timezone, now_ms: i64) -> Option<i64> {
    match leading_time(s.as_bytes(), tz, now_ms) {
        Some((ms, used)) if used == s.len() => Some(ms),
        _ => s.parse::<f64>().ok().and_then(epoch_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_15_2024: i64 = 1_705_312_800_000; // 2024-01-15T10:00:00Z

    #[test]
    fn iso_nginx_and_syslog_times() {
        let utc = Timezone::UTC;
        let cases: &[(&str, i64, usize)] = &[
            ("2024-01-15T10:00:00Z rest", JAN_15_2024, 20),
            ("2024-01-15T10:00:00.123Z", JAN_15_2024 + 123, 24),
            ("2024-01-15 10:00:00,5 x", JAN_15_2024 + 500, 21),
            ("2024-01-15T12:00:00+02:00", JAN_15_2024, 25),
            ("2024-01-15T04:30:00-0530", JAN_15_2024, 24),
            ("2024-01-15T10:00:00.123456789Z", JAN_15_2024 + 123, 30),
            ("2024/01/15 10:00:00 [error]", JAN_15_2024, 19),
            ("Jan 15 10:00:00 host app:", JAN_15_2024, 15),
        ];
        for &(text, ms, used) in cases {
            assert_eq!(
                leading_time(text.as_bytes(), utc, JAN_15_2024),
                Some((ms, used)),
                "{text}"
            );
        }
        for text in [
            "2024-13-01T00:00:00Z",
            "2024-01-15",
            "hello",
            "Jan 1x 10:00:00",
        ] {
            assert_eq!(
                leading_time(text.as_bytes(), utc, JAN_15_2024),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn zone_less_times_use_the_source_timezone() {
        let plus2: Timezone = "+02:00".parse().unwrap();
        let at = leading_time(b"2024-01-15 12:00:00 x", plus2, JAN_15_2024);
        assert_eq!(at, Some((JAN_15_2024, 19)));
        // A written zone wins over the source's.
        let at = leading_time(b"2024-01-15T10:00:00Z", plus2, JAN_15_2024);
        assert_eq!(at, Some((JAN_15_2024, 20)));
        assert_eq!(plus2.to_string(), "+02:00");
        assert!("Europe/Berlin".parse::<Timezone>().is_err());
        assert_eq!("utc".parse::<Timezone>(), Ok(Timezone::UTC));
    }

    /// A year-less syslog time never lands more than a day in the future: on 1 January,
    /// "Dec 31" is last year's.
    #[test]
    fn syslog_times_take_the_nearest_past_year() {
        let new_year = to_ms(2025, 1, 1, (0, 5, 0), 0);
        let (ms, _) = leading_time(b"Dec 31 23:59:00", Timezone::UTC, new_year).unwrap();
        assert_eq!(ms, to_ms(2024, 12, 31, (23, 59, 0), 0));
        assert_eq!(year_of(JAN_15_2024), 2024);
        assert_eq!(year_of(to_ms(2000, 2, 29, (0, 0, 0), 0)), 2000);
    }

    #[test]
    fn epoch_numbers() {
        assert_eq!(epoch_ms(1_705_312_800.5), Some(JAN_15_2024 + 500));
        assert_eq!(epoch_ms(1_705_312_800_000.0), Some(JAN_15_2024));
        assert_eq!(epoch_ms(-1.0), None);
        assert_eq!(
            whole_time("2024-01-15T10:00:00Z", Timezone::UTC, 0),
            Some(JAN_15_2024)
        );
        assert_eq!(
            whole_time("1705312800", Timezone::UTC, 0),
            Some(JAN_15_2024)
        );
        assert_eq!(whole_time("soon", Timezone::UTC, 0), None);
    }
}
