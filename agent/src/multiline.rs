//! Multiline records: a stack trace, a Python traceback or a Go panic is one record, not one
//! per line. A source's `multiline` setting says how lines group:
//!
//! - `none`: every line is a record (the default for `format = "plain"`);
//! - `auto` (the default otherwise): continuation lines join the record before them — lines
//!   starting with whitespace (Java's `\tat …`, Python's `  File "…"`), `Caused by:`,
//!   `... N more`, `Traceback (most recent call last):`, `During handling of …`, the exception
//!   line that ends a Python traceback, and a Go panic's `goroutine N [running]:` with the
//!   frames after it;
//! - `{"start": "REGEX"}`: a record starts at each line matching the regex; others continue it.
//!
//! A record is emitted when a line that starts the next one arrives, or once it has been
//! quiet for [`MULTILINE_IDLE`], so the live tail never waits for the next record. With `auto`
//! only lines that can start a trace are held back at all (a level of WARN or above, or a
//! line naming an exception, error or panic): everything else goes out at once. A record ends
//! at [`MAX_RECORD_LINES`] lines, [`MAX_RECORD_BYTES`] bytes or [`MAX_HOLD`] after its first
//! line; the rest starts a new one.
//! The record keeps its first line's number and read time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logfleet_protocol::Level;
use regex::Regex;

use crate::parse::detect_level;
use crate::tail::TailLine;

/// How long a record may wait for a continuation line.
pub const MULTILINE_IDLE: Duration = Duration::from_millis(100);
/// Longest a record is held from its first line, however its continuation lines trickle in.
pub const MAX_HOLD: Duration = Duration::from_secs(1);
/// Most lines in one record.
pub const MAX_RECORD_LINES: usize = 500;
/// Most bytes in one record (the bound on one line).
pub const MAX_RECORD_BYTES: usize = logfleet_protocol::agent_limits::MAX_LINE_BYTES;

/// How a source's lines group into records.
#[derive(Debug, Clone, Default)]
pub enum Multiline {
    None,
    #[default]
    Auto,
    Start(Regex),
}

impl PartialEq for Multiline {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Multiline::None, Multiline::None) | (Multiline::Auto, Multiline::Auto) => true,
            (Multiline::Start(a), Multiline::Start(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for Multiline {}

/// A record being assembled for one file.
struct Pending {
    line: TailLine,
    /// When its first line came: it goes out [`MAX_HOLD`] after that at the latest.
    first: Instant,
    lines: usize,
    since: Instant,
    /// Inside a Python traceback: its closing `SomeError: …` line continues it.
    traceback: bool,
    /// A Go panic: the empty line before its goroutine dump continues it.
    panic: bool,
}

/// Joins continuation lines, per file.
#[derive(Default)]
pub struct Joiner {
    by_source: HashMap<String, Multiline>,
    pending: HashMap<(Arc<str>, Arc<str>), Pending>,
}

impl Joiner {
    pub fn new(by_source: HashMap<String, Multiline>) -> Joiner {
        Joiner {
            by_source,
            pending: HashMap::new(),
        }
    }

    /// Feeds the lines of one tail batch; complete records go to `out`, in order per file.
    pub fn push(&mut self, batch: Vec<TailLine>, now: Instant, out: &mut Vec<TailLine>) {
        for line in batch {
            // A source nobody configured (tests, a line from nowhere) is not joined.
            let mode = self
                .by_source
                .get(&*line.source)
                .unwrap_or(&Multiline::None);
            if matches!(mode, Multiline::None) {
                out.push(line);
                continue;
            }
            let key = (line.source.clone(), line.file.clone());
            if let Some(p) = self.pending.get_mut(&key) {
                let continues = match mode {
                    Multiline::Start(re) => !re.is_match(&line.text),
                    _ => continues_auto(&line.text, p.traceback, p.panic),
                };
                let fits = p.lines < MAX_RECORD_LINES
                    && p.line.text.len() + 1 + line.text.len() <= MAX_RECORD_BYTES
                    && now.saturating_duration_since(p.first) < MAX_HOLD;
                if continues && fits {
                    p.traceback |= line.text.starts_with("Traceback (most recent call last)");
                    p.line.text.push('\n');
                    p.line.text.push_str(&line.text);
                    p.lines += 1;
                    p.since = now;
                    continue;
                }
                if let Some(done) = self.pending.remove(&key) {
                    out.push(done.line);
                }
            }
            let holds = match mode {
                Multiline::Start(_) => true,
                _ => may_start_trace(&line.text),
            };
            if holds {
                let traceback = line.text.contains("Traceback (most recent call last)");
                let panic = line.text.starts_with("panic: ");
                self.pending.insert(
                    key,
                    Pending {
                        line,
                        first: now,
                        lines: 1,
                        since: now,
                        traceback,
                        panic,
                    },
                );
            } else {
                out.push(line);
            }
        }
    }

    /// Records quiet for [`MULTILINE_IDLE`] (all of them with `all`), to `out`.
    pub fn flush_idle(&mut self, now: Instant, all: bool, out: &mut Vec<TailLine>) {
        if self.pending.is_empty() {
            return;
        }
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                all || now.saturating_duration_since(p.since) >= MULTILINE_IDLE
                    || now.saturating_duration_since(p.first) >= MAX_HOLD
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.pending.remove(&key) {
                out.push(p.line);
            }
        }
    }

    /// Whether a record is waiting for continuation lines.
    pub fn holding(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The records waiting for continuation lines (each as its first line read, so far).
    pub fn held(&self) -> impl Iterator<Item = &TailLine> {
        self.pending.values().map(|p| &p.line)
    }
}

/// Whether `text` could continue the record before it under `mode`, whatever that record
/// was: a line for which this is false surely starts a record, so lines read backwards from
/// there join exactly as the live tail joined them (see [`crate::backfill`]).
pub fn may_continue(mode: &Multiline, text: &str) -> bool {
    match mode {
        Multiline::None => false,
        Multiline::Start(re) => !re.is_match(text),
        Multiline::Auto => continues_auto(text, true, true),
    }
}

/// Whether `text` can be the first line of a trace: worth waiting a moment for continuations.
fn may_start_trace(text: &str) -> bool {
    detect_level(text) >= Level::Warn
        || ["Exception", "Error", "panic:", "Traceback", "error"]
            .iter()
            .any(|w| text.contains(w))
}

/// `auto`'s continuation lines.
fn continues_auto(text: &str, in_traceback: bool, in_panic: bool) -> bool {
    let starts = |p: &str| text.starts_with(p);
    if in_panic && text.is_empty() {
        return true;
    }
    if text.starts_with([' ', '\t']) && !text.trim().is_empty() {
        return true;
    }
    if starts("Caused by:")
        || starts("... ")
        || starts("Traceback (most recent call last)")
        || starts("During handling of the above exception")
        || starts("The above exception was the direct cause")
        || starts("goroutine ")
        || starts("created by ")
    {
        return true;
    }
    // Go frames: `main.main()` then `\t/path/file.go:12 +0x1d` (the latter starts with a tab).
    if text.ends_with(')') && text.contains('.') && !text.contains(' ') {
        return true;
    }
    // The exception line closing a Python traceback: `ValueError: bad`, `KeyError`.
    in_traceback && {
        let name = text.split(':').next().unwrap_or_default();
        !name.is_empty()
            && !name.contains(' ')
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && (name.ends_with("Error") || name.ends_with("Exception") || name.ends_with("Exit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64, text: &str) -> TailLine {
        TailLine {
            source: "app".into(),
            file: "/a.log".into(),
            line: n,
            text: text.to_owned(),
            read_at_ms: 0,
            at: Default::default(),
        }
    }

    fn join(mode: Multiline, lines: &[&str]) -> Vec<(u64, String)> {
        let mut j = Joiner::new(HashMap::from([("app".to_owned(), mode)]));
        let batch = lines
            .iter()
            .enumerate()
            .map(|(i, t)| line(i as u64 + 1, t))
            .collect();
        let mut out = Vec::new();
        let now = Instant::now();
        j.push(batch, now, &mut out);
        j.flush_idle(now + MULTILINE_IDLE, false, &mut out);
        out.into_iter().map(|l| (l.line, l.text)).collect()
    }

    #[test]
    fn a_java_stack_trace_is_one_record() {
        let got = join(
            Multiline::Auto,
            &[
                "INFO starting",
                "ERROR request failed",
                "java.lang.IllegalStateException: boom",
                "\tat com.example.Foo.bar(Foo.java:10)",
                "\tat com.example.Main.main(Main.java:3)",
                "Caused by: java.io.IOException: disk",
                "\t... 2 more",
                "INFO next",
            ],
        );
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], (1, "INFO starting".to_owned()));
        assert_eq!(got[1], (2, "ERROR request failed".to_owned()));
        assert_eq!(got[2].0, 3);
        assert!(
            got[2]
                .1
                .starts_with("java.lang.IllegalStateException: boom\n\tat com")
        );
        assert!(got[2].1.ends_with("\t... 2 more"));
        assert_eq!(got[3], (8, "INFO next".to_owned()));
    }

    #[test]
    fn python_tracebacks_and_go_panics() {
        let got = join(
            Multiline::Auto,
            &[
                "ERROR handler failed",
                "Traceback (most recent call last):",
                "  File \"app.py\", line 3, in <module>",
                "    main()",
                "ValueError: bad input",
                "panic: runtime error: index out of range",
                "",
                "goroutine 1 [running]:",
                "main.main()",
                "\t/app/main.go:12 +0x1d",
                "INFO ok",
            ],
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].1.ends_with("ValueError: bad input"), "{got:?}");
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1].0, 6);
        assert!(got[1].1.starts_with("panic: runtime error"), "{got:?}");
        assert!(got[1].1.ends_with("\t/app/main.go:12 +0x1d"), "{got:?}");
        assert_eq!(got[2], (11, "INFO ok".to_owned()));
    }

    #[test]
    fn start_regex_and_none() {
        let re = Multiline::Start(Regex::new(r"^\d{4}-").unwrap());
        let got = join(re, &["2024-01-01 a", "b", "c", "2024-01-02 d"]);
        assert_eq!(
            got,
            [
                (1, "2024-01-01 a\nb\nc".to_owned()),
                (4, "2024-01-02 d".to_owned())
            ]
        );
        let got = join(Multiline::None, &["ERROR x", "\tat y"]);
        assert_eq!(got.len(), 2);
    }

    /// Lines that cannot start a trace are never held back; a held one goes out when it has
    /// been quiet for the idle bound, and records are bounded in lines.
    #[test]
    fn holding_is_bounded() {
        let mut j = Joiner::new(HashMap::from([("app".to_owned(), Multiline::Auto)]));
        let now = Instant::now();
        let mut out = Vec::new();
        j.push(vec![line(1, "INFO fine")], now, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!j.holding());
        j.push(vec![line(2, "ERROR boom")], now, &mut out);
        assert!(j.holding());
        j.flush_idle(now + MULTILINE_IDLE / 2, false, &mut out);
        assert_eq!(out.len(), 1);
        j.flush_idle(now + MULTILINE_IDLE, false, &mut out);
        assert_eq!(out.len(), 2);
        let mut lines = vec![line(1, "ERROR x")];
        lines.extend((0..MAX_RECORD_LINES + 10).map(|i| line(i as u64 + 2, "\tat y")));
        out.clear();
        j.push(lines, now, &mut out);
        j.flush_idle(now, true, &mut out);
        assert_eq!(
            out.len(),
            12,
            "a record of 500 lines, then the 11 left alone"
        );
        // A trickle of continuation lines cannot hold a record past MAX_HOLD.
        out.clear();
        j.push(vec![line(1, "ERROR slow")], now, &mut out);
        let mut t = now;
        while t < now + MAX_HOLD * 2 {
            t += MULTILINE_IDLE / 2;
            j.push(vec![line(2, "  more")], t, &mut out);
            j.flush_idle(t, false, &mut out);
        }
        assert!(out.len() >= 2, "held at most MAX_HOLD: {}", out.len());
    }
}
