//! Lines of free text with a conventional prefix: an optional timestamp (bare or in brackets),
//! an optional level token, and for nginx's error log the `pid#tid: *conn ` that follows. The
//! message is what comes after the prefix; a line with no recognised prefix keeps all of it.

use super::time::{Timezone, leading_time};
use super::{Parsed, level_word};
use crate::line_level::detect_level;

/// Separators skipped between the prefix's parts.
fn skip_separators(b: &[u8], mut at: usize) -> usize {
    while let Some(&c) = b.get(at) {
        let lone_separator = matches!(c, b'-' | b'|' | b':' | b'>')
            && b.get(at + 1).is_none_or(u8::is_ascii_whitespace);
        if c.is_ascii_whitespace() || lone_separator {
            at += 1;
        } else {
            break;
        }
    }
    at
}

/// A leading time, bare or in `[...]`: the time and where the text after it starts.
fn time_prefix(b: &[u8], tz: Timezone, now_ms: i64) -> Option<(i64, usize)> {
    if b.first() == Some(&b'[') {
        let (ms, used) = leading_time(&b[1..], tz, now_ms)?;
        return (b.get(1 + used) == Some(&b']')).then_some((ms, used + 2));
    }
    leading_time(b, tz, now_ms)
}

/// A level token at `at` (`ERROR`, `[error]`, `<warn>`, `Error:`; any case right after a
/// time): where the text after it starts.
fn level_prefix(b: &[u8], at: usize, after_time: bool) -> Option<usize> {
    let word_end = b[at..]
        .iter()
        .position(u8::is_ascii_whitespace)
        .map_or(b.len(), |n| at + n);
    let word = &b[at..word_end];
    let open = word.iter().take_while(|c| b"[(<".contains(c)).count();
    let body = &word[open..];
    let close = body
        .iter()
        .rev()
        .take_while(|c| b"])>:".contains(c))
        .count();
    let core = &body[..body.len() - close];
    let bracketed = open > 0 && close > 0;
    let colon = body.last() == Some(&b':');
    let upper = core.iter().all(|c| !c.is_ascii_lowercase());
    ((bracketed || colon || upper || after_time) && level_word(core).is_some()).then_some(word_end)
}

/// nginx error log's `1234#0: ` and the optional `*5 ` connection number.
fn nginx_prefix(b: &[u8], mut at: usize) -> usize {
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let pid = digits(at);
    if pid == 0 || b.get(at + pid) != Some(&b'#') {
        return at;
    }
    let tid = digits(at + pid + 1);
    let end = at + pid + 1 + tid;
    if tid == 0 || b.get(end) != Some(&b':') || b.get(end + 1) != Some(&b' ') {
        return at;
    }
    at = end + 2;
    if b.get(at) == Some(&b'*') {
        let conn = digits(at + 1);
        if conn > 0 && b.get(at + 1 + conn) == Some(&b' ') {
            at += conn + 2;
        }
    }
    at
}

/// Parses a free-text line; `nginx` also strips nginx's process prefix.
pub(super) fn parse(line: &str, tz: Timezone, now_ms: i64, nginx: bool) -> Parsed<'_> {
    let b = line.as_bytes();
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(0);
    let mut at = start;
    let event_ms = time_prefix(&b[at..], tz, now_ms).map(|(ms, used)| {
        at = skip_separators(b, at + used);
        ms
    });
    // A second time word (`2024-01-15 10:00:00,123` split by a logger is one; a date and a
    // time in separate words is not recognised as one, so nothing more is tried).
    let mut recognised = event_ms.is_some();
    if let Some(end) = level_prefix(b, at, event_ms.is_some()) {
        at = skip_separators(b, end);
        recognised = true;
    }
    if nginx || (recognised && b[start..].get(4) == Some(&b'/')) {
        at = nginx_prefix(b, at);
    }
    let message = match line.get(at..) {
        Some(rest) if recognised && !rest.is_empty() => rest,
        _ => line,
    };
    Parsed {
        level: detect_level(line),
        message: message.into(),
        event_ms,
        fields: None,
    }
}
