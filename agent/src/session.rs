//! One streaming session on the agent: its filter chain, rate limiter and pending batch.
//!
//! A session exists once its chain is built (see [`crate::loader`]); until then the pipeline
//! holds it as pending.
//!
//! A session ends by the agent's monotonic clock: the host says how long it has left
//! (`SessionSpec::remaining_ms`), the pipeline turns that into an [`Instant`] when the frame
//! arrives, and neither clock's wall time (the agent's may be hours off) plays a part.
//!
//! A session turns the records of each tail batch into frames for the outbox: matching records
//! are batched into `Logs` (flushed every `batch_interval`, or earlier when full), and rate-limit
//! drops become a `Dropped` frame placed before the batch they interrupted.
//!
//! Filters fail closed. When a filter fails, the session ends on the spot: what every filter
//! decided to keep (its pending batch) still goes out, then one `FilterError` frame naming the
//! filter and counting the records it kept from being decided; those never pass. The pipeline
//! then drops the session, and the host ends it for clients.

use std::time::Instant;

use logfleet_protocol::agent::{AgentFrame, LogBatch, Record, SessionSpec};
use logfleet_protocol::agent_limits::{
    MAX_NAME_BYTES, MAX_TEXT_BYTES, clip, fit_record, record_bytes,
};
use logfleet_protocol::client::DropReason;
use tracing::warn;

use crate::filter::{FilterChain, FilterFailure};
use crate::loader::RUNTIME_FILTER_NAME;
use crate::ratelimit::RateLimiter;
use crate::tail::LinePos;

/// A batch is sent as soon as it holds this many records...
pub const MAX_BATCH_RECORDS: usize = 512;
/// ...or this many bytes (approximate encoded size), so one frame stays small on the link and
/// in the host's fan-out.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Rough per-record overhead beyond its strings (seq, timestamp, level, line, lengths).
const RECORD_OVERHEAD_BYTES: usize = 24;

/// A running session.
pub struct Session {
    spec: SessionSpec,
    /// When it ends on the agent's monotonic clock, unless the host ends it first.
    ends: Instant,
    chain: Box<dyn FilterChain>,
    limiter: RateLimiter,
    pending: Vec<Record>,
    pending_bytes: usize,
    /// Records dropped by the rate limit since the last flush.
    rate_dropped: u64,
    /// Where its backfill ended, per file: live records of those files ending at or before
    /// these offsets are in the backfill and are skipped (see [`crate::backfill`]). An entry
    /// goes once a later line of its file is offered.
    backfilled_to: Vec<LinePos>,
}

/// A session's filters failed: it has put its last frames out and must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

impl Session {
    /// Starts a session with its ready chain, to end at `ends`.
    pub fn start(
        spec: SessionSpec,
        chain: Box<dyn FilterChain>,
        ends: Instant,
        now: Instant,
    ) -> Session {
        Session {
            limiter: RateLimiter::new(spec.limits, now),
            spec,
            ends,
            chain,
            pending: Vec::new(),
            pending_bytes: 0,
            rate_dropped: 0,
            backfilled_to: Vec::new(),
        }
    }

    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    /// Whether the session has reached its end.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.ends
    }

    /// Moves its end, as a newer word from the host says.
    /// When it ends on the agent's monotonic clock.
    pub fn ends(&self) -> Instant {
        self.ends
    }

    pub fn set_ends(&mut self, ends: Instant) {
        self.ends = ends;
    }

    /// Its filter chain, for a backfill's scan.
    pub fn chain_mut(&mut self) -> &mut dyn FilterChain {
        self.chain.as_mut()
    }

    /// Whether live records need their positions (see [`Session::offer_at`]).
    pub fn skips_backfilled(&self) -> bool {
        !self.backfilled_to.is_empty()
    }

    /// The boundaries its backfill still skips live records up to, taken for the session
    /// that replaces it (new filters): see [`Session::skip_backfilled`].
    pub fn take_backfilled(&mut self) -> Vec<LinePos> {
        std::mem::take(&mut self.backfilled_to)
    }

    /// Skips live records up to `boundaries`, which a backfill of this session (under its
    /// previous filters) sent.
    pub fn skip_backfilled(&mut self, boundaries: Vec<LinePos>) {
        self.backfilled_to = boundaries;
    }

    /// Sends `records` (a backfill, oldest first, numbered) through the rate limiter, which
    /// decides newest first so an oversized backfill keeps its newest records, and flushes
    /// them into `out` (drops first). Live records of the files read are then skipped up to
    /// `boundaries`. Returns how many records were sent.
    pub fn backfill(
        &mut self,
        records: Vec<Record>,
        boundaries: Vec<LinePos>,
        now: Instant,
        out: &mut Vec<AgentFrame>,
    ) -> u64 {
        let mut allowed: Vec<Record> = Vec::with_capacity(records.len());
        for record in records.into_iter().rev() {
            if self.limiter.allow(record.message.len(), now) {
                allowed.push(record);
            } else {
                self.rate_dropped += 1;
            }
        }
        let sent = allowed.len() as u64;
        for record in allowed.into_iter().rev() {
            self.pending_bytes += record_bytes(&record) + RECORD_OVERHEAD_BYTES;
            self.pending.push(record);
            if self.pending.len() >= MAX_BATCH_RECORDS || self.pending_bytes >= MAX_BATCH_BYTES {
                self.flush(out);
            }
        }
        self.flush(out);
        self.backfilled_to = boundaries;
        sent
    }

    /// [`Session::offer`] for records read at `positions` (one per record; empty when no
    /// session skips backfilled records): records its backfill already sent are skipped.
    pub fn offer_at(
        &mut self,
        records: &[Record],
        positions: &[LinePos],
        now: Instant,
        out: &mut Vec<AgentFrame>,
    ) -> Result<(), Failed> {
        if self.backfilled_to.is_empty() || positions.len() != records.len() {
            return self.offer(records, now, out);
        }
        // A boundary's `start` is where the pipeline's handled lines of the file ended when
        // the backfill ran, its `end` where the backfill read to: live lines between them were
        // sent by the backfill. A line starting before `start` means the file started over
        // (copytruncate): it and all after it are new.
        let backfilled = |at: &LinePos| {
            self.backfilled_to
                .iter()
                .any(|b| b.id == at.id && at.start >= b.start && at.end <= b.end)
        };
        let skip: Vec<bool> = positions.iter().map(backfilled).collect();
        // A later line of a file, or one before where its boundary begins: the boundary is
        // behind; forget it.
        self.backfilled_to.retain(|b| {
            !positions
                .iter()
                .any(|at| at.id == b.id && (at.end > b.end || at.start < b.start))
        });
        if !skip.contains(&true) {
            return self.offer(records, now, out);
        }
        let live: Vec<Record> = records
            .iter()
            .zip(skip)
            .filter(|(_, skip)| !skip)
            .map(|(r, _)| r.clone())
            .collect();
        self.offer(&live, now, out)
    }

    /// Runs the chain and rate limit over one tail batch's records; full batches are flushed
    /// into `out` as they fill. Runs WebAssembly for up to the filters' deadlines: call it on
    /// a blocking thread. When a filter fails, nothing of `records` passes: the session
    /// flushes what it holds, puts its `FilterError` into `out` and returns [`Failed`]; it must
    /// not be offered records again.
    pub fn offer(
        &mut self,
        records: &[Record],
        now: Instant,
        out: &mut Vec<AgentFrame>,
    ) -> Result<(), Failed> {
        let result = self.chain.apply(records);
        if result.failure.is_some() || result.undecided > 0 {
            // A chain reporting undecided records without a failure failed before: never
            // expected here (a failed session is dropped), but it must not pass silently.
            let failure = result.failure.unwrap_or_else(|| FilterFailure {
                plugin: RUNTIME_FILTER_NAME.to_owned(),
                message: "the session's filter chain had failed".to_owned(),
            });
            self.fail(failure, result.undecided, out);
            return Err(Failed);
        }
        for kept in result.kept {
            let Some(source) = records.get(kept.index as usize) else {
                // A chain returned an index outside the batch: a filter bug, not the data's.
                continue;
            };
            let message = kept.message.unwrap_or_else(|| source.message.clone());
            if !self.limiter.allow(message.len(), now) {
                self.rate_dropped += 1;
                continue;
            }
            // Not `..source.clone()`: the line as read (`raw`) stays here.
            let mut record = Record {
                seq: source.seq,
                timestamp_ms: source.timestamp_ms,
                level: source.level,
                source: source.source.clone(),
                file: source.file.clone(),
                line: source.line,
                message,
                event_ms: source.event_ms,
                fields: source.fields.clone(),
                raw: None,
            };
            // A plugin's rewrite may be longer than any line.
            fit_record(&mut record);
            self.pending_bytes += record_bytes(&record) + RECORD_OVERHEAD_BYTES;
            self.pending.push(record);
            if self.pending.len() >= MAX_BATCH_RECORDS || self.pending_bytes >= MAX_BATCH_BYTES {
                self.flush(out);
            }
        }
        Ok(())
    }

    /// Ends the session after `failure`: what every filter decided goes out first, then the
    /// `FilterError` counting the `undecided` records.
    pub fn fail(&mut self, failure: FilterFailure, undecided: u64, out: &mut Vec<AgentFrame>) {
        warn!(session = %self.spec.id, filter = %failure.plugin, error = %failure.message, undecided, "filter failed; the session ends");
        self.flush(out);
        out.push(filter_error(&self.spec.id, failure, undecided));
    }

    /// Moves what is pending into `out`: first the count of rate-limited records (they were
    /// lost before or among the batch's records), then the batch.
    pub fn flush(&mut self, out: &mut Vec<AgentFrame>) {
        if self.rate_dropped > 0 {
            out.push(AgentFrame::Dropped {
                session_id: self.spec.id.clone(),
                count: std::mem::take(&mut self.rate_dropped),
                reason: DropReason::RateLimited,
            });
        }
        if !self.pending.is_empty() {
            self.pending_bytes = 0;
            out.push(AgentFrame::Logs(LogBatch {
                session_id: self.spec.id.clone(),
                records: std::mem::take(&mut self.pending),
            }));
        }
    }
}

/// The frame that tells the host a session's filter failed and the agent stopped it.
/// The frame telling the host a session's filters failed. Its texts are cut to the host's
/// bounds (a trap message carries a backtrace of names the plugin chose): a frame over them
/// would get the whole link closed, and the session's end never reported.
pub fn filter_error(session_id: &str, failure: FilterFailure, dropped: u64) -> AgentFrame {
    AgentFrame::FilterError {
        session_id: session_id.to_owned(),
        plugin: clip(&failure.plugin, MAX_NAME_BYTES),
        message: clip(&failure.message, MAX_TEXT_BYTES),
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::filter::tests::{builder, record};
    use crate::filter::{ChainOutput, Kept};
    use logfleet_protocol::agent::RateLimits;
    use logfleet_protocol::{Filters, Level};

    fn spec(filters: Filters, lines_per_second: u32) -> SessionSpec {
        SessionSpec {
            id: "s1".into(),
            filters,
            limits: RateLimits {
                lines_per_second,
                bytes_per_second: 0,
            },
            remaining_ms: 1000,
            backfill: None,
        }
    }

    /// A session over the real runtime, as the loader would build it.
    fn start(filters: Filters, lines_per_second: u32) -> Session {
        let chain = builder().build(&filters).expect("the chain builds");
        let now = Instant::now();
        Session::start(
            spec(filters, lines_per_second),
            chain,
            now + Duration::from_secs(1),
            now,
        )
    }

    fn records(n: u64, level: Level) -> Vec<Record> {
        (1..=n).map(|i| record(i, level, "app", "msg")).collect()
    }

    /// A chain that keeps (and rewrites) everything until its call number `fail_at`, where a
    /// plugin fails holding every record of the call, as a hostile plugin would.
    struct FailsAt {
        calls: usize,
        fail_at: usize,
    }

    impl FilterChain for FailsAt {
        fn apply(&mut self, records: &[Record]) -> ChainOutput {
            self.calls += 1;
            if self.calls < self.fail_at {
                return ChainOutput {
                    kept: (0..records.len() as u32)
                        .map(|index| Kept {
                            index,
                            message: Some(format!("rewritten {index}")),
                        })
                        .collect(),
                    ..ChainOutput::default()
                };
            }
            ChainOutput {
                kept: Vec::new(),
                failure: (self.calls == self.fail_at).then(|| FilterFailure {
                    plugin: "hostile".into(),
                    message: "trapped".into(),
                }),
                undecided: records.len() as u64,
            }
        }
    }

    /// A backfill counts against the rate limit: what does not fit one second's burst is
    /// its oldest part, reported as `rate_limited` before the newest records, which go out
    /// oldest first; live records then face the limiter it drained.
    #[test]
    fn an_oversized_backfill_keeps_its_newest_records() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = start(Filters::default(), 2);
        let sent = s.backfill(records(5, Level::Info), Vec::new(), now, &mut out);
        assert_eq!(sent, 2);
        let AgentFrame::Dropped {
            count: 3,
            reason: DropReason::RateLimited,
            ..
        } = &out[0]
        else {
            panic!("drops first: {out:?}");
        };
        let AgentFrame::Logs(batch) = &out[1] else {
            panic!("then the batch: {out:?}");
        };
        let seqs: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [4, 5]);
        out.clear();
        s.offer(&records(1, Level::Info), now, &mut out).unwrap();
        s.flush(&mut out);
        assert!(
            matches!(&out[..], [AgentFrame::Dropped { count: 1, .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn batches_fill_and_flush() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = start(Filters::default(), 0);
        s.offer(
            &records(MAX_BATCH_RECORDS as u64 + 10, Level::Info),
            now,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1, "a full batch goes out at once");
        s.flush(&mut out);
        let sizes: Vec<usize> = out
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(b) => b.records.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [MAX_BATCH_RECORDS, 10]);
        s.flush(&mut out);
        assert_eq!(out.len(), 2, "nothing pending, nothing sent");
    }

    #[test]
    fn rate_limit_drops_are_reported_before_the_batch() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = start(Filters::default(), 5);
        s.offer(&records(8, Level::Info), now, &mut out).unwrap();
        s.flush(&mut out);
        assert!(matches!(
            &out[0],
            AgentFrame::Dropped {
                count: 3,
                reason: DropReason::RateLimited,
                ..
            }
        ));
        assert!(matches!(&out[1], AgentFrame::Logs(b) if b.records.len() == 5));
    }

    #[test]
    fn filters_apply_through_the_runtime() {
        let now = Instant::now();
        let mut out = Vec::new();
        let filters = Filters {
            levels: vec![Level::Error],
            ..Filters::default()
        };
        let mut s = start(filters, 0);
        let mut batch = records(3, Level::Info);
        batch.push(record(4, Level::Error, "app", "boom"));
        s.offer(&batch, now, &mut out).unwrap();
        s.offer(&batch, now, &mut out).unwrap();
        s.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], AgentFrame::Logs(b) if b.records.iter().all(|r| r.seq == 4) && b.records.len() == 2)
        );
        let ends = s.ends;
        assert!(s.expired(ends) && !s.expired(ends - Duration::from_millis(1)));
    }

    /// A filter failure ends the session: what every filter decided (the pending batch, after
    /// its rate-limit drops) goes out, then one `FilterError` counting the records the filter
    /// held; none of those is ever sent.
    #[test]
    fn a_filter_failure_ends_the_session_after_what_was_decided() {
        let now = Instant::now();
        let mut out = Vec::new();
        let chain = Box::new(FailsAt {
            calls: 0,
            fail_at: 2,
        });
        let mut s = Session::start(spec(Filters::default(), 3), chain, now, now);
        s.offer(&records(4, Level::Info), now, &mut out).unwrap();
        assert!(out.is_empty(), "nothing flushed yet");
        assert_eq!(
            s.offer(&records(5, Level::Info), now, &mut out),
            Err(Failed)
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(
            &out[0],
            AgentFrame::Dropped {
                count: 1,
                reason: DropReason::RateLimited,
                ..
            }
        ));
        let AgentFrame::Logs(batch) = &out[1] else {
            panic!("expected logs, got {out:?}");
        };
        let messages: Vec<&str> = batch.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["rewritten 0", "rewritten 1", "rewritten 2"]);
        assert_eq!(
            out[2],
            AgentFrame::FilterError {
                session_id: "s1".into(),
                plugin: "hostile".into(),
                message: "trapped".into(),
                dropped: 5,
            }
        );
    }

    /// After a backfill, a file truncated in place (copytruncate rotation) starts over at
    /// offset 0: its new lines are live lines the backfill never saw, so each one is sent,
    /// none skipped for lying below the old boundary.
    #[test]
    fn lines_after_a_copytruncate_are_not_taken_for_backfilled_ones() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = start(Filters::default(), 0);
        let id = (1, 42);
        // The pipeline had handled the file up to 900 when the backfill read it up to 1,000.
        let boundary = LinePos {
            id,
            start: 900,
            end: 1_000,
        };
        s.backfill(records(3, Level::Info), vec![boundary], now, &mut out);
        out.clear();
        // The file was truncated and written again: two new lines at its start.
        let positions = [
            LinePos {
                id,
                start: 0,
                end: 10,
            },
            LinePos {
                id,
                start: 10,
                end: 20,
            },
        ];
        s.offer_at(&records(2, Level::Info), &positions, now, &mut out)
            .unwrap();
        s.flush(&mut out);
        let sent: usize = out
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(batch) => batch.records.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent, 2, "the new lines after the truncation: {out:?}");
    }
}
