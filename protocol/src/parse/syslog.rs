//! Syslog lines: RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) and the BSD form
//! of RFC 3164 that syslog daemons write to files (`[<PRI>]Mmm dd HH:MM:SS HOST TAG[PID]: MSG`,
//! or with an RFC 3339 time as rsyslog's high-precision template writes it). The header goes;
//! host, app and pid go to `fields`.

use serde_json::Value;

use super::time::{Timezone, leading_time};
use super::{FieldsWriter, Parsed};
use crate::Level;
use crate::line_level::detect_level;

/// `<PRI>` at the start: the severity's level and the bytes used.
fn pri(b: &[u8]) -> Option<(Level, usize)> {
    let rest = b.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|&c| c == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pri: u16 = digits
        .iter()
        .fold(0, |acc, &d| acc * 10 + u16::from(d - b'0'));
    // pri <= 191, so pri % 8 fits a u8.
    (pri <= 191).then(|| (Level::from_syslog_severity((pri % 8) as u8), end + 2))
}

/// The next space-separated word from `at`, and where the one after it starts.
fn word(line: &str, at: usize) -> Option<(&str, usize)> {
    let rest = line.get(at..)?;
    let len = rest.find(' ')?;
    (len > 0).then(|| (&rest[..len], at + len + 1))
}

pub(super) fn parse(line: &str, tz: Timezone, now_ms: i64) -> Option<Parsed<'_>> {
    let b = line.as_bytes();
    let (pri_level, mut at) = match pri(b) {
        Some((level, used)) => (Some(level), used),
        None => (None, 0),
    };
    let mut fields = FieldsWriter::new();
    let rfc5424 = pri_level.is_some() && b.get(at..at + 2) == Some(b"1 ");
    if rfc5424 {
        at += 2;
    }
    let (event_ms, used) = leading_time(&b[at..], tz, now_ms)?;
    at += used;
    if b.get(at) != Some(&b' ') {
        return None;
    }
    at += 1;
    let (host, next) = word(line, at)?;
    at = next;
    if rfc5424 {
        let (app, next) = word(line, at)?;
        let (procid, next) = word(line, next)?;
        let (_msgid, next) = word(line, next)?;
        at = next;
        // Structured data: `-` or one or more `[...]` elements, kept out of the message.
        if b.get(at) == Some(&b'-') {
            at += 2;
        } else {
            while b.get(at) == Some(&b'[') {
                let close = line[at..].find(']')?;
                at += close + 1;
            }
            at += usize::from(b.get(at) == Some(&b' '));
        }
        fields.push("app", &Value::from(app));
        if procid != "-" {
            fields.push("pid", &Value::from(procid));
        }
    } else {
        // `TAG[PID]: ` or `TAG: `; a line without one is not this format.
        let rest = line.get(at..)?;
        let colon = rest.find(": ")?;
        let tag = &rest[..colon];
        if tag.is_empty() || tag.contains(' ') {
            return None;
        }
        let (app, pid) = match tag.split_once('[') {
            Some((app, pid)) => (app, pid.strip_suffix(']')),
            None => (tag, None),
        };
        fields.push("app", &Value::from(app));
        if let Some(pid) = pid {
            fields.push("pid", &Value::from(pid));
        }
        at += colon + 2;
    }
    fields.push("hostname", &Value::from(host));
    let message = line.get(at.min(line.len())..).unwrap_or(line);
    Some(Parsed {
        level: pri_level.unwrap_or_else(|| detect_level(message)),
        message: message.into(),
        event_ms: Some(event_ms),
        fields: fields.finish(),
    })
}
