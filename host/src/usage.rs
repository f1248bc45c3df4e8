//! Bandwidth an operator can keep an eye on: what the host received from agents, per session
//! (`usage` on sessions) and per agent and org over a window (`GET /api/v1/usage`), and the
//! org budget whose excess sessions' clients are warned of.
//!
//! Counted is what arrived on the agent links, in wire bytes of whole frames: `Metrics`
//! frames as metrics bytes, `Logs` frames as streaming bytes. Per agent and org the host keeps
//! one bucket per minute for the last hour and one per hour for the last day
//! ([`MAX_WINDOW`]): at most 84 small buckets per agent, whatever the traffic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logfleet_protocol::client::DropReason;
use serde::Serialize;
use uuid::Uuid;

use crate::identity::AgentKey;

/// The longest window `GET /api/v1/usage` answers for.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Windows up to this long are counted by the minute; longer ones by the hour.
pub const MINUTE_WINDOW: Duration = Duration::from_secs(3600);
/// How often a session's clients are warned at most while their org is over its budget.
pub const WARN_EVERY: Duration = Duration::from_secs(600);
/// The span a session's current rates are measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Agents whose usage one org keeps (the registry bounds agents per org far lower).
const MAX_AGENTS_PER_ORG: usize = 100_000;

/// Bytes of both kinds in one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    pub metrics_bytes: u64,
    pub streaming_bytes: u64,
}

impl Bytes {
    fn add(&mut self, other: Bytes) {
        self.metrics_bytes = self.metrics_bytes.saturating_add(other.metrics_bytes);
        self.streaming_bytes = self.streaming_bytes.saturating_add(other.streaming_bytes);
    }
}

/// Buckets of one agent (or one org's total): by minute for the last hour, by hour for the day.
#[derive(Debug, Default)]
struct History {
    /// (minute since the epoch of the host's monotonic start, bytes), oldest first.
    minutes: VecDeque<(u64, Bytes)>,
    hours: VecDeque<(u64, Bytes)>,
}

impl History {
    fn add(&mut self, minute: u64, bytes: Bytes) {
        bump(&mut self.minutes, minute, 60, bytes);
        bump(&mut self.hours, minute / 60, 24, bytes);
    }

    /// Bytes of the last `window` (whole minutes up to an hour, whole hours beyond).
    fn sum(&self, minute: u64, window: Duration) -> Bytes {
        let mut total = Bytes::default();
        let (buckets, now, span) = if window <= MINUTE_WINDOW {
            (&self.minutes, minute, window.as_secs().div_ceil(60))
        } else {
            (&self.hours, minute / 60, window.as_secs().div_ceil(3600))
        };
        for (at, bytes) in buckets {
            if now.saturating_sub(*at) < span {
                total.add(*bytes);
            }
        }
        total
    }
}

/// Adds `bytes` to the bucket `at`, keeping at most `keep` buckets.
fn bump(buckets: &mut VecDeque<(u64, Bytes)>, at: u64, keep: u64, bytes: Bytes) {
    match buckets.back_mut() {
        Some((last, b)) if *last == at => b.add(bytes),
        _ => buckets.push_back((at, bytes)),
    }
    while buckets
        .front()
        .is_some_and(|(first, _)| at.saturating_sub(*first) >= keep)
    {
        buckets.pop_front();
    }
}

/// Per agent and per org history of what agents sent; a cheap handle.
#[derive(Clone)]
pub struct Usage {
    inner: Arc<Mutex<UsageState>>,
    start: Instant,
}

#[derive(Default)]
struct UsageState {
    orgs: HashMap<String, OrgUsage>,
}

#[derive(Default)]
struct OrgUsage {
    total: History,
    agents: HashMap<Uuid, History>,
}

/// `GET /api/v1/usage`'s numbers for one org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgReport {
    pub window_seconds: u64,
    #[serde(flatten)]
    pub total: Bytes,
    pub agents: Vec<AgentReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentReport {
    pub agent_id: Uuid,
    #[serde(flatten)]
    pub bytes: Bytes,
}

impl Default for Usage {
    fn default() -> Self {
        Usage::new()
    }
}

impl Usage {
    pub fn new() -> Usage {
        Usage {
            inner: Arc::default(),
            start: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, UsageState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / 60
    }

    /// Counts a frame of `bytes` from `agent`. Returns the org's streaming bytes over the
    /// last hour, for the budget check.
    pub fn record(&self, agent: &AgentKey, bytes: Bytes, now: Instant) -> u64 {
        let minute = self.minute(now);
        let mut st = self.lock();
        let org = st.orgs.entry(agent.org.clone()).or_default();
        org.total.add(minute, bytes);
        if org.agents.len() < MAX_AGENTS_PER_ORG || org.agents.contains_key(&agent.id) {
            org.agents.entry(agent.id).or_default().add(minute, bytes);
        }
        org.total.sum(minute, MINUTE_WINDOW).streaming_bytes
    }

    /// What `org`'s agents sent over the last `window` (at most [`MAX_WINDOW`]).
    pub fn report(&self, org: &str, window: Duration, now: Instant) -> OrgReport {
        let window = window.min(MAX_WINDOW);
        let minute = self.minute(now);
        let st = self.lock();
        let (total, mut agents) = match st.orgs.get(org) {
            Some(o) => (
                o.total.sum(minute, window),
                o.agents
                    .iter()
                    .map(|(id, h)| AgentReport {
                        agent_id: *id,
                        bytes: h.sum(minute, window),
                    })
                    .filter(|a| a.bytes != Bytes::default())
                    .collect::<Vec<_>>(),
            ),
            None => (Bytes::default(), Vec::new()),
        };
        agents.sort_by_key(|a| a.agent_id);
        OrgReport {
            window_seconds: window.as_secs(),
            total,
            agents,
        }
    }
}

/// One session's `usage`: what its agent shipped for it, what was dropped, and current rates.
#[derive(Debug)]
pub struct SessionUsage {
    state: Mutex<SessionCounts>,
    start: Instant,
}

impl Default for SessionUsage {
    fn default() -> Self {
        SessionUsage {
            state: Mutex::default(),
            start: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
struct SessionCounts {
    lines: u64,
    bytes: u64,
    dropped: BTreeMap<DropReason, u64>,
    /// (second, lines, bytes) of the last [`RATE_WINDOW`], oldest first.
    recent: VecDeque<(u64, u64, u64)>,
    /// When the session's clients were last warned of the org's budget.
    warned_at: Option<Instant>,
}

/// A session's `usage` as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionUsageView {
    pub lines: u64,
    pub bytes: u64,
    pub dropped: BTreeMap<DropReason, u64>,
    pub lines_per_second: f64,
    pub bytes_per_second: f64,
}

impl SessionUsage {
    fn lock(&self) -> MutexGuard<'_, SessionCounts> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a batch of `lines` that arrived in `bytes` wire bytes.
    pub fn shipped(&self, lines: u64, bytes: u64, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut c = self.lock();
        c.lines = c.lines.saturating_add(lines);
        c.bytes = c.bytes.saturating_add(bytes);
        match c.recent.back_mut() {
            Some((at, l, b)) if *at == second => {
                *l = l.saturating_add(lines);
                *b = b.saturating_add(bytes);
            }
            _ => c.recent.push_back((second, lines, bytes)),
        }
        while c
            .recent
            .front()
            .is_some_and(|(at, _, _)| second.saturating_sub(*at) >= RATE_WINDOW.as_secs())
        {
            c.recent.pop_front();
        }
    }

    pub fn dropped(&self, reason: DropReason, count: u64) {
        // `count` is the agent's word: a hostile one must not overflow it.
        let mut c = self.lock();
        let n = c.dropped.entry(reason).or_default();
        *n = n.saturating_add(count);
    }

    /// Whether the session's clients should be warned now: at most once per `every`.
    pub fn should_warn(&self, now: Instant, every: Duration) -> bool {
        let mut c = self.lock();
        if c.warned_at.is_some_and(|at| now.duration_since(at) < every) {
            return false;
        }
        c.warned_at = Some(now);
        true
    }

    pub fn view(&self, now: Instant) -> SessionUsageView {
        let second = now.saturating_duration_since(self.start).as_secs();
        let c = self.lock();
        let span = RATE_WINDOW.as_secs();
        let (lines, bytes) = c
            .recent
            .iter()
            .filter(|(at, _, _)| second.saturating_sub(*at) < span)
            .fold((0, 0), |(l, b), (_, dl, db)| (l + dl, b + db));
        SessionUsageView {
            lines: c.lines,
            bytes: c.bytes,
            dropped: c.dropped.clone(),
            lines_per_second: lines as f64 / span as f64,
            bytes_per_second: bytes as f64 / span as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(org: &str, id: u128) -> AgentKey {
        AgentKey::new(org, Uuid::from_u128(id))
    }

    fn streaming(n: u64) -> Bytes {
        Bytes {
            metrics_bytes: 0,
            streaming_bytes: n,
        }
    }

    /// A window counts exactly what arrived within it, per agent and in total, per org.
    #[test]
    fn windows_count_what_arrived_within_them() {
        let usage = Usage::new();
        let t0 = usage.start;
        let min = |m: u64| t0 + Duration::from_secs(m * 60);
        usage.record(&key("acme", 1), streaming(100), min(0));
        usage.record(
            &key("acme", 1),
            Bytes {
                metrics_bytes: 7,
                streaming_bytes: 0,
            },
            min(30),
        );
        usage.record(&key("acme", 2), streaming(5), min(59));
        usage.record(&key("evil", 1), streaming(1_000), min(59));
        let hour = usage.report("acme", MINUTE_WINDOW, min(59));
        assert_eq!(
            hour.total,
            Bytes {
                metrics_bytes: 7,
                streaming_bytes: 105
            }
        );
        assert_eq!(hour.agents.len(), 2);
        let last_10m = usage.report("acme", Duration::from_secs(600), min(59));
        assert_eq!(last_10m.total, streaming(5));
        assert_eq!(last_10m.agents[0].agent_id, Uuid::from_u128(2));
        // Later, the first minute has left the hour but not the day.
        let later = usage.report("acme", MINUTE_WINDOW, min(75));
        assert_eq!(
            later.total,
            Bytes {
                metrics_bytes: 7,
                streaming_bytes: 5
            }
        );
        let day = usage.report("acme", MAX_WINDOW, min(75));
        assert_eq!(day.total.streaming_bytes, 105);
        assert_eq!(usage.report("nobody", MINUTE_WINDOW, min(0)).agents, vec![]);
    }

    #[test]
    fn session_rates_cover_the_last_ten_seconds() {
        let u = SessionUsage::default();
        let t0 = u.start;
        for s in 0..20 {
            u.shipped(10, 1000, t0 + Duration::from_secs(s));
        }
        u.dropped(DropReason::RateLimited, 3);
        let v = u.view(t0 + Duration::from_secs(19));
        assert_eq!((v.lines, v.bytes), (200, 20_000));
        assert_eq!(v.lines_per_second, 10.0);
        assert_eq!(v.dropped[&DropReason::RateLimited], 3);
        assert!(u.should_warn(t0, Duration::from_secs(60)));
        assert!(!u.should_warn(t0 + Duration::from_secs(59), Duration::from_secs(60)));
        assert!(u.should_warn(t0 + Duration::from_secs(60), Duration::from_secs(60)));
    }
}
