//! Level detection: which [`Level`] a raw log line carries.
//!
//! This runs once per line read, so it allocates nothing and uses no regex: a handful of byte
//! scans over the start of the line. Recognised forms, tried in this order:
//!
//! 1. a syslog `<PRI>` prefix (severity = PRI % 8);
//! 2. a JSON object line with a `level` / `severity` / `lvl` / `loglevel` key (string value, or
//!    pino/bunyan numbers 10..60);
//! 3. a level word among the first [`MAX_LEVEL_TOKENS`] words, after an optional timestamp:
//!    bracketed (`[error]`, `<warn>`) in any case, bare upper case (`ERROR`), any case with a
//!    colon (`Error:`), or any case right after timestamp-like words (`2024-01-15T10:00:00Z info`);
//! 4. a bracketed level within the first [`BRACKET_SCAN_BYTES`] bytes (`[core:error]`);
//! 5. a logfmt key anywhere in the line (`level=error`, `lvl="warn"`).
//!
//! Anything else is [`Level::Info`]. Bare lower-case words in free text ("no errors found",
//! "fine, retrying") are deliberately not levels: false positives cost users more than misses.

use crate::Level;

/// How many leading words are examined for a level (separator-only words such as `-` or `|`
/// are skipped and not counted): enough for "date time \[level\]" and "date time - logger - LEVEL".
pub const MAX_LEVEL_TOKENS: usize = 4;

/// How far into the line a bracketed level is looked for; levels live in the prefix, and a
/// bound keeps the scan cheap on long lines.
pub const BRACKET_SCAN_BYTES: usize = 128;

/// Longest bracket content considered a level tag (`[core:error]`), so `[a long message]` is
/// skipped cheaply.
const MAX_TAG_BYTES: usize = 24;

/// Keys that carry a level in JSON and logfmt lines.
const LEVEL_KEYS: [&[u8]; 5] = [b"level", b"severity", b"lvl", b"loglevel", b"log.level"];

/// Detects the level of one line; [`Level::Info`] when it names none.
pub fn detect_level(line: &str) -> Level {
    let bytes = line.as_bytes();
    let trimmed = trim_start(bytes);
    if let Some(level) = syslog_pri(trimmed) {
        return level;
    }
    if trimmed.first() == Some(&b'{')
        && let Some(level) = json_level(trimmed)
    {
        return level;
    }
    leading_token_level(trimmed)
        .or_else(|| bracketed_level(&trimmed[..trimmed.len().min(BRACKET_SCAN_BYTES)]))
        .or_else(|| logfmt_level(bytes))
        .unwrap_or(Level::Info)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn parse_level(bytes: &[u8]) -> Option<Level> {
    std::str::from_utf8(bytes).ok().and_then(Level::parse)
}

/// `<PRI>` with PRI in 0..=191 (facility * 8 + severity).
fn syslog_pri(bytes: &[u8]) -> Option<Level> {
    let rest = bytes.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pri: u16 = digits
        .iter()
        .fold(0, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if pri > 191 {
        return None;
    }
    // pri <= 191, so pri % 8 fits a u8.
    Some(Level::from_syslog_severity((pri % 8) as u8))
}

/// Scans a JSON object line for the first level key. Not a full parser: it walks string
/// tokens (honouring backslash escapes) and looks at what follows a key.
fn json_level(bytes: &[u8]) -> Option<Level> {
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'"', &bytes[i..]) {
        let start = i + off + 1;
        let end = string_end(bytes, start)?;
        let token = &bytes[start..end];
        let mut j = skip_ws(bytes, end + 1);
        if bytes.get(j) == Some(&b':') {
            j = skip_ws(bytes, j + 1);
            if LEVEL_KEYS.iter().any(|k| token.eq_ignore_ascii_case(k)) {
                return json_value_level(bytes, j);
            }
            // Skip a string value so its contents are never mistaken for a key.
            if bytes.get(j) == Some(&b'"') {
                i = string_end(bytes, j + 1)? + 1;
                continue;
            }
            i = j;
        } else {
            i = end + 1;
        }
    }
    None
}

fn json_value_level(bytes: &[u8], at: usize) -> Option<Level> {
    match bytes.get(at)? {
        b'"' => {
            let end = string_end(bytes, at + 1)?;
            parse_level(&bytes[at + 1..end])
        }
        b'0'..=b'9' => {
            let digits = bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            // pino / bunyan numeric levels.
            match &bytes[at..at + digits] {
                b"10" => Some(Level::Trace),
                b"20" => Some(Level::Debug),
                b"30" => Some(Level::Info),
                b"40" => Some(Level::Warn),
                b"50" => Some(Level::Error),
                b"60" => Some(Level::Fatal),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Index of the closing quote of a JSON string whose contents start at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut k = start;
    while k < bytes.len() {
        match bytes[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Looks at the first few words; see the module docs for which words count.
fn leading_token_level(bytes: &[u8]) -> Option<Level> {
    let mut counted = 0;
    // True while every word so far was timestamp-like and there was at least one.
    let mut after_timestamps = false;
    let mut only_timestamps = true;
    for word in bytes
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        if word.iter().all(|b| b"-|:>".contains(b)) {
            continue;
        }
        if counted == MAX_LEVEL_TOKENS {
            break;
        }
        counted += 1;
        let open = word
            .iter()
            .take_while(|b| b"[(<{".contains(b))
            .count()
            .min(word.len());
        let body = &word[open..];
        let close = body
            .iter()
            .rev()
            .take_while(|b| b"])>}:,;|".contains(b))
            .count();
        let core = &body[..body.len() - close];
        if core.first().is_some_and(u8::is_ascii_digit) {
            // A timestamp, date, time or pid: levels may follow it.
            after_timestamps = only_timestamps;
            continue;
        }
        let bracketed = open > 0 && close > 0;
        let colon = body.last() == Some(&b':');
        let upper = core.iter().all(|b| !b.is_ascii_lowercase());
        if bracketed {
            if let Some(level) = tag_level(core) {
                return Some(level);
            }
        } else if (upper || colon || after_timestamps)
            && let Some(level) = parse_level(core)
        {
            return Some(level);
        }
        only_timestamps = false;
        after_timestamps = false;
    }
    None
}

/// A bracket tag's level: `error`, or the part after the last colon in `core:error`.
fn tag_level(tag: &[u8]) -> Option<Level> {
    let tail = match memchr::memrchr(b':', tag) {
        Some(colon) => &tag[colon + 1..],
        None => tag,
    };
    parse_level(tail)
}

/// The first `[tag]` in `bytes` that names a level.
fn bracketed_level(bytes: &[u8]) -> Option<Level> {
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'[', &bytes[i..]) {
        let start = i + off + 1;
        let close = memchr::memchr(b']', &bytes[start..])?;
        if close <= MAX_TAG_BYTES
            && let Some(level) = tag_level(&bytes[start..start + close])
        {
            return Some(level);
        }
        i = start;
    }
    None
}

/// `level=error`, `lvl="warn"` …: the first `key=value` in the line whose key is a level key
/// (starting the line or following whitespace) and whose value is a level. Walks the `=`
/// signs in one `memchr` pass rather than searching the line once per key, which made lines
/// naming no level at all, the common worst case, cost 2.5× as much.
fn logfmt_level(bytes: &[u8]) -> Option<Level> {
    for eq in memchr::memchr_iter(b'=', bytes) {
        let before = &bytes[..eq];
        let keyed = LEVEL_KEYS.iter().any(|key| {
            before.ends_with(key)
                && before
                    .len()
                    .checked_sub(key.len() + 1)
                    .is_none_or(|i| before[i].is_ascii_whitespace())
        });
        if !keyed {
            continue;
        }
        let value = &bytes[eq + 1..];
        let value = match value.strip_prefix(b"\"") {
            Some(quoted) => &quoted[..memchr::memchr(b'"', quoted).unwrap_or(quoted.len())],
            None => {
                let end = value
                    .iter()
                    .position(u8::is_ascii_whitespace)
                    .unwrap_or(value.len());
                &value[..end]
            }
        };
        if let Some(level) = parse_level(value) {
            return Some(level);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    fn check(cases: &[(&str, Level)]) {
        for (line, want) in cases {
            assert_eq!(detect_level(line), *want, "line: {line:?}");
        }
    }

    #[test]
    fn json_lines() {
        check(&[
            (r#"{"level":"error","msg":"boom"}"#, Error),
            (
                r#"{"ts":"2024-01-15T10:00:00Z", "severity" : "WARNING", "msg":"x"}"#,
                Warn,
            ),
            (r#"{"msg":"level is \"fatal\"","lvl":"debug"}"#, Debug),
            (r#"{"loglevel":"crit"}"#, Fatal),
            (r#"{"Level":"Information","MessageTemplate":"hi"}"#, Info),
            (r#"{"level":50,"time":1705312800000,"msg":"pino"}"#, Error),
            (r#"{"level":40}"#, Warn),
            (r#"{"msg":"level","x":1}"#, Info),
            (r#"{"log.level":"trace"}"#, Trace),
        ]);
    }

    #[test]
    fn logfmt_lines() {
        check(&[
            (
                r#"time=2024-01-15T10:00:00Z level=error msg="db down""#,
                Error,
            ),
            (r#"ts=1 lvl="warn" msg=slow"#, Warn),
            ("level=debug", Debug),
            (r#"msg="x" severity=critical"#, Fatal),
            ("sublevel=error msg=x", Info),
        ]);
    }

    #[test]
    fn nginx_and_apache() {
        check(&[
            (
                "2024/01/15 10:00:00 [error] 1234#0: *1 upstream timed out (110: Connection timed out)",
                Error,
            ),
            (
                "2024/01/15 10:00:00 [warn] 12#12: conflicting server name",
                Warn,
            ),
            (
                "2024/01/15 10:00:00 [crit] 12#12: SSL_do_handshake() failed",
                Fatal,
            ),
            ("2024/01/15 10:00:00 [emerg] 1#1: bind() failed", Fatal),
            ("2024/01/15 10:00:00 [alert] 1#1: worker exited", Fatal),
            (
                "2024/01/15 10:00:00 [notice] 1#1: signal process started",
                Info,
            ),
            ("2024/01/15 10:00:00 [info] 1#1: client closed", Info),
            ("2024/01/15 10:00:00 [debug] 1#1: epoll add", Debug),
            (
                "[Mon Jan 15 10:00:00.123456 2024] [core:error] [pid 1234] AH00124: loop",
                Error,
            ),
        ]);
    }

    #[test]
    fn syslog_prefixes() {
        check(&[
            ("<11>Jan 15 10:00:00 web app[1]: failed", Error),
            ("<12>Jan 15 10:00:00 web app[1]: careful", Warn),
            ("<165>1 2024-01-15T10:00:00Z host app - - - notice", Info),
            ("<0>kernel panic", Fatal),
            ("<15>debugging", Debug),
            ("<999>not syslog ERROR", Error),
        ]);
    }

    #[test]
    fn leading_words() {
        check(&[
            ("2024-01-15T10:00:00Z ERROR msg", Error),
            ("2024-01-15 10:00:00.123 WARN [main] c.f.Bar - slow", Warn),
            ("2024-01-15 10:00:00,123 - myapp - ERROR - boom", Error),
            ("ERROR something broke", Error),
            ("[ERROR] something broke", Error),
            ("WARNING: disk almost full", Warn),
            ("Error: file not found", Error),
            ("2024-01-15T10:00:00.000Z\tinfo\tzap message", Info),
            ("2024-01-15T10:00:00.000Z\tdebug\tzap message", Debug),
            ("2024-01-15T10:00:00Z  INFO server: listening", Info),
            ("2024-01-15T10:00:00.123Z TRACE tokio: poll", Trace),
            ("FATAL out of memory", Fatal),
            ("[2024-01-15 10:00:00] production.CRITICAL: x", Info),
        ]);
    }

    #[test]
    fn negatives_default_to_info() {
        check(&[
            ("no errors found", Info),
            ("fine, the job ran", Info),
            ("Failed to connect: error", Info),
            ("the user said error five times", Info),
            ("GET /errors/warn 200", Info),
            ("", Info),
            ("   ", Info),
            ("[a very long bracketed message that mentions error]", Info),
            ("{\"msg\":\"unterminated", Info),
            ("<>", Info),
            ("{}", Info),
            ("level=", Info),
            ("x level=loud", Info),
            ("🚀 launched", Info),
        ]);
    }
}
