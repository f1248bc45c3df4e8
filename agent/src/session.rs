//! One streaming session on the agent: its filter chain, rate limiter and pending batch.
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

use crate::filter::{ChainBuilder, FilterChain, FilterFailure, RejectAll};
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
    /// Starts a session; failures to build its chain are reported into `out`. A session whose
    /// filters cannot be built keeps nothing (and says why) rather than streaming everything.
    pub fn start(
        spec: SessionSpec,
        builder: &dyn ChainBuilder,
        now: Instant,
        out: &mut Vec<AgentFrame>,
    ) -> Session {
        let mut reported = HashSet::new();
        let chain = match builder.build(&spec.filters) {
            Ok(chain) => chain,
            Err(failure) => {
                warn!(session = %spec.id, filter = %failure.plugin, error = %failure.message, "cannot build session filters");
                reported.insert(failure.plugin.clone());
                out.push(filter_error(&spec.id, failure));
                Box::new(RejectAll)
            }
        };
        Session {
            limiter: RateLimiter::new(spec.limits, now),
            spec,
            chain,
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
    use crate::filter::NativeChainBuilder;
    use crate::filter::tests::record;
    use logfleet_protocol::agent::RateLimits;
    use logfleet_protocol::{Filters, Level, PluginRef};

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

    fn records(n: u64, level: Level) -> Vec<Record> {
        (1..=n).map(|i| record(i, level, "app", "msg")).collect()
    }

    #[test]
    fn batches_fill_and_flush() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = Session::start(
            spec(Filters::default(), 0),
            &NativeChainBuilder,
            now,
            &mut out,
        );
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
        let mut s = Session::start(
            spec(Filters::default(), 5),
            &NativeChainBuilder,
            now,
            &mut out,
        );
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
    fn filters_apply_and_plugin_failures_are_reported_once() {
        let now = Instant::now();
        let mut out = Vec::new();
        let filters = Filters {
            levels: vec![Level::Error],
            plugins: vec![PluginRef {
                name: "redact".into(),
                config: "{}".into(),
                digest: String::new(),
            }],
            ..Filters::default()
        };
        let mut s = Session::start(spec(filters, 0), &NativeChainBuilder, now, &mut out);
        let mut batch = records(3, Level::Info);
        batch.push(record(4, Level::Error, "app", "boom"));
        s.offer(&batch, now, &mut out);
        s.offer(&batch, now, &mut out);
        s.flush(&mut out);
        assert!(matches!(&out[0], AgentFrame::FilterError { plugin, .. } if plugin == "redact"));
        assert!(
            matches!(&out[1], AgentFrame::Logs(b) if b.records.iter().all(|r| r.seq == 4) && b.records.len() == 2)
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn unbuildable_filters_keep_nothing_and_say_why() {
        let now = Instant::now();
        let mut out = Vec::new();
        let filters = Filters {
            pattern: Some("(".into()),
            ..Filters::default()
        };
        let mut s = Session::start(spec(filters, 0), &NativeChainBuilder, now, &mut out);
        s.offer(&records(3, Level::Info), now, &mut out);
        s.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], AgentFrame::FilterError { plugin, .. } if plugin == "pattern"));
        assert!(s.expired(1000) && !s.expired(999));
    }
}
