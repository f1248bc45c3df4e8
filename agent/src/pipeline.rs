//! The pipeline: the one task that owns metrics and all sessions.
//!
//! It takes tail batches (assigns `seq`, detects levels, counts metrics, builds records, runs
//! every session over them) and host commands (start, stop, the full session set), flushes
//! session batches every `batch_interval`, ends expired sessions on its own, and emits metrics
//! every `metrics_interval`. Everything it produces goes into the [`Outbox`].
//!
//! `seq` starts at the current Unix time in ms × 1000 and grows by one per line read, across
//! all sources. A restarted agent therefore continues above where it was (unless it sustained
//! more than a million lines per second), so clients can de-duplicate across restarts too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logfleet_protocol::agent::{AgentFrame, HostFrame, Record, SessionSpec};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info};

use crate::filter::ChainBuilder;
use crate::metrics::{HealthInputs, MetricsCollector};
use crate::outbox::Outbox;
use crate::parse::detect_level;
use crate::session::Session;
use crate::tail::{TailBatch, TailStats};
use crate::time::now_ms;

/// Host commands queued for the pipeline. They are rare (session start/stop); when the queue is
/// full the uplink waits, which only delays reading the next host frame.
pub const HOST_CHANNEL_CAPACITY: usize = 64;

/// Sessions, metrics and sequence numbers; drive it with [`Pipeline::run`] or call its steps.
pub struct Pipeline {
    sessions: HashMap<String, Session>,
    builder: Arc<dyn ChainBuilder>,
    metrics: MetricsCollector,
    /// The next line's seq.
    seq: u64,
    outbox: Outbox,
    tail_stats: Arc<TailStats>,
    /// Frames produced by sessions, reused between calls.
    frames: Vec<AgentFrame>,
}

/// The first seq of an agent started at `now_ms`.
pub fn initial_seq(now_ms: i64) -> u64 {
    u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000)
}

impl Pipeline {
    pub fn new<'a>(
        sources: impl IntoIterator<Item = &'a str>,
        builder: Arc<dyn ChainBuilder>,
        outbox: Outbox,
        tail_stats: Arc<TailStats>,
    ) -> Pipeline {
        Pipeline {
            sessions: HashMap::new(),
            builder,
            metrics: MetricsCollector::new(sources, Instant::now()),
            seq: initial_seq(now_ms()),
            outbox,
            tail_stats,
            frames: Vec::new(),
        }
    }

    /// Number of running sessions.
    pub fn active_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Ids of running sessions, sorted.
    pub fn session_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.sessions.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Processes one batch of tailed lines.
    pub fn handle_lines(&mut self, batch: TailBatch, now: Instant) {
        let streaming = !self.sessions.is_empty();
        let mut records = Vec::with_capacity(if streaming { batch.len() } else { 0 });
        for line in batch {
            let seq = self.seq;
            self.seq += 1;
            let level = detect_level(&line.text);
            self.metrics.record(&line.source, level, line.text.len());
            // Metrics-only mode (no session) allocates nothing per line beyond the tailer's.
            if streaming {
                records.push(Record {
                    seq,
                    timestamp_ms: line.read_at_ms,
                    level,
                    source: line.source.to_string(),
                    file: line.file.to_string(),
                    line: line.line,
                    message: line.text,
                });
            }
        }
        if records.is_empty() {
            return;
        }
        for session in self.sessions.values_mut() {
            session.offer(&records, now, &mut self.frames);
        }
        self.send_frames();
    }

    /// Applies a command from the host.
    pub fn handle_host(&mut self, frame: HostFrame, now: Instant) {
        match frame {
            HostFrame::Start(spec) => self.start(spec, now),
            HostFrame::Stop { session_id } => self.stop(&session_id, "stopped by the host"),
            HostFrame::Sessions(specs) => {
                let listed: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
                let unlisted: Vec<String> = self
                    .sessions
                    .keys()
                    .filter(|id| !listed.contains(&id.as_str()))
                    .cloned()
                    .collect();
                for id in unlisted {
                    self.stop(&id, "not in the host's session list");
                }
                for spec in specs {
                    // Keep a running session (its rate limiter and batch) if nothing changed.
                    if self
                        .sessions
                        .get(&spec.id)
                        .is_none_or(|s| *s.spec() != spec)
                    {
                        self.start(spec, now);
                    }
                }
            }
            HostFrame::Plugin { digest, .. } | HostFrame::PluginUnavailable { digest, .. } => {
                debug!(%digest, "plugin frame ignored: this agent runs native filters only");
            }
        }
    }

    fn start(&mut self, spec: SessionSpec, now: Instant) {
        if spec.expires_at_ms <= now_ms() {
            debug!(session = %spec.id, "session already expired; not starting it");
            return;
        }
        // A replaced session's pending lines were matched under the old spec: send them.
        if let Some(mut old) = self.sessions.remove(&spec.id) {
            old.flush(&mut self.frames);
        }
        info!(session = %spec.id, expires_at_ms = spec.expires_at_ms, "session started");
        let id = spec.id.clone();
        let session = Session::start(spec, self.builder.as_ref(), now, &mut self.frames);
        self.sessions.insert(id, session);
        self.send_frames();
    }

    fn stop(&mut self, id: &str, why: &str) {
        if let Some(mut session) = self.sessions.remove(id) {
            session.flush(&mut self.frames);
            self.send_frames();
            info!(session = %id, "session ended: {why}");
        }
    }

    /// Flushes every session's pending batch and ends sessions past their expiry.
    pub fn flush(&mut self, now_ms: i64) {
        for session in self.sessions.values_mut() {
            session.flush(&mut self.frames);
        }
        self.send_frames();
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.stop(&id, "expired");
        }
    }

    /// Queues a metrics report for the interval ending now.
    pub fn report_metrics(&mut self, now: Instant) {
        let health = HealthInputs {
            files_watched: self.tail_stats.files_watched(),
            active_sessions: u32::try_from(self.sessions.len()).unwrap_or(u32::MAX),
            lines_truncated_total: self.tail_stats.lines_truncated(),
            buffered_bytes: self.outbox.buffered_bytes() as u64,
        };
        let report = self.metrics.report(now, now_ms(), health);
        self.outbox.push(AgentFrame::Metrics(report));
    }

    fn send_frames(&mut self) {
        for frame in self.frames.drain(..) {
            self.outbox.push(frame);
        }
    }

    /// Runs until the tailer's channel closes (the tailer stopped), then flushes what sessions
    /// hold. Host commands keep being applied until then.
    pub async fn run(
        mut self,
        mut lines: mpsc::Receiver<TailBatch>,
        mut host: mpsc::Receiver<HostFrame>,
        batch_interval: Duration,
        metrics_interval: Duration,
    ) {
        let mut flush_tick = tokio::time::interval(batch_interval);
        flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now() + metrics_interval;
        let mut metrics_tick = tokio::time::interval_at(start, metrics_interval);
        metrics_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut host_open = true;
        loop {
            // Biased, timers first: a busy tail channel must not starve flushes; host commands
            // before lines, so a session started before lines arrived sees them.
            tokio::select! {
                biased;
                _ = flush_tick.tick() => self.flush(now_ms()),
                _ = metrics_tick.tick() => self.report_metrics(Instant::now()),
                frame = host.recv(), if host_open => match frame {
                    Some(frame) => self.handle_host(frame, Instant::now()),
                    None => host_open = false,
                },
                batch = lines.recv() => match batch {
                    Some(batch) => self.handle_lines(batch, Instant::now()),
                    None => break,
                },
            }
        }
        self.flush(now_ms());
        debug!("pipeline stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::NativeChainBuilder;
    use crate::tail::TailLine;
    use logfleet_protocol::Filters;
    use logfleet_protocol::agent::{RateLimits, decode};
    use logfleet_protocol::client::DropReason;

    fn pipeline(outbox: &Outbox) -> Pipeline {
        Pipeline::new(
            ["app", "web"],
            Arc::new(NativeChainBuilder),
            outbox.clone(),
            Arc::new(TailStats::default()),
        )
    }

    fn spec(id: &str, sources: &[&str], lines_per_second: u32) -> SessionSpec {
        SessionSpec {
            id: id.into(),
            filters: Filters {
                sources: sources.iter().map(|s| s.to_string()).collect(),
                ..Filters::default()
            },
            limits: RateLimits {
                lines_per_second,
                bytes_per_second: 0,
            },
            expires_at_ms: now_ms() + 60_000,
        }
    }

    fn lines(source: &str, texts: &[&str]) -> TailBatch {
        let source: Arc<str> = source.into();
        let file: Arc<str> = format!("/var/log/{source}.log").into();
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| TailLine {
                source: source.clone(),
                file: file.clone(),
                line: i as u64 + 1,
                text: t.to_string(),
                read_at_ms: 1,
            })
            .collect()
    }

    fn drain(outbox: &Outbox) -> Vec<AgentFrame> {
        std::iter::from_fn(|| outbox.try_pop())
            .map(|e| decode::<AgentFrame>(e.bytes()).unwrap())
            .collect()
    }

    #[test]
    fn seq_starts_from_the_clock_and_counts_every_line() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let first = p.seq;
        assert!(first >= initial_seq(1_700_000_000_000));
        p.handle_lines(lines("app", &["a", "b"]), Instant::now());
        p.handle_host(HostFrame::Start(spec("s1", &[], 0)), Instant::now());
        p.handle_lines(lines("web", &["ERROR c", "d"]), Instant::now());
        p.flush(now_ms());
        let frames = drain(&outbox);
        let AgentFrame::Logs(batch) = &frames[0] else {
            panic!("expected logs, got {frames:?}");
        };
        let seqs: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [first + 2, first + 3]);
        assert_eq!(batch.records[0].level, logfleet_protocol::Level::Error);
        assert_eq!(batch.records[0].file, "/var/log/web.log");
    }

    #[test]
    fn sessions_filter_independently() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let now = Instant::now();
        p.handle_host(HostFrame::Start(spec("a", &["app"], 0)), now);
        p.handle_host(HostFrame::Start(spec("w", &["web"], 1)), now);
        p.handle_lines(lines("app", &["1", "2"]), now);
        p.handle_lines(lines("web", &["3", "4", "5"]), now);
        p.flush(now_ms());
        let mut got: Vec<String> = drain(&outbox)
            .iter()
            .map(|f| match f {
                AgentFrame::Logs(b) => format!("{}:{}", b.session_id, b.records.len()),
                AgentFrame::Dropped {
                    session_id,
                    count,
                    reason: DropReason::RateLimited,
                } => {
                    format!("{session_id}:dropped {count}")
                }
                other => format!("{other:?}"),
            })
            .collect();
        got.sort();
        assert_eq!(got, ["a:2", "w:1", "w:dropped 2"]);
    }

    #[test]
    fn session_set_starts_and_stops_and_expiry_ends_sessions() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let now = Instant::now();
        p.handle_host(HostFrame::Start(spec("old", &[], 0)), now);
        p.handle_host(HostFrame::Start(spec("keep", &[], 0)), now);
        p.handle_host(
            HostFrame::Sessions(vec![spec("keep", &[], 0), spec("new", &[], 0)]),
            now,
        );
        assert_eq!(p.session_ids(), ["keep", "new"]);
        p.handle_host(
            HostFrame::Stop {
                session_id: "keep".into(),
            },
            now,
        );
        assert_eq!(p.session_ids(), ["new"]);
        // Ends on its own once past expires_at_ms, host or no host.
        p.flush(now_ms() + 120_000);
        assert_eq!(p.active_sessions(), 0);
        let mut expired = spec("late", &[], 0);
        expired.expires_at_ms = now_ms() - 1;
        p.handle_host(HostFrame::Start(expired), now);
        assert_eq!(p.active_sessions(), 0);
    }

    #[test]
    fn start_replaces_spec_and_flushes_old_batch() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        let now = Instant::now();
        p.handle_host(HostFrame::Start(spec("s", &["app"], 0)), now);
        p.handle_lines(lines("app", &["1"]), now);
        p.handle_host(HostFrame::Start(spec("s", &["web"], 0)), now);
        p.handle_lines(lines("app", &["2"]), now);
        p.handle_lines(lines("web", &["3"]), now);
        p.flush(now_ms());
        let texts: Vec<String> = drain(&outbox)
            .iter()
            .filter_map(|f| match f {
                AgentFrame::Logs(b) => Some(b.records[0].message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["1", "3"]);
    }

    #[test]
    fn metrics_count_lines_without_sessions() {
        let outbox = Outbox::new(1 << 20);
        let mut p = pipeline(&outbox);
        p.handle_lines(lines("app", &["ERROR x", "WARN y", "z"]), Instant::now());
        p.report_metrics(Instant::now());
        let frames = drain(&outbox);
        let AgentFrame::Metrics(m) = &frames[0] else {
            panic!("expected metrics");
        };
        assert_eq!(m.sources[0].name, "app");
        assert_eq!(m.sources[0].levels, [0, 0, 1, 1, 1, 0]);
        assert_eq!(m.sources[0].bytes, 14);
    }

    #[tokio::test]
    async fn run_flushes_on_the_timer_and_on_close() {
        let outbox = Outbox::new(1 << 20);
        let p = pipeline(&outbox);
        let (line_tx, line_rx) = mpsc::channel(4);
        let (host_tx, host_rx) = mpsc::channel(4);
        let task = tokio::spawn(p.run(
            line_rx,
            host_rx,
            Duration::from_millis(5),
            Duration::from_secs(3600),
        ));
        host_tx
            .send(HostFrame::Start(spec("s", &[], 0)))
            .await
            .unwrap();
        line_tx.send(lines("app", &["one"])).await.unwrap();
        let entry = tokio::time::timeout(Duration::from_secs(5), outbox.next())
            .await
            .unwrap();
        assert!(matches!(
            decode::<AgentFrame>(entry.bytes()).unwrap(),
            AgentFrame::Logs(_)
        ));
        line_tx.send(lines("app", &["two"])).await.unwrap();
        drop(line_tx);
        task.await.unwrap();
        assert!(
            drain(&outbox)
                .iter()
                .any(|f| matches!(f, AgentFrame::Logs(b) if b.records[0].message == "two"))
        );
    }
}
