//! JSON object lines (one object per line, as structured loggers write them): the message is
//! the `msg`, `message` or `log` field, the level and the time come from their usual keys, and
//! every other key goes to `fields`.

use serde_json::{Map, Value};

use super::time::{Timezone, epoch_ms, whole_time};
use super::{FieldsWriter, Parsed, level_word};
use crate::Level;

/// Keys whose value is the message, in order of preference.
pub(super) const MESSAGE_KEYS: [&str; 3] = ["msg", "message", "log"];
/// Keys whose value is the level.
pub(super) const LEVEL_KEYS: [&str; 5] = ["level", "severity", "lvl", "loglevel", "log.level"];
/// Keys whose value is the event time.
pub(super) const TIME_KEYS: [&str; 4] = ["ts", "time", "timestamp", "@timestamp"];

fn json_level(value: &Value) -> Option<Level> {
    match value {
        Value::String(s) => level_word(s.as_bytes()),
        // pino / bunyan numeric levels.
        Value::Number(n) => match n.as_u64()? {
            10 => Some(Level::Trace),
            20 => Some(Level::Debug),
            30 => Some(Level::Info),
            40 => Some(Level::Warn),
            50 => Some(Level::Error),
            60 => Some(Level::Fatal),
            _ => None,
        },
        _ => None,
    }
}

fn json_time(value: &Value, tz: Timezone, now_ms: i64) -> Option<i64> {
    match value {
        Value::String(s) => whole_time(s, tz, now_ms),
        Value::Number(n) => epoch_ms(n.as_f64()?),
        _ => None,
    }
}

/// `None` when the line is not one JSON object.
pub(super) fn parse(line: &str, tz: Timezone, now_ms: i64) -> Option<Parsed<'_>> {
    let object: Map<String, Value> = serde_json::from_str(line).ok()?;
    let mut message = None;
    let mut level = None;
    let mut event_ms = None;
    let mut fields = FieldsWriter::new();
    for (key, value) in object {
        let k = key.as_str();
        if message.is_none() && MESSAGE_KEYS.contains(&k) {
            message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
            continue;
        }
        if level.is_none()
            && LEVEL_KEYS.iter().any(|l| l.eq_ignore_ascii_case(k))
            && let Some(l) = json_level(&value)
        {
            level = Some(l);
            continue;
        }
        if event_ms.is_none()
            && TIME_KEYS.contains(&k)
            && let Some(ms) = json_time(&value, tz, now_ms)
        {
            event_ms = Some(ms);
            continue;
        }
        fields.push(&key, &value);
    }
    Some(Parsed {
        level: level.unwrap_or(Level::Info),
        message: message.map_or(line.into(), Into::into),
        event_ms,
        fields: fields.finish(),
    })
}
