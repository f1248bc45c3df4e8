use super::*;
use crate::Level::*;

const NOW: i64 = 1_705_312_800_000; // 2024-01-15T10:00:00Z

fn auto(line: &str) -> Parsed<'_> {
    parse_line(line, Format::Auto, Timezone::UTC, NOW)
}

/// The reference's nginx line arrives as its message, level and own time.
#[test]
fn the_reference_nginx_line() {
    let line =
        "2024/01/15 10:00:00 [error] 1234#0: *5 upstream timed out (110: Connection timed out)";
    for format in [Format::Auto, Format::Nginx] {
        let p = parse_line(line, format, Timezone::UTC, NOW + 5_000);
        assert_eq!(p.level, Error);
        assert_eq!(p.message, "upstream timed out (110: Connection timed out)");
        assert_eq!(p.event_ms, Some(NOW));
        assert_eq!(p.fields, None);
    }
}

#[test]
fn text_prefixes_are_stripped() {
    let cases: &[(&str, Level, &str, Option<i64>)] = &[
        (
            "2024-01-15T10:00:02Z ERROR python sees this",
            Error,
            "python sees this",
            Some(NOW + 2000),
        ),
        (
            "2024-01-15 10:00:00,123 WARN [main] slow",
            Warn,
            "[main] slow",
            Some(NOW + 123),
        ),
        (
            "[2024-01-15T10:00:00Z] [info] started",
            Info,
            "started",
            Some(NOW),
        ),
        (
            "2024-01-15T10:00:00Z - INFO - ready",
            Info,
            "ready",
            Some(NOW),
        ),
        ("ERROR: disk full", Error, "disk full", None),
        ("[warn] low memory", Warn, "low memory", None),
        ("2024-01-15T10:00:00Z info hello", Info, "hello", Some(NOW)),
        // Nothing recognised: the whole line.
        ("no errors found today", Info, "no errors found today", None),
        (
            "error in the middle is kept",
            Info,
            "error in the middle is kept",
            None,
        ),
        // A prefix with nothing after it keeps the line.
        (
            "2024-01-15T10:00:00Z",
            Info,
            "2024-01-15T10:00:00Z",
            Some(NOW),
        ),
    ];
    for &(line, level, message, event_ms) in cases {
        let p = auto(line);
        assert_eq!(
            (p.level, p.message.as_ref(), p.event_ms),
            (level, message, event_ms),
            "{line}"
        );
    }
}

#[test]
fn json_lines_give_message_level_time_and_fields() {
    let p = auto(
        r#"{"ts":"2024-01-15T10:00:01Z","level":"warn","msg":"slow query","user_id":12345,"db":{"ms":812}}"#,
    );
    assert_eq!(p.level, Warn);
    assert_eq!(p.message, "slow query");
    assert_eq!(p.event_ms, Some(NOW + 1000));
    let fields: Value = serde_json::from_str(p.fields.as_deref().unwrap()).unwrap();
    assert_eq!(
        fields,
        serde_json::json!({"user_id": 12345, "db": {"ms": 812}})
    );
    // pino: numeric level, epoch ms, `message` kept in `msg`.
    let p = auto(r#"{"level":50,"time":1705312800000,"msg":"pino"}"#);
    assert_eq!(
        (p.level, p.message.as_ref(), p.event_ms, p.fields),
        (Error, "pino", Some(NOW), None)
    );
    // Not an object: free text.
    assert_eq!(auto("{not json").message, "{not json");
    // `json` on a line that is not JSON keeps the line.
    let p = parse_line("plain words", Format::Json, Timezone::UTC, NOW);
    assert_eq!(p.message, "plain words");
}

#[test]
fn logfmt_lines() {
    let p = auto(r#"time=2024-01-15T10:00:00Z level=error msg="db down" user_id=12345 retry"#);
    assert_eq!(
        (p.level, p.message.as_ref(), p.event_ms),
        (Error, "db down", Some(NOW))
    );
    let fields: Value = serde_json::from_str(p.fields.as_deref().unwrap()).unwrap();
    assert_eq!(
        fields,
        serde_json::json!({"user_id": "12345", "retry": true})
    );
    // One pair is not enough to call a line logfmt.
    assert_eq!(auto("note=this is prose").message, "note=this is prose");
}

#[test]
fn syslog_lines() {
    let p = auto("<11>Jan 15 10:00:00 web1 sshd[812]: Failed password for root");
    assert_eq!(
        (p.level, p.message.as_ref(), p.event_ms),
        (Error, "Failed password for root", Some(NOW))
    );
    let fields: Value = serde_json::from_str(p.fields.as_deref().unwrap()).unwrap();
    assert_eq!(
        fields,
        serde_json::json!({"app": "sshd", "pid": "812", "hostname": "web1"})
    );
    let p = auto("Jan 15 10:00:00 web1 kernel: eth0 link up");
    assert_eq!(
        (p.message.as_ref(), p.event_ms),
        ("eth0 link up", Some(NOW))
    );
    let p = auto("<165>1 2024-01-15T10:00:00.000Z host app 42 ID47 [x@1 a=\"b\"] an event");
    assert_eq!(
        (p.level, p.message.as_ref(), p.event_ms),
        (Info, "an event", Some(NOW))
    );
    let p = parse_line(
        "<13>1 2024-01-15T10:00:00Z h a - - - bare",
        Format::Syslog,
        Timezone::UTC,
        NOW,
    );
    assert_eq!(p.message, "bare");
}

#[test]
fn plain_keeps_everything() {
    let line = "2024-01-15T10:00:00Z ERROR kept whole";
    let p = parse_line(line, Format::Plain, Timezone::UTC, NOW);
    assert_eq!(
        (p.level, p.message.as_ref(), p.event_ms),
        (Error, line, None)
    );
}

/// Fields never grow past their bound, and say how many keys did not fit.
#[test]
fn fields_are_bounded() {
    let pairs: Vec<String> = (0..2000)
        .map(|i| format!("\"k{i}\":\"{}\"", "v".repeat(20)))
        .collect();
    let line = format!("{{\"msg\":\"m\",{}}}", pairs.join(","));
    let p = auto(&line);
    let fields = p.fields.unwrap();
    assert!(fields.len() <= MAX_FIELDS_BYTES, "{}", fields.len());
    let v: Value = serde_json::from_str(&fields).unwrap();
    assert!(v["_truncated"].as_u64().unwrap() > 0);
}

/// Any bytes at all parse without panicking, and the message is always part of the line or
/// a field's value.
#[test]
fn odd_lines_do_not_panic() {
    for line in [
        "",
        " ",
        "<",
        "<999>x",
        "{",
        "Jan",
        "2024/01/15 10:00:00 [error] 1#",
        "a=",
        "a=\"",
        "é=ü x=1",
        "[2024-01-15T10:00:00Z",
        "\u{1F600} ERROR x",
    ] {
        for format in Format::ALL {
            let _ = parse_line(line, format, Timezone::UTC, NOW);
        }
    }
}
