//! The agent's level detection (`logfleet_protocol::line_level`) on raw log lines.
//!
//! Besides never panicking (it slices bytes by hand), detection must keep the precedence its
//! documentation promises whatever follows the part that names the level.

use logfleet_protocol::Level;
use logfleet_protocol::line_level::detect_level;

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
