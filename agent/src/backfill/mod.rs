//! Backfill: the most recent records of a session's files, sent before its live ones.
//!
//! A start request may ask for `"backfill": {"lines": N}`. When such a session first runs on
//! the agent (not when its filters change, nor when a restart restores it: that resumes from
//! checkpoints instead), the pipeline runs [`scan`] on a blocking thread before it takes
//! another tail batch, and the session sends what it found as its first `Logs`, then
//! `BackfillDone`. The policy, exactly:
//!
//! - **Which lines.** For every source of the session (all of the agent's when its filters
//!   name none), every file its glob matches now (most recently modified first, as the byte
//!   bound below is per source), read backwards from the last newline: the
//!   N most recent records that pass the session's filters. When a file gives fewer than N,
//!   the most recent rotated file beside it (`app.log.1`, `app.log-20261202`, …; not
//!   compressed ones) is read too, as the tailer would have named its lines (`app.log`). Over
//!   several files, records are merged by event time (records without one keep their place
//!   after the one before them in their file), and the newest N of all go out, oldest first.
//! - **Same records as live.** Lines are joined (the source's `multiline`), parsed (its
//!   `format`, `timezone`) and filtered (the session's own chain, WebAssembly included) as live
//!   lines are. Backwards, a record's start is only known at a line that cannot continue the
//!   one before it ([`crate::multiline::may_continue`]), so lines are taken in segments of at
//!   least [`SEGMENT_LINES`] that begin at such a line. Stateful plugins (sampling) see the
//!   segments newest first.
//! - **Line numbers** are the lines' real numbers in their files: the lines before the part
//!   read are counted (a sequential read of that part, as the tailer's start does). The
//!   pipeline waits for the scan (see [`crate::pipeline`]), so on a file of gigabytes other
//!   sessions' live lines wait that long too; the files hold them meanwhile.
//! - **Bounded.** At most [`Tuning::backfill_scan_bytes`] (default
//!   [`DEFAULT_BACKFILL_SCAN_BYTES`]) are read backwards per source, over all its files, in
//!   [`reader::BACKWARD_CHUNK_BYTES`] chunks; memory is bounded by that too. When the bound
//!   stops the search before N records were found, `BackfillDone` says `truncated`.
//! - **No gap, no overlap.** Each file is read up to its last newline at the time of the scan
//!   (its *boundary*); the pipeline handles no tail batch until the scan is done, and the
//!   session then skips live records of that file ending at or before the boundary: they were
//!   read (or held for continuation lines) before the scan, and are in the backfill. Everything
//!   after the boundary is live. A multiline record being written at that moment is cut
//!   there: its first lines end the backfill and its continuation lines arrive live as a
//!   record of their own.
//! - **Rate limit.** Backfilled records count against the session's rate limit like live
//!   ones, and the limiter starts full (one second of `lines_per_second` / `bytes_per_second`).
//!   It decides newest first, so a backfill larger than that keeps its newest records; the
//!   older ones it drops are reported as `logs_dropped` `rate_limited` before `backfill_done`,
//!   whose `count` is what was sent. Ask for more than one second's worth only with
//!   `limits` raised to match.
//! - **Seq.** Backfilled records are numbered as they go out, like every record, so `seq`
//!   increases in delivery order; the live records that follow are numbered above them.
//!
//! [`Tuning::backfill_scan_bytes`]: crate::config::Tuning::backfill_scan_bytes

mod files;
pub mod reader;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use logfleet_protocol::agent::Record;
use tracing::{debug, warn};

use crate::config::SourceConfig;
use crate::filter::{FilterChain, FilterFailure};
use crate::multiline::{Joiner, may_continue};
use crate::parse::Parsers;
use crate::tail::identity::FileId;
use crate::tail::{LinePos, TailLine};
use crate::time::now_ms;
use files::{count_newlines, matching, open, predecessor};
use reader::{BackLine, BackwardLines};

/// Default for [`Tuning::backfill_scan_bytes`](crate::config::Tuning::backfill_scan_bytes):
/// most bytes a backfill reads backwards per source. 8 MiB is some 50,000 typical lines:
/// enough for 10,000 records under a selective filter, and a few milliseconds of disk.
pub const DEFAULT_BACKFILL_SCAN_BYTES: u64 = 8 * 1024 * 1024;
/// Fewest lines read back before they are joined, parsed and filtered together.
pub const SEGMENT_LINES: usize = 1024;

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The records to send, oldest first; not numbered yet (`seq` 0).
    pub records: Vec<Record>,
    /// Per file read: where the backfill ends and live records begin.
    pub boundaries: Vec<LinePos>,
    /// The byte bound stopped the search before it found as many records as asked for.
    pub truncated: bool,
}

/// The session's filter failed during the scan: it ends, fail closed.
#[derive(Debug)]
pub struct ScanFailed {
    pub failure: FilterFailure,
    /// Records it kept from being decided.
    pub undecided: u64,
}

/// Finds the `lines` most recent records of `sources` (those named in `only`, all when it is
/// empty) that pass `chain`, reading at most `budget` bytes backwards per source. Blocking.
pub fn scan(
    sources: &[SourceConfig],
    only: &[String],
    lines: usize,
    budget: u64,
    chain: &mut dyn FilterChain,
) -> Result<Scan, ScanFailed> {
    let mut out = Scan::default();
    let mut groups: Vec<Vec<Record>> = Vec::new();
    let mut spent = false;
    let mut seen: HashSet<FileId> = HashSet::new();
    for source in sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
    {
        let mut ctx = SourceScan {
            name: source.name.as_str().into(),
            modes: HashMap::from([(source.name.clone(), source.multiline.clone())]),
            parsers: Parsers::new(std::slice::from_ref(source)),
            budget,
            spent: false,
        };
        for path in matching(&source.path) {
            let shown: Arc<str> = path.to_string_lossy().as_ref().into();
            let current = ctx.file(&path, &shown, lines, chain, &mut seen)?;
            out.boundaries.extend(current.boundary);
            let mut group = current.records;
            if group.len() < lines
                && ctx.budget > 0
                && let Some(older) = predecessor(&path, &seen)
            {
                let before = ctx.file(&older, &shown, lines - group.len(), chain, &mut seen)?;
                out.boundaries.extend(before.boundary);
                let mut both = before.records;
                both.append(&mut group);
                group = both;
            }
            groups.push(group);
        }
        spent |= ctx.spent;
    }
    let mut merged = merge(groups);
    if merged.len() > lines {
        merged.drain(..merged.len() - lines);
    }
    out.truncated = spent && merged.len() < lines;
    out.records = merged;
    Ok(out)
}

/// One source being scanned: how its lines become records, and its budget left.
struct SourceScan {
    name: Arc<str>,
    modes: HashMap<String, crate::multiline::Multiline>,
    parsers: Parsers,
    budget: u64,
    /// The budget ran out before a file's start.
    spent: bool,
}

/// What one file gave.
struct FileScan {
    /// Oldest first.
    records: Vec<Record>,
    boundary: Option<LinePos>,
}

impl SourceScan {
    /// Up to `want` records of the file at `path` (named `shown` in records), newest
    /// segments first, each segment joined, parsed and filtered as a whole.
    fn file(
        &mut self,
        path: &Path,
        shown: &Arc<str>,
        want: usize,
        chain: &mut dyn FilterChain,
        seen: &mut HashSet<FileId>,
    ) -> Result<FileScan, ScanFailed> {
        let empty = FileScan {
            records: Vec::new(),
            boundary: None,
        };
        let (file, id, len) = match open(path) {
            Ok(opened) => opened,
            Err(e) => {
                debug!(file = %path.display(), error = %e, "cannot read a file to backfill from");
                return Ok(empty);
            }
        };
        if !seen.insert(id) {
            return Ok(empty);
        }
        let mode = self.modes.get(&*self.name).cloned().unwrap_or_default();
        let mut reader = BackwardLines::new(&file, len, self.budget);
        // (index from the newest line, line), newest first.
        let mut pending: Vec<(u64, BackLine)> = Vec::new();
        let mut read = 0u64;
        let mut oldest_start = None;
        let mut found: Vec<Vec<Record>> = Vec::new();
        let mut count = 0;
        let mut target = SEGMENT_LINES;
        let mut failed_read = false;
        loop {
            let mut ended = false;
            while pending.len() < target {
                match reader.next() {
                    Some(Ok(line)) => {
                        oldest_start = Some(line.start);
                        pending.push((read, line));
                        read += 1;
                    }
                    Some(Err(e)) => {
                        warn!(file = %path.display(), error = %e, "backfill read failed; using what was read");
                        failed_read = true;
                        ended = true;
                        break;
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            let whole = ended && !reader.budget_spent() && !failed_read;
            let cut = if whole {
                pending.len()
            } else {
                match pending
                    .iter()
                    .rposition(|(_, l)| !may_continue(&mode, &l.text))
                {
                    Some(i) => i + 1,
                    // Lines whose record's start was never reached: fragments.
                    None if ended => break,
                    None => {
                        target += SEGMENT_LINES;
                        continue;
                    }
                }
            };
            let segment: Vec<(u64, BackLine)> = pending.drain(..cut).collect();
            let kept = self.filter(segment, shown, id, chain)?;
            count += kept.len();
            found.push(kept);
            if count >= want || ended {
                break;
            }
            target = pending.len() + SEGMENT_LINES;
        }
        self.spent |= reader.budget_spent();
        self.budget = reader.budget_left();
        // Lines were numbered from the newest (0); their numbers in the file follow from the
        // lines before the part read.
        let before = match oldest_start {
            Some(start) => count_newlines(&file, start).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "cannot count lines for backfill");
                0
            }),
            None => 0,
        };
        let total = before + read;
        let mut records: Vec<Record> = found.into_iter().rev().flatten().collect();
        for r in &mut records {
            r.line = total - r.line;
        }
        Ok(FileScan {
            records,
            boundary: reader.boundary().map(|end| LinePos {
                id,
                start: end,
                end,
            }),
        })
    }

    /// Joins, parses and filters one segment (newest first); returns what the chain kept,
    /// oldest first, `line` still the index from the newest line.
    fn filter(
        &self,
        segment: Vec<(u64, BackLine)>,
        shown: &Arc<str>,
        id: FileId,
        chain: &mut dyn FilterChain,
    ) -> Result<Vec<Record>, ScanFailed> {
        let read_at_ms = now_ms();
        let lines: Vec<TailLine> = segment
            .into_iter()
            .rev()
            .map(|(index, l)| TailLine {
                source: self.name.clone(),
                file: shown.clone(),
                line: index,
                text: l.text,
                read_at_ms,
                at: LinePos {
                    id,
                    start: l.start,
                    end: l.end,
                },
            })
            .collect();
        let now = Instant::now();
        let mut joiner = Joiner::new(self.modes.clone());
        let mut joined = Vec::with_capacity(lines.len());
        joiner.push(lines, now, &mut joined);
        joiner.flush_idle(now, true, &mut joined);
        let records: Vec<Record> = joined
            .into_iter()
            .map(|l| self.parsers.record(0, l))
            .collect();
        let output = chain.apply(&records);
        if let Some(failure) = output.failure {
            return Err(ScanFailed {
                failure,
                undecided: output.undecided,
            });
        }
        Ok(output
            .kept
            .into_iter()
            .filter_map(|k| {
                let mut r = records.get(k.index as usize)?.clone();
                if let Some(message) = k.message {
                    r.message = message;
                    logfleet_protocol::agent_limits::fit_record(&mut r);
                }
                Some(r)
            })
            .collect())
    }
}

/// Merges per-file record lists (each oldest first) into one, oldest first, by event time;
/// a record without one sorts as the record before it in its file, so each file keeps its
/// order.
fn merge(groups: Vec<Vec<Record>>) -> Vec<Record> {
    let mut keyed: Vec<std::iter::Peekable<std::vec::IntoIter<(i64, Record)>>> = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let mut last = i64::MIN;
            g.into_iter()
                .map(|r| {
                    last = r.event_ms.unwrap_or(last);
                    (last, r)
                })
                .collect::<Vec<_>>()
                .into_iter()
                .peekable()
        })
        .collect();
    let mut out = Vec::new();
    loop {
        let next = keyed
            .iter_mut()
            .enumerate()
            .filter_map(|(i, g)| g.peek().map(|(k, _)| (*k, i)))
            .min();
        let Some((_, i)) = next else {
            return out;
        };
        if let Some((_, r)) = keyed[i].next() {
            out.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::builder;
    use logfleet_protocol::Filters;

    fn chain() -> Box<dyn FilterChain> {
        builder()
            .build(&Filters::default())
            .expect("the chain builds")
    }

    /// Multiline records read backwards are the records the live tail makes: a stack trace is
    /// one record with its first line's number, also where the segments read back split the
    /// file, and the oldest record is whole.
    #[test]
    fn stack_traces_read_backwards_are_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut text = String::new();
        for i in 0..600 {
            text.push_str(&format!("ERROR failed {i}\n"));
            for _ in 0..3 {
                text.push_str("\tat com.example.Foo.bar(Foo.java:10)\n");
            }
        }
        std::fs::write(&path, &text).unwrap();
        let sources = [SourceConfig::new("app", path.display().to_string())];
        let found = scan(&sources, &[], 500, u64::MAX, chain().as_mut()).unwrap();
        assert!(!found.truncated);
        assert_eq!(found.records.len(), 500);
        for (k, r) in found.records.iter().enumerate() {
            let i = 100 + k as u64;
            assert_eq!(r.line, 4 * i + 1, "{r:?}");
            assert_eq!(
                r.message.lines().next(),
                Some(format!("failed {i}").as_str())
            );
            assert_eq!(r.message.lines().count(), 4, "{:?}", r.message);
        }
        assert_eq!(found.boundaries.len(), 1);
        assert_eq!(found.boundaries[0].end, text.len() as u64);
    }

    /// Records of several files of a source are merged by their event time, and the newest
    /// of all are kept.
    #[test]
    fn files_of_a_source_merge_by_event_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.log"),
            "2024-01-01T00:00:01Z one\n2024-01-01T00:00:03Z three\n2024-01-01T00:00:05Z five\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.log"),
            "2024-01-01T00:00:02Z two\n2024-01-01T00:00:04Z four\n2024-01-01T00:00:06Z six\n",
        )
        .unwrap();
        let glob = dir.path().join("*.log").display().to_string();
        let sources = [SourceConfig::new("app", glob)];
        let found = scan(&sources, &[], 4, u64::MAX, chain().as_mut()).unwrap();
        let messages: Vec<&str> = found.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["three", "four", "five", "six"]);
        assert_eq!(found.boundaries.len(), 2);
        let only_web = scan(&sources, &["web".to_owned()], 4, u64::MAX, chain().as_mut()).unwrap();
        assert!(
            only_web.records.is_empty(),
            "a session on another source reads nothing"
        );
    }
}
