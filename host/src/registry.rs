//! The agent registry: who is connected (or enrolled), what they said about themselves, their
//! recent metrics, and the command channel to each connected agent. Agents are keyed by
//! [`AgentKey`] (org and id): the same UUID in two orgs is two agents that never meet here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeZone, Utc};
use logfleet_protocol::Level;
use logfleet_protocol::agent::{Health, Hello, HostFrame, Metrics};
use logfleet_protocol::labels::Labels;
use logfleet_protocol::rest::{
    AgentHealth, AgentInfo, AgentMetrics, MetricsReport, SourceInfo, SourceMetrics,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::delivery::Delivered;
use crate::identity::AgentKey;
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
    agents: HashMap<AgentKey, AgentEntry>,
    /// Each org's agents as (name, id), in listing order: a page of a 10,000-agent fleet is a
    /// walk from its start instead of a sort of all of it per request (the sort was a third
    /// of the host's CPU under a console polling the list), and the total is a `len`.
    by_name: HashMap<String, BTreeSet<(String, Uuid)>>,
    next_link: u64,
}

/// What the host knows of one agent.
struct AgentEntry {
    name: String,
    /// What selectors and the listing see: the agent's own labels (from its hello) with the
    /// enrollment's over them on a shared key (an admin's word beats a config file's).
    labels: BTreeMap<String, String>,
    /// Set at enrollment; empty for agents that connected with a minted token.
    enrolled: BTreeMap<String, String>,
    hostname: String,
    version: String,
    sources: Vec<SourceInfo>,
    /// `sources`' names, shared by every metrics sample.
    source_names: Vec<Arc<str>>,
    connected_at: Option<DateTime<Utc>>,
    last_seen: DateTime<Utc>,
    link: Option<Link>,
    metrics: VecDeque<Sample>,
    /// How far its frames are handled, shared by its links (old and new overlap).
    delivered: Arc<Delivered>,
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
/// one), the sender of its command queue, and how to tell its task why it must close.
struct Link {
    id: u64,
    tx: mpsc::Sender<HostFrame>,
    end: oneshot::Sender<LinkEnd>,
}

/// Why the registry ended a live link, for its close frame. A link whose [`Connected::end`]
/// closes without one of these was dropped to resynchronise (a stuck command queue) or at
/// shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// A newer link of the same agent (same org and id) took over: two copies of one agent
    /// are running, or the old link is half-open.
    Superseded,
    /// The agent's enrollment was revoked.
    Revoked,
}

/// An agent as session code needs it.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub key: AgentKey,
    pub name: String,
    pub hostname: String,
    pub online: bool,
    /// The number of its live link (0 when offline), so a session started now ignores news
    /// of older links (see [`crate::session::Sessions::agent_link_changed`]).
    pub link: u64,
}

/// A new agent connection, as the registry handed it out.
pub struct Connected {
    pub link_id: u64,
    pub commands: mpsc::Receiver<HostFrame>,
    /// Resolves when the registry ends this link (see [`LinkEnd`]).
    pub end: oneshot::Receiver<LinkEnd>,
    /// The agent had a link already; that one is now told [`LinkEnd::Superseded`].
    pub replaced: bool,
    /// How far the agent's frames are handled, resumed for this link's outbox.
    pub delivered: Arc<Delivered>,
}

impl Agents {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock is a bug elsewhere; the data is still consistent
        // map entries, so keep serving rather than poisoning the whole host.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connected agent, superseding any previous connection of the same agent.
    /// `token_name` (the token's `name` claim) wins over the name the agent says in `hello`.
    /// `labels` are the agent's own (from its hello), checked by the caller.
    pub fn connect(
        &self,
        key: &AgentKey,
        token_name: Option<&str>,
        hello: &Hello,
        labels: &Labels,
    ) -> Connected {
        let (tx, commands) = mpsc::channel(AGENT_COMMAND_QUEUE);
        let (end_tx, end) = oneshot::channel();
        let now = Utc::now();
        let mut reg = self.lock();
        reg.next_link += 1;
        let link = Link {
            id: reg.next_link,
            tx,
            end: end_tx,
        };
        let link_id = link.id;
        let name = token_name
            .filter(|n| !n.is_empty())
            .unwrap_or(&hello.name)
            .to_owned();
        let entry = reg.entry(key, now);
        entry.hostname = hello.hostname.clone();
        entry.version = hello.version.clone();
        entry.sources = hello.sources.clone();
        entry.source_names = hello
            .sources
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect();
        entry.labels = labels.clone();
        entry.labels.extend(entry.enrolled.clone());
        entry.connected_at = Some(now);
        entry.last_seen = now;
        entry.delivered.resume(hello.outbox);
        let delivered = entry.delivered.clone();
        let previous = entry.link.replace(link);
        reg.rename(key, name);
        let replaced = previous.is_some_and(|old| {
            // The old link's task may be gone already; then there is nobody to tell.
            let _ = old.end.send(LinkEnd::Superseded);
            true
        });
        Connected {
            link_id,
            commands,
            end,
            replaced,
            delivered,
        }
    }

    /// Lists an enrolled agent before it ever connects (offline, with its labels).
    pub fn enroll(&self, key: &AgentKey, name: &str, labels: BTreeMap<String, String>) {
        let now = Utc::now();
        let mut reg = self.lock();
        let entry = reg.entry(key, now);
        entry.labels.extend(labels.clone());
        entry.enrolled = labels;
        reg.rename(key, name.to_owned());
    }

    /// Forgets a revoked agent: it leaves the list, and its live link (if any) is told
    /// [`LinkEnd::Revoked`]. Returns whether the registry knew it.
    pub fn remove(&self, key: &AgentKey) -> bool {
        let mut reg = self.lock();
        let Some(entry) = reg.agents.remove(key) else {
            return false;
        };
        if let Some(names) = reg.by_name.get_mut(&key.org) {
            names.remove(&(entry.name, key.id));
        }
        if let Some(link) = entry.link {
            let _ = link.end.send(LinkEnd::Revoked);
        }
        true
    }

    /// Marks the agent offline if `link_id` is still its current connection. Returns whether
    /// it was (a replaced connection closing changes nothing).
    pub fn disconnect(&self, key: &AgentKey, link_id: u64) -> bool {
        let mut reg = self.lock();
        match reg.agents.get_mut(key) {
            Some(entry) if entry.link.as_ref().is_some_and(|l| l.id == link_id) => {
                entry.link = None;
                entry.connected_at = None;
                entry.last_seen = Utc::now();
                true
            }
            _ => false,
        }
    }

    pub fn touch(&self, key: &AgentKey) {
        if let Some(entry) = self.lock().agents.get_mut(key) {
            entry.last_seen = Utc::now();
        }
    }

    /// Queues a command for a connected agent. Returns false if it is offline; if its queue is
    /// full the link is dropped (see [`AGENT_COMMAND_QUEUE`]).
    pub fn send(&self, key: &AgentKey, frame: HostFrame) -> bool {
        let mut reg = self.lock();
        let Some(entry) = reg.agents.get_mut(key) else {
            return false;
        };
        let Some(link) = &entry.link else {
            return false;
        };
        match link.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(agent = %key, "agent command queue full; dropping its link to resync");
                entry.link = None;
                entry.connected_at = None;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// How many agents of `org` are named `name`.
    pub fn count_named(&self, org: &str, name: &str) -> usize {
        let reg = self.lock();
        reg.by_name.get(org).map_or(0, |names| {
            names
                .range((name.to_owned(), Uuid::nil())..)
                .take_while(|(n, _)| n == name)
                .count()
        })
    }

    /// Finds an agent of `org` by UUID or, failing that, by name (an online one first).
    pub fn resolve(&self, org: &str, id_or_name: &str) -> Option<AgentRef> {
        let reg = self.lock();
        if let Ok(id) = Uuid::parse_str(id_or_name) {
            let key = AgentKey::new(org, id);
            if let Some(e) = reg.agents.get(&key) {
                return Some(agent_ref(key, e));
            }
        }
        // Names are indexed per org in (name, id) order: the agents of that name are a range.
        let names = reg.by_name.get(org)?;
        names
            .range((id_or_name.to_owned(), Uuid::nil())..)
            .take_while(|(name, _)| name == id_or_name)
            .filter_map(|(_, id)| {
                let key = AgentKey::new(org, *id);
                reg.agents.get(&key).map(|e| (key, e))
            })
            .max_by_key(|(_, e)| (e.link.is_some(), e.last_seen))
            .map(|(key, e)| agent_ref(key, e))
    }

    /// The `GET /api/v1/agents` body: the agents of `org` sorted by name (then id), `skip` of
    /// them skipped and at most `take` listed, and `total`, how many `org` has. `sessions`
    /// holds the active sessions per agent (absent: none). Rendered straight from the registry: at 10,000
    /// agents, building owned `AgentInfo`s first was 160,000 allocations and a quarter of
    /// the request's CPU.
    ///
    /// With `labels` (`?label=K=V`, repeatable), only agents carrying all of them are listed,
    /// paged and counted in `total`.
    pub fn list_json(
        &self,
        org: &str,
        skip: usize,
        take: usize,
        sessions: &HashMap<Uuid, usize>,
        labels: &Labels,
    ) -> Vec<u8> {
        let reg = self.lock();
        let names = reg.by_name.get(org);
        let list = if labels.is_empty() {
            let agents: Vec<AgentView<'_>> = names
                .into_iter()
                .flatten()
                .skip(skip)
                .take(take)
                .filter_map(|(_, id)| {
                    let entry = reg.agents.get(&AgentKey::new(org, *id))?;
                    let active = sessions.get(id).copied().unwrap_or(0);
                    Some(AgentView::new(*id, entry, active))
                })
                .collect();
            AgentListView {
                agents,
                total: names.map_or(0, BTreeSet::len),
            }
        } else {
            let matching = names.into_iter().flatten().filter_map(|(_, id)| {
                let entry = reg.agents.get(&AgentKey::new(org, *id))?;
                labels
                    .iter()
                    .all(|(k, v)| entry.labels.get(k) == Some(v))
                    .then_some((*id, entry))
            });
            let mut total = 0;
            let mut agents = Vec::new();
            for (i, (id, entry)) in matching.enumerate() {
                total += 1;
                if i >= skip && agents.len() < take {
                    let active = sessions.get(&id).copied().unwrap_or(0);
                    agents.push(AgentView::new(id, entry, active));
                }
            }
            AgentListView { agents, total }
        };
        // Plain borrowed data: serialising it into memory cannot fail.
        serde_json::to_vec(&list).unwrap_or_default()
    }

    /// The agents of `org` that `wanted` picks (by id, name and labels), online ones in
    /// name order, and how many it picks in all (online or not): for starting a fleet session.
    pub fn select(
        &self,
        org: &str,
        wanted: impl Fn(Uuid, &str, &Labels) -> bool,
    ) -> (Vec<AgentRef>, usize) {
        let reg = self.lock();
        let mut online = Vec::new();
        let mut total = 0;
        for (name, id) in reg.by_name.get(org).into_iter().flatten() {
            let key = AgentKey::new(org, *id);
            let Some(entry) = reg.agents.get(&key) else {
                continue;
            };
            if wanted(*id, name, &entry.labels) {
                total += 1;
                if entry.link.is_some() {
                    online.push(agent_ref(key, entry));
                }
            }
        }
        (online, total)
    }

    /// A connected agent as a fleet session sees it: itself and its labels.
    pub fn labeled(&self, key: &AgentKey) -> Option<(AgentRef, Labels)> {
        let reg = self.lock();
        let entry = reg.agents.get(key)?;
        Some((agent_ref(key.clone(), entry), entry.labels.clone()))
    }

    pub fn info(&self, key: &AgentKey, sessions: usize) -> Option<AgentInfo> {
        let reg = self.lock();
        reg.agents.get(key).map(|e| agent_info(key.id, e, sessions))
    }

    /// Stores a metrics report, keeping [`METRICS_HISTORY`] of them.
    pub fn record_metrics(&self, key: &AgentKey, metrics: &Metrics) {
        let now = Utc::now();
        let mut reg = self.lock();
        let Some(entry) = reg.agents.get_mut(key) else {
            return;
        };
        entry.last_seen = now;
        let sample = sample(metrics, &entry.source_names);
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

    pub fn metrics(&self, key: &AgentKey) -> Option<AgentMetrics> {
        let reg = self.lock();
        let entry = reg.agents.get(key)?;
        let history: Vec<MetricsReport> = entry.metrics.iter().map(metrics_report).collect();
        Some(AgentMetrics {
            agent_id: key.id.to_string(),
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

impl Registry {
    /// The agent's entry, created (offline, nameless, unindexed) if new.
    fn entry(&mut self, key: &AgentKey, now: DateTime<Utc>) -> &mut AgentEntry {
        self.agents
            .entry(key.clone())
            .or_insert_with(|| AgentEntry {
                name: String::new(),
                labels: BTreeMap::new(),
                enrolled: BTreeMap::new(),
                hostname: String::new(),
                version: String::new(),
                sources: Vec::new(),
                source_names: Vec::new(),
                connected_at: None,
                last_seen: now,
                link: None,
                metrics: VecDeque::new(),
                delivered: Arc::default(),
            })
    }

    /// Gives a known agent its (possibly new) name, keeping the name index in step.
    fn rename(&mut self, key: &AgentKey, name: String) {
        let Some(entry) = self.agents.get_mut(key) else {
            return;
        };
        let names = self.by_name.entry(key.org.clone()).or_default();
        names.remove(&(std::mem::take(&mut entry.name), key.id));
        names.insert((name.clone(), key.id));
        entry.name = name;
    }
}

fn agent_ref(key: AgentKey, e: &AgentEntry) -> AgentRef {
    AgentRef {
        key,
        name: e.name.clone(),
        hostname: e.hostname.clone(),
        online: e.link.is_some(),
        link: e.link.as_ref().map_or(0, |l| l.id),
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
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
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
            labels: &e.labels,
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
            labels: self.labels.clone(),
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

/// Keeps `m` for the sources the agent announced in its hello, sharing their names (`names`,
/// made once per connection). Counts for any other name are not kept: an agent reports only
/// its own sources, and a name of its choosing per report would make an hour of history as
/// large as it likes.
fn sample(m: &Metrics, names: &[Arc<str>]) -> Sample {
    Sample {
        timestamp_ms: m.timestamp_ms,
        interval_ms: m.interval_ms,
        sources: m
            .sources
            .iter()
            .filter_map(|s| {
                let name = names.iter().find(|n| ***n == *s.name)?;
                Some(SourceSample {
                    name: name.clone(),
                    levels: s.levels,
                    bytes: s.bytes,
                })
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

    fn hello(name: &str) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            name: name.into(),
            hostname: format!("{name}.local"),
            version: "1".into(),
            sources: vec![SourceInfo {
                name: "nginx".into(),
                path: "/var/log/nginx/error.log".into(),
            }],
            outbox: 1,
            next_frame: 1,
        }
    }

    fn join(agents: &Agents, org: &str, name: &str) -> (AgentKey, Connected) {
        let key = AgentKey::new(org, Uuid::new_v4());
        let link = agents.connect(&key, Some(name), &hello(name), &Labels::new());
        (key, link)
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
            let body = agents.list_json("acme", skip, take, &HashMap::new(), &Labels::new());
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
        let (key, _) = &links[0];
        let _again = agents.connect(key, Some("d"), &hello("d"), &Labels::new());
        assert_eq!(names(0, 10), (vec!["a".into(), "b".into(), "d".into()], 3));
    }

    #[test]
    fn a_listed_agent_serialises_as_its_agent_info() {
        let agents = Agents::default();
        let (key, link) = join(&agents, "acme", "edge");
        let listed = |agents: &Agents| {
            let body =
                agents.list_json("acme", 0, 1, &HashMap::from([(key.id, 3)]), &Labels::new());
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["agents"][0].clone()
        };
        let info = serde_json::to_value(agents.info(&key, 3).unwrap()).unwrap();
        assert_eq!(listed(&agents), info);
        assert_eq!(info["status"], "online");
        assert!(agents.disconnect(&key, link.link_id));
        let info = serde_json::to_value(agents.info(&key, 3).unwrap()).unwrap();
        assert_eq!(
            (listed(&agents), &info["status"]),
            (info.clone(), &"offline".into())
        );
    }

    #[test]
    fn metrics_history_keeps_an_hour_and_shares_source_names() {
        let agents = Agents::default();
        let (key, _link) = join(&agents, "acme", "edge");
        let now = Utc::now().timestamp_millis();
        agents.record_metrics(&key, &report(now - 2 * 3_600_000, 9));
        agents.record_metrics(&key, &report(now - 1_000, 1));
        agents.record_metrics(&key, &report(now, 2));
        let mut unannounced = report(now, 5);
        unannounced.sources[0].name = "not-in-hello".into();
        agents.record_metrics(&key, &unannounced);
        let m = agents.metrics(&key).unwrap();
        assert!(
            m.latest.as_ref().unwrap().sources.is_empty(),
            "counts for a source the agent did not announce are not kept"
        );
        let m = AgentMetrics {
            history: m.history[..m.history.len() - 1].to_vec(),
            latest: m.history.get(m.history.len().saturating_sub(2)).cloned(),
            ..m
        };
        let errors: Vec<u64> = m
            .history
            .iter()
            .map(|r| r.sources[0].levels["ERROR"])
            .collect();
        assert_eq!(errors, [1, 2], "the report older than an hour is gone");
        assert_eq!(m.latest.unwrap().sources[0].lines, 2);
        assert!(agents.metrics(&AgentKey::new("other", key.id)).is_none());
        let reg = agents.lock();
        let kept = &reg.agents[&key].metrics;
        assert!(Arc::ptr_eq(
            &kept[0].sources[0].name,
            &kept[1].sources[0].name
        ));
    }

    /// The same UUID in another org is another agent: connecting it neither replaces the
    /// first agent's link nor shows in the first org's list, lookups or metrics.
    #[test]
    fn the_same_uuid_in_two_orgs_is_two_agents() {
        let agents = Agents::default();
        let (acme, mut acme_link) = join(&agents, "acme", "edge");
        let evil = AgentKey::new("evil", acme.id);
        let evil_link = agents.connect(&evil, Some("edge"), &hello("evil-box"), &Labels::new());
        assert!(!evil_link.replaced);
        assert!(
            acme_link.end.try_recv().is_err(),
            "acme's link is untouched"
        );
        agents.record_metrics(&evil, &report(Utc::now().timestamp_millis(), 7));
        assert!(agents.metrics(&acme).unwrap().history.is_empty());
        let found = agents.resolve("acme", &acme.id.to_string()).unwrap();
        assert_eq!(
            (found.key, found.hostname.as_str()),
            (acme.clone(), "edge.local")
        );
        let by_name = agents.resolve("acme", "edge").unwrap();
        assert_eq!(by_name.key, acme);
        assert!(agents.disconnect(&evil, evil_link.link_id));
        assert!(agents.resolve("acme", "edge").unwrap().online);
    }

    /// A second link of one agent supersedes the first, which is told why (so it can close
    /// with a code the agent backs off on); revoking ends the live link and unlists it.
    #[test]
    fn links_are_superseded_and_revoked_with_a_reason() {
        let agents = Agents::default();
        let (key, mut first) = join(&agents, "acme", "edge");
        let mut second = agents.connect(&key, None, &hello("edge"), &Labels::new());
        assert!(second.replaced);
        assert_eq!(first.end.try_recv(), Ok(LinkEnd::Superseded));
        assert!(
            !agents.disconnect(&key, first.link_id),
            "a stale link changes nothing"
        );
        assert!(agents.remove(&key));
        assert_eq!(second.end.try_recv(), Ok(LinkEnd::Revoked));
        assert!(agents.resolve("acme", "edge").is_none());
        let body = agents.list_json("acme", 0, 10, &HashMap::new(), &Labels::new());
        let list: AgentList = serde_json::from_slice(&body).unwrap();
        assert_eq!(list.total, 0);
    }

    /// What selectors see is the agent's own labels with its enrollment's over them: an
    /// admin's label is not overridden by the agent's config, the agent's others are added.
    #[test]
    fn enrollment_labels_win_over_the_agents_own() {
        let agents = Agents::default();
        let key = AgentKey::new("acme", Uuid::new_v4());
        agents.enroll(&key, "edge", Labels::from([("env".into(), "prod".into())]));
        let own = Labels::from([
            ("env".to_owned(), "dev".to_owned()),
            ("role".to_owned(), "edge".to_owned()),
        ]);
        let _link = agents.connect(&key, Some("edge"), &hello("edge"), &own);
        let (_, labels) = agents.labeled(&key).unwrap();
        assert_eq!(labels["env"], "prod");
        assert_eq!(labels["role"], "edge");
        let (online, matching) = agents.select("acme", |_, _, l| l.get("role").is_some());
        assert_eq!((online.len(), matching), (1, 1));
        assert_eq!(agents.select("other", |_, _, _| true).1, 0);
    }

    /// An enrolled agent is listed (offline, with its labels) before it first connects, and
    /// keeps its labels when it does.
    #[test]
    fn enrolled_agents_are_listed_before_they_connect() {
        let agents = Agents::default();
        let key = AgentKey::new("acme", Uuid::new_v4());
        agents.enroll(
            &key,
            "edge-9",
            BTreeMap::from([("env".into(), "prod".into())]),
        );
        let info = agents.info(&key, 0).unwrap();
        assert_eq!(
            (info.name.as_str(), info.status.as_str()),
            ("edge-9", "offline")
        );
        assert_eq!(info.labels["env"], "prod");
        let _link = agents.connect(&key, Some("edge-9"), &hello("edge-9"), &Labels::new());
        let info = agents.info(&key, 0).unwrap();
        assert_eq!((info.status.as_str(), info.labels.len()), ("online", 1));
    }
}
