//! logfmt lines (`time=… level=warn msg="slow query" duration=1.2s`): the message is the
//! `msg` value, level and time come from their usual keys, every other pair goes to `fields`
//! (values as strings; a bare key is `true`).

use serde_json::Value;

use super::json::{LEVEL_KEYS, MESSAGE_KEYS, TIME_KEYS};
use super::time::{Timezone, whole_time};
use super::{FieldsWriter, Parsed, level_word};
use crate::line_level::detect_level;

/// One `key=value`, `key="quoted \" value"` or bare `key`, and where the next starts.
fn pair(line: &str, at: usize) -> Option<((&str, Option<String>), usize)> {
    let rest = &line[at..];
    let key_len = rest
        .find(|c: char| c == '=' || c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_alphanumeric() || "_.-@/".contains(c))
    {
        return None;
    }
    let mut at = at + key_len;
    if line.as_bytes().get(at) != Some(&b'=') {
        return Some(((key, None), at));
    }
    at += 1;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, e)) => value.push(e),
                    None => return None,
                },
                '"' => return Some(((key, Some(value)), at + 1 + i + 1)),
                c => value.push(c),
            }
        }
        return None;
    }
    let len = rest
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    Some(((key, Some(rest[..len].to_owned())), at + len))
}

/// `None` when the line is not logfmt throughout (or has fewer than two pairs).
pub(super) fn parse(line: &str, tz: Timezone, now_ms: i64) -> Option<Parsed<'_>> {
    let mut at = 0;
    let mut pairs = Vec::new();
    loop {
        at += line[at..].len() - line[at..].trim_start().len();
        if at >= line.len() {
            break;
        }
        let (kv, next) = pair(line, at)?;
        pairs.push(kv);
        at = next;
    }
    if pairs.iter().filter(|(_, v)| v.is_some()).count() < 2 {
        return None;
    }
    let mut message = None;
    let mut level = None;
    let mut event_ms = None;
    let mut fields = FieldsWriter::new();
    for (key, value) in pairs {
        let Some(value) = value else {
            fields.push(key, &Value::Bool(true));
            continue;
        };
        if message.is_none() && MESSAGE_KEYS.contains(&key) {
            message = Some(value);
            continue;
        }
        if level.is_none()
            && LEVEL_KEYS.iter().any(|l| l.eq_ignore_ascii_case(key))
            && let Some(l) = level_word(value.as_bytes())
        {
            level = Some(l);
            continue;
        }
        if event_ms.is_none()
            && TIME_KEYS.contains(&key)
            && let Some(ms) = whole_time(&value, tz, now_ms)
        {
            event_ms = Some(ms);
            continue;
        }
        fields.push(key, &Value::String(value));
    }
    Some(Parsed {
        level: level.unwrap_or_else(|| detect_level(line)),
        message: message.map_or(line.into(), Into::into),
        event_ms,
        fields: fields.finish(),
    })
}
