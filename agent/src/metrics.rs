//! Always-on metrics: per-source line counts by level and bytes, plus the agent's health,
//! reported to the host every `metrics_interval` as one small `AgentFrame::Metrics`.
//!
//! Reports carry deltas for the interval. The first report lists every configured source (even
//! idle ones) so the host's view starts complete; later reports list only sources that had
//! lines, which keeps an idle agent's report to a few dozen bytes (postcard varints) — well
//! inside the ≤ 5 KB/hour budget at the 60 s default.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use logfleet_protocol::Level;
use logfleet_protocol::agent::{Health, Metrics, SourceCounts};

/// Page size used to turn `/proc/self/statm` pages into bytes; 4 KiB on every platform the
/// agent targets.
const PAGE_SIZE: u64 = 4096;

/// Counts of one source over the current interval.
#[derive(Debug, Clone, Default)]
struct Tally {
    levels: [u64; 6],
    bytes: u64,
}

/// Accumulates counts between reports; owned by the pipeline.
#[derive(Debug)]
pub struct MetricsCollector {
    /// Sources in configuration order, then any others seen.
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    tallies: Vec<Tally>,
    started: Instant,
    last_report: Instant,
    reported_once: bool,
    /// `lines_truncated` total at the last report, to report deltas.
    last_truncated: u64,
}

/// The parts of [`Health`] the collector does not own.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthInputs {
    pub files_watched: u32,
    pub active_sessions: u32,
    /// Total since start; the report carries the delta.
    pub lines_truncated_total: u64,
    pub buffered_bytes: u64,
}

impl MetricsCollector {
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a str>, now: Instant) -> MetricsCollector {
        let mut collector = MetricsCollector {
            names: Vec::new(),
            index: HashMap::new(),
            tallies: Vec::new(),
            started: now,
            last_report: now,
            reported_once: false,
            last_truncated: 0,
        };
        for name in sources {
            collector.slot(&Arc::from(name));
        }
        collector
    }

    fn slot(&mut self, source: &Arc<str>) -> usize {
        if let Some(&i) = self.index.get(source) {
            return i;
        }
        let i = self.names.len();
        self.names.push(source.clone());
        self.index.insert(source.clone(), i);
        self.tallies.push(Tally::default());
        i
    }

    /// Counts one line.
    pub fn record(&mut self, source: &Arc<str>, level: Level, bytes: usize) {
        let i = self.slot(source);
        let tally = &mut self.tallies[i];
        tally.levels[level.index()] += 1;
        tally.bytes += bytes as u64;
    }

    /// Builds the report for the interval ending now and starts the next one.
    pub fn report(&mut self, now: Instant, timestamp_ms: i64, health: HealthInputs) -> Metrics {
        let interval = now.saturating_duration_since(self.last_report);
        self.last_report = now;
        let all = !self.reported_once;
        self.reported_once = true;
        let sources = self
            .names
            .iter()
            .zip(self.tallies.iter_mut())
            .filter(|(_, t)| all || t.bytes > 0 || t.levels.iter().any(|&n| n > 0))
            .map(|(name, t)| {
                let t = std::mem::take(t);
                SourceCounts {
                    name: name.to_string(),
                    levels: t.levels,
                    bytes: t.bytes,
                }
            })
            .collect();
        let truncated = health
            .lines_truncated_total
            .saturating_sub(self.last_truncated);
        self.last_truncated = health.lines_truncated_total;
        Metrics {
            timestamp_ms,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            sources,
            health: Health {
                uptime_s: now.saturating_duration_since(self.started).as_secs(),
                rss_bytes: rss_bytes(),
                files_watched: health.files_watched,
                active_sessions: health.active_sessions,
                lines_truncated: truncated,
                buffered_bytes: health.buffered_bytes,
            },
        }
    }
}

/// Resident set size from `/proc/self/statm` (0 where it is unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE_SIZE)
}

/// Folds an older report into the next one, as if they were one longer interval: counts add
/// up, the health snapshot is the newer one (its per-interval `lines_truncated` adds up).
pub fn merge_metrics(older: &Metrics, newer: &mut Metrics) {
    newer.interval_ms = newer.interval_ms.saturating_add(older.interval_ms);
    newer.health.lines_truncated += older.health.lines_truncated;
    for old in &older.sources {
        match newer.sources.iter_mut().find(|s| s.name == old.name) {
            Some(s) => {
                for (n, o) in s.levels.iter_mut().zip(old.levels) {
                    *n += o;
                }
                s.bytes += old.bytes;
            }
            None => newer.sources.push(old.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logfleet_protocol::agent::{AgentFrame, encode};
    use std::time::Duration;

    #[test]
    fn reports_deltas_and_only_active_sources_after_the_first() {
        let t0 = Instant::now();
        let mut m = MetricsCollector::new(["nginx", "api"], t0);
        let nginx: Arc<str> = "nginx".into();
        m.record(&nginx, Level::Error, 100);
        m.record(&nginx, Level::Info, 50);
        let health = HealthInputs {
            files_watched: 2,
            active_sessions: 1,
            lines_truncated_total: 3,
            buffered_bytes: 7,
        };
        let first = m.report(t0 + Duration::from_secs(60), 1, health);
        assert_eq!(first.interval_ms, 60_000);
        assert_eq!(first.sources.len(), 2, "first report lists all sources");
        assert_eq!(first.sources[0].levels, [0, 0, 1, 0, 1, 0]);
        assert_eq!(first.sources[0].bytes, 150);
        assert_eq!(first.health.lines_truncated, 3);
        assert_eq!(first.health.uptime_s, 60);
        assert!(first.health.rss_bytes > 0);

        let second = m.report(t0 + Duration::from_secs(120), 2, health);
        assert!(second.sources.is_empty(), "idle sources are left out");
        assert_eq!(second.health.lines_truncated, 0, "delta, not total");
        m.record(&"api".into(), Level::Warn, 10);
        let third = m.report(t0 + Duration::from_secs(180), 3, health);
        assert_eq!(third.sources.len(), 1);
        assert_eq!(third.sources[0].name, "api");
    }

    #[test]
    fn an_hour_of_reports_fits_the_budget() {
        let t0 = Instant::now();
        let mut m = MetricsCollector::new(["nginx", "api", "db"], t0);
        let mut total = 0;
        for i in 1..=60u64 {
            for name in ["nginx", "api", "db"] {
                for _ in 0..1000 {
                    m.record(&name.into(), Level::Info, 120);
                }
            }
            let report = m.report(
                t0 + Duration::from_secs(60 * i),
                1_705_312_800_000 + 60_000 * i as i64,
                HealthInputs::default(),
            );
            total += encode(&AgentFrame::Metrics(report)).len();
        }
        // Frame payloads; WebSocket framing adds 6 bytes per frame.
        assert!(total + 60 * 6 < 5 * 1024, "{total} bytes/hour");
    }

    #[test]
    fn merge_adds_counts() {
        let mk = |interval_ms, name: &str, info| Metrics {
            timestamp_ms: 0,
            interval_ms,
            sources: vec![SourceCounts {
                name: name.into(),
                levels: [0, 0, info, 0, 0, 0],
                bytes: info,
            }],
            health: Health {
                lines_truncated: 1,
                ..Health::default()
            },
        };
        let older = mk(1000, "a", 2);
        let mut newer = mk(500, "a", 3);
        newer.sources.push(mk(0, "b", 1).sources[0].clone());
        merge_metrics(&older, &mut newer);
        assert_eq!(newer.interval_ms, 1500);
        assert_eq!(newer.sources[0].levels[2], 5);
        assert_eq!(newer.health.lines_truncated, 2);
        merge_metrics(&mk(1, "c", 4), &mut newer);
        assert_eq!(newer.sources.len(), 3);
    }
}
