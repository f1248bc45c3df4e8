//! One streaming session on the agent: its filter chain, rate limiter and pending batch.
//!
//! A session exists once its chain is built (see [`crate::loader`]); until then the pipeline
//! holds it as pending.
//!
//! A session turns the records of each tail batch into frames for the outbox: matching records
//! are batched into `Logs` (flushed every `batch_interval`, or earlier when full), rate-limit
//! drops become a `Dropped` frame placed before the batch they interrupted, and filter failures
//! become one `FilterError` per plugin.

use std::collections::HashSet;
use std::time::Instant;

use logfleet_protocol::agent::{AgentFrame, LogBatch, Record, SessionSpec};
use logfleet_protocol::client::DropReason;
use tracing::warn;

use crate::filter::{Built, FilterChain, FilterFailure};
use crate::ratelimit::RateLimiter;

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
    chain: Box<dyn FilterChain>,
    limiter: RateLimiter,
    pending: Vec<Record>,
    pending_bytes: usize,
    /// Records dropped by the rate limit since the last flush.
    rate_dropped: u64,
    /// Filters already reported as failed; each is reported once.
    reported: HashSet<String>,
}

impl Session {
    /// Starts a session with its ready chain. Filters left out of the chain (`built.failures`)
    /// are reported into `out`, once each.
    pub fn start(
        spec: SessionSpec,
        built: Built,
        now: Instant,
        out: &mut Vec<AgentFrame>,
    ) -> Session {
        let mut reported = HashSet::new();
        for failure in built.failures {
            if reported.insert(failure.plugin.clone()) {
                out.push(filter_error(&spec.id, failure));
            }
        }
        Session {
            limiter: RateLimiter::new(spec.limits, now),
            spec,
            chain: built.chain,
            pending: Vec::new(),
            pending_bytes: 0,
            rate_dropped: 0,
            reported,
        }
    }

    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    /// Whether the session has reached its end time.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.spec.expires_at_ms
    }

    /// Runs the chain and rate limit over one tail batch's records; full batches are flushed
    /// into `out` as they fill.
    pub fn offer(&mut self, records: &[Record], now: Instant, out: &mut Vec<AgentFrame>) {
        let result = self.chain.apply(records);
        for failure in result.failures {
            if self.reported.insert(failure.plugin.clone()) {
                warn!(session = %self.spec.id, filter = %failure.plugin, error = %failure.message, "filter failed; disabled for this session");
                out.push(filter_error(&self.spec.id, failure));
            }
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
            let record = Record {
                message,
                ..source.clone()
            };
            self.pending_bytes += record.message.len()
                + record.source.len()
                + record.file.len()
                + RECORD_OVERHEAD_BYTES;
            self.pending.push(record);
            if self.pending.len() >= MAX_BATCH_RECORDS || self.pending_bytes >= MAX_BATCH_BYTES {
                self.flush(out);
            }
        }
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

fn filter_error(session_id: &str, failure: FilterFailure) -> AgentFrame {
    AgentFrame::FilterError {
        session_id: session_id.to_owned(),
        plugin: failure.plugin,
        message: failure.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            expires_at_ms: 1000,
        }
    }

    /// A session over the real runtime, as the loader would build it.
    fn start(filters: Filters, lines_per_second: u32, out: &mut Vec<AgentFrame>) -> Session {
        let built = builder().build(&filters);
        Session::start(spec(filters, lines_per_second), built, Instant::now(), out)
    }

    fn records(n: u64, level: Level) -> Vec<Record> {
        (1..=n).map(|i| record(i, level, "app", "msg")).collect()
    }

    /// A chain whose plugin fails on every call (a trap each time, as a hostile plugin would)
    /// and rewrites what it keeps.
    struct Failing;

    impl FilterChain for Failing {
        fn apply(&mut self, records: &[Record]) -> ChainOutput {
            ChainOutput {
                kept: (0..records.len() as u32)
                    .map(|index| Kept {
                        index,
                        message: Some(format!("rewritten {index}")),
                    })
                    .collect(),
                failures: vec![FilterFailure {
                    plugin: "hostile".into(),
                    message: "trapped".into(),
                }],
            }
        }
    }

    #[test]
    fn batches_fill_and_flush() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = start(Filters::default(), 0, &mut out);
        s.offer(
            &records(MAX_BATCH_RECORDS as u64 + 10, Level::Info),
            now,
            &mut out,
        );
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
        let mut s = start(Filters::default(), 5, &mut out);
        s.offer(&records(8, Level::Info), now, &mut out);
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
        let mut s = start(filters, 0, &mut out);
        let mut batch = records(3, Level::Info);
        batch.push(record(4, Level::Error, "app", "boom"));
        s.offer(&batch, now, &mut out);
        s.offer(&batch, now, &mut out);
        s.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], AgentFrame::Logs(b) if b.records.iter().all(|r| r.seq == 4) && b.records.len() == 2)
        );
        assert!(s.expired(1000) && !s.expired(999));
    }

    #[test]
    fn startup_and_runtime_failures_are_reported_once_per_plugin() {
        let now = Instant::now();
        let mut out = Vec::new();
        let built = Built {
            chain: Box::new(Failing),
            failures: vec![
                FilterFailure {
                    plugin: "absent".into(),
                    message: "plugin not delivered".into(),
                },
                FilterFailure {
                    plugin: "absent".into(),
                    message: "again".into(),
                },
            ],
        };
        let mut s = Session::start(spec(Filters::default(), 0), built, now, &mut out);
        s.offer(&records(2, Level::Info), now, &mut out);
        s.offer(&records(1, Level::Info), now, &mut out);
        s.flush(&mut out);
        let errors: Vec<(&str, &str, &str)> = out
            .iter()
            .filter_map(|f| match f {
                AgentFrame::FilterError {
                    session_id,
                    plugin,
                    message,
                } => Some((session_id.as_str(), plugin.as_str(), message.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            [
                ("s1", "absent", "plugin not delivered"),
                ("s1", "hostile", "trapped")
            ]
        );
        // The session carries on, with the rewritten messages.
        let AgentFrame::Logs(batch) = out.last().unwrap() else {
            panic!("expected logs, got {out:?}");
        };
        let messages: Vec<&str> = batch.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["rewritten 0", "rewritten 1", "rewritten 0"]);
    }
}
