//! The agent registry: who is connected, what they said about themselves, their recent metrics,
//! and the command channel to each connected agent.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeZone, Utc};
use logfleet_protocol::Level;
use logfleet_protocol::agent::{Health, Hello, HostFrame, Metrics};
use logfleet_protocol::rest::{
    AgentHealth, AgentInfo, AgentMetrics, MetricsReport, SourceInfo, SourceMetrics,
};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::AgentIdentity;
use crate::time::rfc3339;

/// Commands queued to one agent connection. Commands are small and rare (session start/stop,
/// plugins); if an agent lets this many pile up its link is stuck, so the registry drops the
/// link and the agent's reconnect resynchronises the full session set.
pub const AGENT_COMMAND_QUEUE: usize = 256;
/// Metrics history kept per agent.
pub const METRICS_HISTORY: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Most metrics reports kept per agent, whatever its interval.
pub const MAX_METRICS_REPORTS: usize = 720;

/// Shared handle to every agent the host has seen since it started.
#[derive(Clone, Default)]
pub struct Agents {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    agents: HashMap<Uuid, AgentEntry>,
    /// Each org's agents as (name, id), in listing order: a page of a 10,000-agent fleet is a
    /// walk from its start instead of a sort of all of it per request (the sort was a third
    /// of the host's CPU under a console polling the list), and the total is a `len`.
    by_name: HashMap<String, BTreeSet<(String, Uuid)>>,
    next_link: u64,
}

/// What the host knows of one agent.
struct AgentEntry {
    org: String,
    name: String,
    hostname: String,
    version: String,
    sources: Vec<SourceInfo>,
    connected_at: Option<DateTime<Utc>>,
    last_seen: DateTime<Utc>,
    link: Option<Link>,
    metrics: VecDeque<Sample>,
}

/// One metrics report as the registry keeps it: the agent's numbers, with source names shared
/// between reports. About 300 bytes with 4 sources, where the JSON shape (`MetricsReport`,
/// built only when asked for) takes over 1.5 KB: an hour of history for 10,000 agents is then
/// ~200 MB instead of ~1 GB.
struct Sample {
    timestamp_ms: i64,
    interval_ms: u32,
    sources: Box<[SourceSample]>,
    health: Health,
}

struct SourceSample {
    name: Arc<str>,
    /// Lines per level, indexed by `Level::index`.
    levels: [u64; 6],
    bytes: u64,
}

/// The live connection of an agent: an id (so a stale connection cannot unregister a newer
/// one) and the sender of its command queue.
struct Link {
    id: u64,
    tx: mpsc::Sender<HostFrame>,
}

/// An agent as session code needs it.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub id: Uuid,
    pub name: String,
    pub hostname: String,
    pub online: bool,
}

/// A new agent connection, as the registry handed it out.
pub struct Connected {
    pub link_id: u64,
    pub commands: mpsc::Receiver<HostFrame>,
    /// The agent had a link already; that one is now dropped.
    pub replaced: bool,
}

impl Agents {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock is a bug elsewhere; the data is still consistent
        // map entries, so keep serving rather than poisoning the whole host.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connected agent, replacing any previous connection of the same id.
    pub fn connect(&self, ident: &AgentIdentity, hello: &Hello) -> Connected {
        let (tx, commands) = mpsc::channel(AGENT_COMMAND_QUEUE);
        let now = Utc::now();
        let mut reg = self.lock();
        reg.next_link += 1;
        let link = Link {
            id: reg.next_link,
            tx,
        };
        let link_id = link.id;
        let name = ident
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| hello.name.clone());
        let reg = &mut *reg;
        let entry = reg.agents.entry(ident.id).or_insert_with(|| AgentEntry {
            org: ident.org.clone(),
            name: String::new(),
            hostname: String::new(),
            version: String::new(),
            sources: Vec::new(),
            connected_at: None,
            last_seen: now,
            link: None,
            metrics: VecDeque::new(),
        });
        // The name (or org) may change between connections; the index follows.
        if let Some(names) = reg.by_name.get_mut(&entry.org) {
            names.remove(&(std::mem::take(&mut entry.name), ident.id));
        }
        reg.by_name
            .entry(ident.org.clone())
            .or_default()
            .insert((name.clone(), ident.id));
        entry.org = ident.org.clone();
        entry.name = name;
        entry.hostname = hello.hostname.clone();
        entry.version = hello.version.clone();
        entry.sources = hello.sources.clone();
        entry.connected_at = Some(now);
        entry.last_seen = now;
        let replaced = entry.link.replace(link).is_some();
        Connected {
            link_id,
            commands,
            replaced,
        }
    }

    /// Marks the agent offline if `link_id` is still its current connection. Returns whether
    /// it was (a replaced connection closing changes nothing).
    pub fn disconnect(&self, id: Uuid, link_id: u64) -> bool {
        let mut reg = self.lock();
        match reg.agents.get_mut(&id) {
            Some(entry) if entry.link.as_ref().is_some_and(|l| l.id == link_id) => {
                entry.link = None;
                entry.connected_at = None;
                entry.last_seen = Utc::now();
                true
            }
            _ => false,
        }
    }

    pub fn touch(&self, id: Uuid) {
        if let Some(entry) = self.lock().agents.get_mut(&id) {
            entry.last_seen = Utc::now();
        }
    }

    /// Queues a command for a connected agent. Returns false if it is offline; if its queue is
    /// full the link is dropped (see [`AGENT_COMMAND_QUEUE`]).
    pub fn send(&self, id: Uuid, frame: HostFrame) -> bool {
        let mut reg = self.lock();
        let Some(entry) = reg.agents.get_mut(&id) else {
            return false;
        };
        let Some(link) = &entry.link else {
            return false;
        };
        match link.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(agent = %id, "agent command queue full; dropping its link to resync");
                entry.link = None;
                entry.connected_at = None;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Finds an agent of `org` by UUID or, failing that, by name (an online one first).
    pub fn resolve(&self, org: &str, id_or_name: &str) -> Option<AgentRef> {
        let reg = self.lock();
        let in_org = |e: &&AgentEntry| e.org == org;
        if let Ok(id) = Uuid::parse_str(id_or_name)
            && let Some(e) = reg.agents.get(&id).filter(in_org)
        {
            return Some(agent_ref(id, e));
        }
        reg.agents
            .iter()
            .filter(|(_, e)| e.org == org && e.name == id_or_name)
            .max_by_key(|(_, e)| (e.link.is_some(), e.last_seen))
            .map(|(id, e)| agent_ref(*id, e))
    }

    /// The `GET /api/v1/agents` body: the agents of `org` sorted by name (then id), `skip` of
    /// them skipped and at most `take` listed, and `total`, how many `org` has. `sessions`
    /// holds the active sessions per agent (absent: none). Rendered straight from the registry: at 10,000
    /// agents, building owned `AgentInfo`s first was 160,000 allocations and a quarter of
    /// the request's CPU.
    pub fn list_json(
        &self,
        org: &str,
        skip: usize,
        take: usize,
        sessions: &HashMap<Uuid, usize>,
    ) -> Vec<u8> {
        let reg = self.lock();
        let names = reg.by_name.get(org);
        let agents: Vec<AgentView<'_>> = names
            .into_iter()
            .flatten()
            .skip(skip)
            .take(take)
            .filter_map(|(_, id)| {
                let entry = reg.agents.get(id)?;
                let active = sessions.get(id).copied().unwrap_or(0);
                Some(AgentView::new(*id, entry, active))
            })
            .collect();
        let list = AgentListView {
            agents,
            total: names.map_or(0, BTreeSet::len),
        };
        // Plain borrowed data: serialising it into memory cannot fail.
        serde_json::to_vec(&list).unwrap_or_default()
    }

    pub fn info(&self, org: &str, id: Uuid, sessions: usize) -> Option<AgentInfo> {
        let reg = self.lock();
        reg.agents
            .get(&id)
            .filter(|e| e.org == org)
            .map(|e| agent_info(id, e, sessions))
    }

    /// Stores a metrics report, keeping [`METRICS_HISTORY`] of them.
    pub fn record_metrics(&self, id: Uuid, metrics: &Metrics) {
        let now = Utc::now();
        let mut reg = self.lock();
        let Some(entry) = reg.agents.get_mut(&id) else {
            return;
        };
        entry.last_seen = now;
        let sample = sample(metrics, entry.metrics.back());
        entry.metrics.push_back(sample);
        let oldest = (now - METRICS_HISTORY).timestamp_millis();
        while entry.metrics.len() > MAX_METRICS_REPORTS
            || entry
                .metrics
                .front()
                .is_some_and(|m| m.timestamp_ms < oldest)
        {
            entry.metrics.pop_front();
        }
    }

    pub fn metrics(&self, org: &str, id: Uuid) -> Option<AgentMetrics> {
        let reg = self.lock();
        let entry = reg.agents.get(&id).filter(|e| e.org == org)?;
        let history: Vec<MetricsReport> = entry.metrics.iter().map(metrics_report).collect();
        Some(AgentMetrics {
            agent_id: id.to_string(),
            latest: history.last().cloned(),
            history,
        })
    }

    /// Number of agents connected now.
    pub fn online(&self) -> usize {
        self.lock()
            .agents
            .values()
            .filter(|e| e.link.is_some())
            .count()
    }

    /// Drops every link, so agent connections close (host shutdown).
    pub fn disconnect_all(&self) {
        for entry in self.lock().agents.values_mut() {
            entry.link = None;
        }
    }
}

fn agent_ref(id: Uuid, e: &AgentEntry) -> AgentRef {
    AgentRef {
        id,
        name: e.name.clone(),
        hostname: e.hostname.clone(),
        online: e.link.is_some(),
    }
}

/// `AgentList` as borrowed from the registry.
#[derive(Serialize)]
struct AgentListView<'a> {
    agents: Vec<AgentView<'a>>,
    total: usize,
}

/// An agent as the API shows it (`AgentInfo`), borrowed from its entry: the one place that
/// decides what each field says, serialised as is for lists and copied into an `AgentInfo`
/// for single lookups. A test checks the two serialise alike.
#[derive(Serialize)]
struct AgentView<'a> {
    id: Uuid,
    name: &'a str,
    hostname: &'a str,
    version: &'a str,
    status: &'static str,
    sources: &'a [SourceInfo],
    connected_at: Option<String>,
    last_seen: String,
    active_sessions: usize,
}

impl<'a> AgentView<'a> {
    fn new(id: Uuid, e: &'a AgentEntry, active_sessions: usize) -> AgentView<'a> {
        AgentView {
            id,
            name: &e.name,
            hostname: &e.hostname,
            version: &e.version,
            status: if e.link.is_some() {
                "online"
            } else {
                "offline"
            },
            sources: &e.sources,
            connected_at: e.connected_at.map(rfc3339),
            last_seen: rfc3339(e.last_seen),
            active_sessions,
        }
    }

    fn to_info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.to_string(),
            name: self.name.to_owned(),
            hostname: self.hostname.to_owned(),
            version: self.version.to_owned(),
            status: self.status.to_owned(),
            sources: self.sources.to_vec(),
            connected_at: self.connected_at.clone(),
            last_seen: self.last_seen.clone(),
            active_sessions: self.active_sessions,
        }
    }
}

fn agent_info(id: Uuid, e: &AgentEntry, active_sessions: usize) -> AgentInfo {
    AgentView::new(id, e, active_sessions).to_info()
}

/// Keeps `m`, sharing source names with the agent's previous report (sources rarely change).
fn sample(m: &Metrics, previous: Option<&Sample>) -> Sample {
    let known = previous.map(|p| &p.sources[..]).unwrap_or_default();
    Sample {
        timestamp_ms: m.timestamp_ms,
        interval_ms: m.interval_ms,
        sources: m
            .sources
            .iter()
            .map(|s| SourceSample {
                name: known
                    .iter()
                    .find(|k| *k.name == *s.name)
                    .map_or_else(|| Arc::from(s.name.as_str()), |k| k.name.clone()),
                levels: s.levels,
                bytes: s.bytes,
            })
            .collect(),
        health: m.health.clone(),
    }
}

fn metrics_report(m: &Sample) -> MetricsReport {
    let timestamp = Utc
        .timestamp_millis_opt(m.timestamp_ms)
        .single()
        .unwrap_or_else(Utc::now);
    MetricsReport {
        timestamp: rfc3339(timestamp),
        interval_seconds: f64::from(m.interval_ms) / 1000.0,
        sources: m
            .sources
            .iter()
            .map(|s| SourceMetrics {
                name: s.name.to_string(),
                lines: s.levels.iter().sum(),
                bytes: s.bytes,
                levels: Level::ALL
                    .iter()
                    .filter(|l| s.levels[l.index()] > 0)
                    .map(|l| (l.as_str().to_owned(), s.levels[l.index()]))
                    .collect(),
            })
            .collect(),
        agent: AgentHealth {
            uptime_seconds: m.health.uptime_s,
            rss_bytes: m.health.rss_bytes,
            files_watched: m.health.files_watched,
            active_sessions: m.health.active_sessions,
            lines_truncated: m.health.lines_truncated,
            buffered_bytes: m.health.buffered_bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use logfleet_protocol::agent::{PROTOCOL_VERSION, SourceCounts};
    use logfleet_protocol::rest::AgentList;

    use super::*;

    fn join(agents: &Agents, org: &str, name: &str) -> (Uuid, Connected) {
        let id = Uuid::new_v4();
        let ident = AgentIdentity {
            id,
            org: org.into(),
            name: Some(name.into()),
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            name: name.into(),
            hostname: format!("{name}.local"),
            version: "1".into(),
            sources: vec![],
        };
        (id, agents.connect(&ident, &hello))
    }

    fn report(at_ms: i64, errors: u64) -> Metrics {
        Metrics {
            timestamp_ms: at_ms,
            interval_ms: 60_000,
            sources: vec![SourceCounts {
                name: "nginx".into(),
                levels: [0, 0, 0, 0, errors, 0],
                bytes: 10,
            }],
            health: Health::default(),
        }
    }

    #[test]
    fn list_pages_by_name_within_the_org() {
        let agents = Agents::default();
        let links: Vec<_> = ["c", "a", "b"]
            .iter()
            .map(|n| join(&agents, "acme", n))
            .collect();
        let _other = join(&agents, "other", "0");
        let names = |skip, take| {
            let body = agents.list_json("acme", skip, take, &HashMap::new());
            let list: AgentList = serde_json::from_slice(&body).unwrap();
            (
                list.agents.into_iter().map(|a| a.name).collect::<Vec<_>>(),
                list.total,
            )
        };
        assert_eq!(
            names(0, usize::MAX),
            (vec!["a".into(), "b".into(), "c".into()], 3)
        );
        assert_eq!(names(1, 1), (vec!["b".to_owned()], 3));
        assert_eq!(names(5, 10), (vec![], 3));

        // Renamed on reconnect: listed once, under its new name.
        let (id, _) = &links[0];
        let renamed = AgentIdentity {
            id: *id,
            org: "acme".into(),
            name: Some("d".into()),
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            name: "d".into(),
            hostname: "d.local".into(),
            version: "1".into(),
            sources: vec![],
        };
        let _again = agents.connect(&renamed, &hello);
        assert_eq!(names(0, 10), (vec!["a".into(), "b".into(), "d".into()], 3));
    }

    #[test]
    fn a_listed_agent_serialises_as_its_agent_info() {
        let agents = Agents::default();
        let (id, link) = join(&agents, "acme", "edge");
        let listed = |agents: &Agents| {
            let body = agents.list_json("acme", 0, 1, &HashMap::from([(id, 3)]));
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["agents"][0].clone()
        };
        let info = serde_json::to_value(agents.info("acme", id, 3).unwrap()).unwrap();
        assert_eq!(listed(&agents), info);
        assert_eq!(info["status"], "online");
        assert!(agents.disconnect(id, link.link_id));
        let info = serde_json::to_value(agents.info("acme", id, 3).unwrap()).unwrap();
        assert_eq!(
            (listed(&agents), &info["status"]),
            (info.clone(), &"offline".into())
        );
    }

    #[test]
    fn metrics_history_keeps_an_hour_and_shares_source_names() {
        let agents = Agents::default();
        let (id, _link) = join(&agents, "acme", "edge");
        let now = Utc::now().timestamp_millis();
        agents.record_metrics(id, &report(now - 2 * 3_600_000, 9));
        agents.record_metrics(id, &report(now - 1_000, 1));
        agents.record_metrics(id, &report(now, 2));
        let m = agents.metrics("acme", id).unwrap();
        let errors: Vec<u64> = m
            .history
            .iter()
            .map(|r| r.sources[0].levels["ERROR"])
            .collect();
        assert_eq!(errors, [1, 2], "the report older than an hour is gone");
        assert_eq!(m.latest.unwrap().sources[0].lines, 2);
        assert!(agents.metrics("other", id).is_none());
        let reg = agents.lock();
        let kept = &reg.agents[&id].metrics;
        assert!(Arc::ptr_eq(
            &kept[0].sources[0].name,
            &kept[1].sources[0].name
        ));
    }
}
