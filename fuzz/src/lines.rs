//! The agent's level detection (`logfleet_protocol::line_level`) and line parsing
//! (`logfleet_protocol::parse`) on raw log lines.
//!
//! Besides never panicking (both slice bytes by hand), detection must keep the precedence its
//! documentation promises whatever follows the part that names the level, and a parsed record
//! must always fit the bounds the host checks once the agent has fitted it.

use logfleet_protocol::Level;
use logfleet_protocol::agent::{AgentFrame, LogBatch, Record};
use logfleet_protocol::agent_limits::{self, fit_record};
use logfleet_protocol::line_level::detect_level;
use logfleet_protocol::parse::{Format, MAX_FIELDS_BYTES, Timezone, parse_line};

/// Checks every level-detection property on one input (read lossily as UTF-8, as the tailer
/// does with the lines it reads).
pub fn check(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let level = detect_level(&line);

    // Indentation does not change a line's level.
    assert_eq!(
        detect_level(&format!(" \t {line}")),
        level,
        "indented {line:?}"
    );

    let pick = |i: usize| Level::ALL[data.get(i).map_or(0, |&b| usize::from(b) % 6)];

    // A leading upper-case level word decides, whatever the rest of the line says.
    for want in Level::ALL {
        assert_eq!(
            detect_level(&format!("{want} {line}")),
            want,
            "{want} {line:?}"
        );
    }
    let want = pick(0);
    assert_eq!(
        detect_level(&format!(
            "2024-01-15T10:00:00Z [{}] {line}",
            want.as_str().to_lowercase()
        )),
        want,
        "bracketed after a timestamp: {line:?}"
    );

    // A syslog <PRI> prefix decides by its severity (PRI % 8), before anything else.
    let pri = data.get(1).map_or(0, |&b| b % 192);
    assert_eq!(
        detect_level(&format!("<{pri}>{line}")),
        Level::from_syslog_severity(pri % 8),
        "<{pri}>{line:?}"
    );

    // In a JSON object line the first level key decides, whatever follows it.
    let want = pick(2);
    assert_eq!(
        detect_level(&format!(
            r#"{{"level":"{}",{line}"#,
            want.as_str().to_lowercase()
        )),
        want,
        "json {line:?}"
    );

    // A logfmt level after one lower-case word (never a level on its own).
    let want = pick(3);
    let plain = line.replace(|c: char| !c.is_ascii_lowercase(), "x");
    assert_eq!(detect_level(&plain), Level::Info, "{plain:?}");
    assert_eq!(
        detect_level(&format!("{plain} level={}", want.as_str().to_lowercase())),
        want,
        "logfmt {plain:?}"
    );
}

/// Parsing properties: any line parses in every format without panicking; `fields` is a JSON
/// object within its bound; a text-format message is a part of the line; and the record the
/// agent builds from it passes the host's checks.
pub fn check_parse(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let tz = Timezone {
        offset_seconds: i32::from(data.first().copied().unwrap_or(0)) * 60 - 7200,
    };
    for format in Format::ALL {
        let parsed = parse_line(&line, format, tz, 1_705_312_800_000);
        if let Some(fields) = &parsed.fields {
            assert!(fields.len() <= MAX_FIELDS_BYTES, "{format} {line:?}");
            let value: serde_json::Value = serde_json::from_str(fields).expect("fields are JSON");
            assert!(value.is_object(), "{format} {line:?}");
        }
        if matches!(format, Format::Plain | Format::Nginx) {
            assert!(line.contains(parsed.message.as_ref()), "{format} {line:?}");
        }
        let mut record = Record {
            seq: 1,
            timestamp_ms: 0,
            level: parsed.level,
            source: "s".into(),
            file: "/f".into(),
            line: 1,
            message: parsed.message.into_owned(),
            event_ms: parsed.event_ms,
            fields: parsed.fields,
            raw: None,
        };
        fit_record(&mut record);
        let frame = AgentFrame::Logs(LogBatch {
            session_id: "s".into(),
            records: vec![record],
        });
        assert_eq!(agent_limits::check(&frame), Ok(()), "{format} {line:?}");
    }
}
