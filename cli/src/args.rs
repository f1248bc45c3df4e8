//! Parsers for the CLI's argument conventions, kept out of `main.rs` so they are tested here:
//! durations (`--timeout 5m`), level thresholds (`--level WARN+`) and when to colour.

use std::time::Duration;

use logfleet_protocol::Level;
use logfleet_protocol::labels::{Labels, Selector, parse_label};
use logfleet_protocol::rest::{MAX_BACKFILL_LINES, MAX_TIMEOUT_SECONDS};

/// `--timeout`: whole seconds (`300`) or a duration (`90s`, `5m`, `1h`), within the host's
/// 1..=3600 s.
pub fn parse_timeout(value: &str) -> Result<u64, String> {
    let seconds = match value.trim().parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => {
            let duration: Duration = humantime::parse_duration(value.trim())
                .map_err(|e| format!("'{value}' is neither seconds nor a duration like 5m: {e}"))?;
            if duration.subsec_nanos() != 0 {
                return Err(format!("'{value}' is not a whole number of seconds"));
            }
            duration.as_secs()
        }
    };
    if (1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "the session length must be 1s..{}s (1h), not {seconds}s",
            MAX_TIMEOUT_SECONDS
        ))
    }
}

/// `--backfill N` (alias `--tail`): 1..=10000 records.
pub fn parse_backfill(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_BACKFILL_LINES).contains(&n) => Ok(n),
        _ => Err(format!(
            "the backfill is 1..{MAX_BACKFILL_LINES} lines, not '{value}'"
        )),
    }
}

/// `--level` values with thresholds expanded: `WARN+` is WARN, ERROR and FATAL. Plain names
/// (and the synonyms the host accepts) pass through for the host to judge.
pub fn expand_levels(values: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        match value.trim().strip_suffix('+') {
            None => out.push(value.trim().to_owned()),
            Some(base) => {
                let level = Level::parse(base).ok_or_else(|| {
                    format!(
                        "unknown level '{base}' in '{value}' (TRACE DEBUG INFO WARN ERROR FATAL)"
                    )
                })?;
                out.extend(
                    Level::ALL
                        .iter()
                        .filter(|l| **l >= level)
                        .map(|l| l.as_str().to_owned()),
                );
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// `--selector env=prod,role=edge` (comma-separated or repeated): the labels a fleet
/// session's agents must all carry.
pub fn parse_selector(pairs: &[String]) -> Result<Selector, String> {
    let mut labels = Labels::new();
    for pair in pairs {
        let (key, value) = parse_label(pair.trim()).map_err(|e| format!("--selector: {e}"))?;
        labels.insert(key, value);
    }
    let selector = Selector { labels, name: None };
    selector.check().map_err(|e| format!("--selector: {e}"))?;
    Ok(selector)
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set or `TERM=dumb`.
    Auto,
    Always,
    Never,
}

/// Whether to colour, by `choice`, whether the stream is a terminal, `NO_COLOR` and `TERM`.
pub fn use_colour(
    choice: ColorChoice,
    is_terminal: bool,
    no_color: Option<&str>,
    term: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds and human durations both work, within the host's session bounds.
    #[test]
    fn timeouts_take_seconds_or_durations() {
        assert_eq!(parse_timeout("300"), Ok(300));
        assert_eq!(parse_timeout("5m"), Ok(300));
        assert_eq!(parse_timeout("1h"), Ok(3600));
        assert_eq!(parse_timeout("90s"), Ok(90));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("2h").is_err());
        assert!(parse_timeout("1.5s").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    /// A backfill is a whole number of lines within the host's bound.
    #[test]
    fn backfill_is_bounded() {
        assert_eq!(parse_backfill("100"), Ok(100));
        assert_eq!(parse_backfill("10000"), Ok(10_000));
        assert!(parse_backfill("0").is_err());
        assert!(parse_backfill("10001").is_err());
        assert!(parse_backfill("many").is_err());
    }

    /// `LEVEL+` means that level and every more severe one; plain names pass through.
    #[test]
    fn level_thresholds_expand() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            expand_levels(&v(&["WARN+"])),
            Ok(v(&["WARN", "ERROR", "FATAL"]))
        );
        assert_eq!(
            expand_levels(&v(&["warning+"])),
            Ok(v(&["WARN", "ERROR", "FATAL"]))
        );
        assert_eq!(
            expand_levels(&v(&["info", "ERROR"])),
            Ok(v(&["info", "ERROR"]))
        );
        assert!(expand_levels(&v(&["LOUD+"])).is_err());
    }

    /// `--selector` takes KEY=VALUE pairs and refuses anything else.
    #[test]
    fn selectors_take_label_pairs() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let sel = parse_selector(&v(&["env=prod", " role=edge"])).unwrap();
        assert_eq!(sel.labels.len(), 2);
        assert_eq!(sel.labels["role"], "edge");
        assert!(parse_selector(&v(&["envprod"])).is_err());
        assert!(parse_selector(&[]).is_err());
    }

    /// Colour only where a person reads it, and never against NO_COLOR or TERM=dumb unless
    /// asked for.
    #[test]
    fn colour_rules() {
        use ColorChoice::*;
        assert!(use_colour(Auto, true, None, Some("xterm")));
        assert!(use_colour(Auto, true, Some(""), None));
        assert!(!use_colour(Auto, true, Some("1"), None));
        assert!(!use_colour(Auto, true, None, Some("dumb")));
        assert!(!use_colour(Auto, false, None, None));
        assert!(use_colour(Always, false, Some("1"), Some("dumb")));
        assert!(!use_colour(Never, true, None, None));
    }
}
