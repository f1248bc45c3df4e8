//! Streaming sessions: creation, lookup, stop, and the background task that warns and expires
//! them (the shape of mini-redis's `db.rs`: state behind one lock, a set of deadlines, and a
//! task woken by `Notify` when the earliest deadline changes).
//!
//! This handle is the seam a multi-host backend (NATS) replaces: everything else asks it, never
//! the map inside.
//!
//! A session runs on one agent, or, started with `agent_ids` or a `selector`, on a fleet of
//! them ([`fleet`]: who joins, how the rate limit is split, how records are numbered).

pub mod fleet;
mod members;

pub use fleet::{Fleet, MAX_AGENTS_PER_SESSION, Target};
use members::Member;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use logfleet_protocol::Filters;
use logfleet_protocol::agent::{HostFrame, RateLimits, SessionSpec};
use logfleet_protocol::client::{Control, DropReason, EndReason};
use logfleet_protocol::rest::{SessionSummary, WARNING_SECONDS};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::audit::{Audit, Kind};
use crate::config::Tuning;
use crate::fanout::{ByteBudget, HostBudgets, Hub, HubBounds};
use crate::identity::AgentKey;
use crate::registry::{AgentRef, Agents};
use crate::time::rfc3339;
use crate::usage::{SessionUsage, SessionUsageView};

/// Shared handle to all active sessions.
#[derive(Clone)]
pub struct Sessions {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the expiry task when a new, earlier deadline exists or on shutdown.
    wake: Notify,
    agents: Agents,
    audit: Audit,
    tuning: Tuning,
    /// Every session's replay buffer and live queue count against these.
    budgets: HostBudgets,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Session>,
    /// The next event of each session: its warning, then its expiry.
    deadlines: BTreeSet<(Instant, String)>,
    shutdown: bool,
}

/// One active session. Its org is its agents' (every member is of `org`).
struct Session {
    org: String,
    /// The agents running it, in the order they joined: one for a single-agent session.
    members: Vec<Member>,
    /// Set for a session started with `agent_ids` or a `selector`.
    fleet: Option<Fleet>,
    created_by: String,
    /// What the agents run. Its `remaining_ms` is the full timeout; frames say the time left
    /// when they are written ([`Sessions::specs_for_agent`], [`Sessions::time_left_now`]).
    /// In a fleet session its `limits` are the total; each member runs its share.
    spec: SessionSpec,
    started_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    expires: Instant,
    warned: bool,
    usage: Arc<SessionUsage>,
    hub: Arc<Hub>,
}

impl Session {
    fn next_deadline(&self) -> Instant {
        if self.warned {
            self.expires
        } else {
            self.expires
                .checked_sub(Duration::from_secs(WARNING_SECONDS))
                .unwrap_or(self.expires)
        }
    }
}

/// A session as handlers report it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    /// The agent of a single-agent session; a fleet session's first member.
    pub agent_id: Uuid,
    pub agent_name: String,
    /// A fleet session's members now (`None` for a single-agent session).
    pub agent_ids: Option<Vec<Uuid>>,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    pub clients: usize,
    pub filters: Filters,
    pub usage: SessionUsageView,
}

impl SessionView {
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.id.clone(),
            agent_id: self.agent_id.to_string(),
            agent_name: self.agent_name.clone(),
            agent_ids: self.agent_ids_text(),
            status: "active".to_owned(),
            started_at: rfc3339(self.started_at),
            expires_at: rfc3339(self.expires_at),
            created_by: self.created_by.clone(),
            clients: self.clients,
            usage: serde_json::to_value(&self.usage).ok(),
        }
    }
}

impl SessionView {
    /// `agent_ids` as the API shows them.
    pub fn agent_ids_text(&self) -> Option<Vec<String>> {
        self.agent_ids
            .as_ref()
            .map(|ids| ids.iter().map(Uuid::to_string).collect())
    }
}

/// What an agent's link needs of one of its sessions.
pub struct Feed {
    pub hub: Arc<Hub>,
    /// The agent's hostname, for `metadata.host`.
    pub hostname: String,
    pub usage: Arc<SessionUsage>,
    /// The session's backfill is not done yet: the agent sends it before any live record, so
    /// its records until `BackfillDone` are the backfill (flagged `"backfill": true`).
    pub backfilling: bool,
    /// A fleet session: the hub numbers records ([`Hub::publish_numbered`]) and per-agent
    /// controls name the agent.
    pub fleet: bool,
}

/// Active sessions one agent may run at once: each costs the host a replay buffer and the edge
/// machine a filter chain. Checked under the sessions lock, so concurrent starts cannot pass it
/// together.
pub const MAX_SESSIONS_PER_AGENT: usize = 32;

/// Active sessions one org may run at once, over all its agents: with the per-session replay
/// and queue bounds, this is what bounds the host memory one tenant's agents can hold.
pub const MAX_SESSIONS_PER_ORG: usize = 256;

/// Why a session could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefused {
    /// The agent (every matching agent, for a fleet) already runs [`MAX_SESSIONS_PER_AGENT`]
    /// sessions.
    TooMany,
    /// The org already runs [`MAX_SESSIONS_PER_ORG`] sessions.
    OrgFull,
    /// A fleet target no agent of the org matches (online or not).
    NoMatch,
    /// A fleet target whose matching agents are all offline.
    NoneOnline,
    /// A fleet target matching more than [`MAX_AGENTS_PER_SESSION`] online agents.
    TooManyAgents(usize),
}

/// Why a user could not stop a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRefused {
    /// No active session of that id in the caller's org.
    NotFound,
    /// The session belongs to another user and the caller is not an admin.
    NotOwner,
}

/// What an agent reported about a session's failed filter ([`Sessions::fail`]).
#[derive(Debug, Clone)]
pub struct FilterFailed {
    /// The failed filter: a plugin's name, or a built-in's.
    pub plugin: String,
    pub message: String,
    /// Records the failure kept from being decided.
    pub dropped: u64,
}

/// What a new session is made of.
pub struct NewSession {
    pub created_by: String,
    pub org: String,
    pub target: NewTarget,
    pub filters: Filters,
    /// Per agent for a single-agent session; the total for a fleet.
    pub limits: RateLimits,
    pub timeout: Duration,
    /// Records to backfill before the live ones (validated by the API).
    pub backfill: Option<u32>,
}

/// Where a new session runs.
pub enum NewTarget {
    /// One agent (of the session's org), online.
    Agent(AgentRef),
    /// Every online agent of the org the target picks, and those that join later.
    Fleet(Target),
}

impl Sessions {
    /// Creates the handle and spawns its expiry task, which ends with [`Sessions::shutdown`].
    pub fn new(agents: Agents, tuning: Tuning, audit: Audit) -> Sessions {
        let sessions = Sessions {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                agents,
                audit,
                budgets: HostBudgets {
                    replay: ByteBudget::new(tuning.replay_budget_bytes),
                    live: ByteBudget::new(tuning.queue_budget_bytes),
                },
                tuning,
            }),
        };
        tokio::spawn(expire_sessions(sessions.shared.clone()));
        sessions
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Starts a session and tells its agents, unless an agent already runs
    /// [`MAX_SESSIONS_PER_AGENT`] (a fleet session leaves such agents out) or the org
    /// [`MAX_SESSIONS_PER_ORG`]. A fleet's agents are picked under the sessions lock, so an
    /// agent saying hello meanwhile is either picked here or joins at its hello.
    pub fn start(&self, new: NewSession) -> Result<SessionView, StartRefused> {
        let id = format!("sess_{}", Uuid::new_v4().simple());
        let now = Instant::now();
        let started_at = Utc::now();
        let expires = now + new.timeout;
        let expires_at = started_at + new.timeout;
        let spec = SessionSpec {
            id: id.clone(),
            filters: new.filters,
            limits: new.limits,
            remaining_ms: remaining_ms(expires, now),
            backfill: new.backfill,
        };
        let (view, sends) = {
            let mut st = self.lock();
            let in_org = st.by_id.values().filter(|s| s.org == new.org).count();
            let running =
                |st: &State, agent: &AgentKey| st.by_id.values().filter(|s| s.has(agent)).count();
            let (agents, fleet) = match new.target {
                NewTarget::Agent(agent) => {
                    if running(&st, &agent.key) >= MAX_SESSIONS_PER_AGENT {
                        return Err(StartRefused::TooMany);
                    }
                    (vec![agent], None)
                }
                NewTarget::Fleet(target) => {
                    let (online, matching) = self
                        .shared
                        .agents
                        .select(&new.org, |id, name, labels| target.wants(id, name, labels));
                    if matching == 0 {
                        return Err(StartRefused::NoMatch);
                    }
                    if online.is_empty() {
                        return Err(StartRefused::NoneOnline);
                    }
                    if online.len() > MAX_AGENTS_PER_SESSION {
                        return Err(StartRefused::TooManyAgents(online.len()));
                    }
                    let free: Vec<AgentRef> = online
                        .into_iter()
                        .filter(|a| running(&st, &a.key) < MAX_SESSIONS_PER_AGENT)
                        .collect();
                    if free.is_empty() {
                        return Err(StartRefused::TooMany);
                    }
                    let fleet = Fleet {
                        target,
                        total: new.limits,
                    };
                    (free, Some(fleet))
                }
            };
            if in_org >= MAX_SESSIONS_PER_ORG {
                return Err(StartRefused::OrgFull);
            }
            let session = Session {
                org: new.org,
                members: agents.into_iter().map(Member::new).collect(),
                fleet,
                created_by: new.created_by,
                spec,
                started_at,
                expires_at,
                expires,
                warned: false,
                usage: Arc::default(),
                hub: Arc::new(Hub::with_budgets(
                    HubBounds::from(&self.shared.tuning),
                    &self.shared.budgets,
                )),
            };
            let view = view(&id, &session);
            let member_spec = session.spec_for_member();
            let sends: Vec<AgentKey> = session
                .members
                .iter()
                .map(|m| m.agent.key.clone())
                .collect();
            let deadline = session.next_deadline();
            let earliest = st.deadlines.first().is_none_or(|(t, _)| deadline < *t);
            st.deadlines.insert((deadline, id.clone()));
            st.by_id.insert(id.clone(), session);
            if earliest {
                self.shared.wake.notify_one();
            }
            (view, (sends, member_spec))
        };
        // Offline or stuck: an agent gets the session in the full set when it (re)connects.
        let (agents, member_spec) = sends;
        for agent in &agents {
            self.shared
                .agents
                .send(agent, HostFrame::Start(member_spec.clone()));
        }
        tracing::info!(session = %id, agents = agents.len(), "session started");
        Ok(view)
    }

    /// Stops a session of `org` at a user's request: `by` (a user name) may stop the sessions
    /// it started; with `any`, (an admin) any session of the org.
    pub fn stop(
        &self,
        org: &str,
        id: &str,
        by: &str,
        any: bool,
    ) -> Result<SessionView, StopRefused> {
        let mut st = self.lock();
        match st.by_id.get(id) {
            Some(s) if s.org == org => {
                if !any && s.created_by != by {
                    return Err(StopRefused::NotOwner);
                }
            }
            _ => return Err(StopRefused::NotFound),
        }
        let session = st
            .end(id, EndReason::Stopped, &self.shared)
            .ok_or(StopRefused::NotFound)?;
        Ok(view(id, &session))
    }

    /// One session of `org`.
    pub fn get(&self, org: &str, id: &str) -> Option<SessionView> {
        let st = self.lock();
        st.by_id
            .get(id)
            .filter(|s| s.org == org)
            .map(|s| view(id, s))
    }

    /// Gives a session of `org` new filters, with the same rights as [`Sessions::stop`]. The
    /// agent swaps its chain at a batch boundary once the new one is ready and says so
    /// ([`Sessions::filters_applied`]); until then records keep passing the old filters.
    pub fn change_filters(
        &self,
        org: &str,
        id: &str,
        by: &str,
        any: bool,
        filters: Filters,
    ) -> Result<SessionView, StopRefused> {
        let (agents, spec, view) = {
            let mut st = self.lock();
            let session = match st.by_id.get_mut(id) {
                Some(s) if s.org == org => s,
                _ => return Err(StopRefused::NotFound),
            };
            if !any && session.created_by != by {
                return Err(StopRefused::NotOwner);
            }
            session.spec.filters = filters;
            for m in &mut session.members {
                m.filters_pending = true;
            }
            let agents: Vec<AgentKey> = session
                .members
                .iter()
                .map(|m| m.agent.key.clone())
                .collect();
            (agents, session.spec_for_member(), view(id, session))
        };
        // Offline or stuck: an agent gets the new spec in the full set when it reconnects.
        for agent in &agents {
            self.shared
                .agents
                .send(agent, HostFrame::Start(spec.clone()));
        }
        tracing::info!(session = %id, agents = agents.len(), "session filters changed");
        Ok(view)
    }

    /// The agent runs session `id` under its current filters from now on: clients get
    /// `filters_changed` before the first record that passed them.
    /// In a fleet session each member says so for itself (`agent_id`), and only after a
    /// real filter change (not a re-sent rate split).
    pub fn filters_applied(&self, agent: &AgentKey, id: &str) {
        let mut st = self.lock();
        let Some(session) = st.by_id.get_mut(id) else {
            return;
        };
        let fleet = session.fleet.is_some();
        let filters = session.spec.filters.to_spec();
        let Some(member) = session.members.iter_mut().find(|m| m.agent.key == *agent) else {
            return;
        };
        if fleet && !std::mem::take(&mut member.filters_pending) {
            return;
        }
        session.hub.publish(Control::FiltersChanged {
            filters,
            agent_id: if fleet {
                Session::agent_id(agent)
            } else {
                None
            },
        });
    }

    /// The agent sent the backfill session `id` asked for: clients get `backfill_done`, and the
    /// specs sent to the agent from now on ask for none, so an agent that reconnects (or
    /// restarts without its state) does not send it twice. (Only single-agent sessions have
    /// a backfill: the API refuses one for a fleet.) A `BackfillDone` the session did not ask
    /// for, or a second one, is ignored: clients hear `backfill_done` once, and only where
    /// they asked for a backfill, whatever an agent sends.
    pub fn backfill_done(&self, agent: &AgentKey, id: &str, count: u64, truncated: bool) {
        let mut st = self.lock();
        if let Some(session) = st
            .by_id
            .get_mut(id)
            .filter(|s| s.member(agent).is_some() && s.spec.backfill.is_some())
        {
            session.spec.backfill = None;
            session
                .hub
                .publish_opening(Control::BackfillDone { count, truncated });
        }
    }

    /// Ends every session of an agent (it was revoked), reason `stopped`, and takes it out
    /// of the fleet sessions it is in (those with other members go on); returns how many
    /// sessions it left.
    pub fn end_for_agent(&self, agent: &AgentKey) -> usize {
        let mut st = self.lock();
        let ids: Vec<String> = st
            .by_id
            .iter()
            .filter(|(_, s)| s.has(agent))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            let Some(session) = st.by_id.get_mut(id) else {
                continue;
            };
            if session.fleet.is_some() && session.members.len() > 1 {
                session.members.retain(|m| m.agent.key != *agent);
                self.shared.agents.send(
                    agent,
                    HostFrame::Stop {
                        session_id: id.clone(),
                    },
                );
            } else {
                st.end(id, EndReason::Stopped, &self.shared);
            }
        }
        ids.len()
    }

    /// Ends a session of this agent whose filters failed on the agent, which has already
    /// stopped it: clients get `filter_error` (naming the filter and the cause), `logs_dropped`
    /// (`filter_failed`, the records the failure kept from being decided, sent even when 0 so
    /// clients always see the same sequence), then `session_ended` (`filter_failed`). Another
    /// agent's session is not touched: an agent can only end its own sessions. Returns whether
    /// the session was ended.
    pub fn fail(&self, agent: &AgentKey, id: &str, failure: FilterFailed) -> bool {
        let mut st = self.lock();
        let Some(session) = st.by_id.get(id).filter(|s| s.has(agent)) else {
            return false;
        };
        tracing::warn!(session = %id, plugin = %failure.plugin, message = %failure.message, dropped = failure.dropped, "session's filters failed on the agent");
        session.hub.publish(Control::FilterError {
            plugin: failure.plugin,
            message: failure.message,
        });
        session.hub.publish(Control::LogsDropped {
            count: failure.dropped,
            reason: DropReason::FilterFailed,
            agent_id: Session::agent_id(agent),
        });
        st.end(id, EndReason::FilterFailed, &self.shared).is_some()
    }

    /// Active sessions of `org`, oldest first.
    pub fn list(&self, org: &str) -> Vec<SessionView> {
        let st = self.lock();
        let mut list: Vec<SessionView> = st
            .by_id
            .iter()
            .filter(|(_, s)| s.org == org)
            .map(|(id, s)| view(id, s))
            .collect();
        list.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        list
    }

    /// The fan-out hub of a session of `org`, for a client to subscribe to.
    pub fn hub(&self, org: &str, id: &str) -> Option<Arc<Hub>> {
        let st = self.lock();
        st.by_id
            .get(id)
            .filter(|s| s.org == org)
            .map(|s| s.hub.clone())
    }

    /// Where an agent's frames for its session `id` go. Another agent's session (also one
    /// of the same UUID in another org) answers `None`: an agent can only feed its own
    /// sessions.
    pub fn agent_feed(&self, agent: &AgentKey, id: &str) -> Option<Feed> {
        let st = self.lock();
        let s = st.by_id.get(id)?;
        let member = s.member(agent)?;
        Some(Feed {
            hub: s.hub.clone(),
            hostname: member.agent.hostname.clone(),
            usage: s.usage.clone(),
            backfilling: s.spec.backfill.is_some(),
            fleet: s.fleet.is_some(),
        })
    }

    /// `frame` as it must go out to the agent now: a `Start` queued a while ago says the time
    /// its session has left at this moment (none, if it has ended meanwhile: the agent then
    /// does not start it). Other frames are unchanged.
    pub fn time_left_now(&self, frame: HostFrame) -> HostFrame {
        match frame {
            HostFrame::Start(spec) => {
                let expires = self.lock().by_id.get(&spec.id).map(|s| s.expires);
                HostFrame::Start(SessionSpec {
                    remaining_ms: expires.map_or(0, |e| remaining_ms(e, Instant::now())),
                    ..spec
                })
            }
            other => other,
        }
    }

    /// Active sessions per agent of `org`, for listing many agents at once. Taken before the
    /// agent registry's lock, never under it: ending a session locks the registry while
    /// holding this one, so the other order could deadlock.
    pub fn counts_by_agent(&self, org: &str) -> HashMap<Uuid, usize> {
        let mut counts = HashMap::new();
        for s in self.lock().by_id.values() {
            if s.org == org {
                for m in &s.members {
                    *counts.entry(m.agent.key.id).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    pub fn count_for_agent(&self, agent: &AgentKey) -> usize {
        let st = self.lock();
        st.by_id.values().filter(|s| s.has(agent)).count()
    }

    /// Bytes held host-wide by sessions' replay buffers and live client queues.
    pub fn fanout_bytes(&self) -> (usize, usize) {
        let budgets = &self.shared.budgets;
        (budgets.replay.used(), budgets.live.used())
    }

    pub fn active(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Tells the clients of an agent's sessions that its link `link_id` (the registry's
    /// number) went away or came up, once per change. Two links of one agent report from
    /// different tasks, so the old link's `offline` may come after the new one's `online`;
    /// it is ignored then, and the sessions show the agent as its newest link left it.
    pub fn agent_link_changed(&self, agent: &AgentKey, link_id: u64, online: bool, hostname: &str) {
        let mut st = self.lock();
        for s in st.by_id.values_mut() {
            let Some(m) = s.members.iter_mut().find(|m| m.agent.key == *agent) else {
                continue;
            };
            if link_id < m.link {
                continue;
            }
            m.link = link_id;
            m.agent.hostname = hostname.to_owned();
            if m.online != online {
                m.online = online;
                let agent_id = Session::agent_id(agent);
                s.hub.publish(if online {
                    Control::AgentReconnected { agent_id }
                } else {
                    Control::AgentDisconnected { agent_id }
                });
            }
        }
    }

    /// Ends every session (reason `shutdown`) and stops the expiry task.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        let ids: Vec<String> = st.by_id.keys().cloned().collect();
        for id in ids {
            st.end(&id, EndReason::Shutdown, &self.shared);
        }
        drop(st);
        self.shared.wake.notify_one();
    }
}

impl Shared {
    /// Trims every session's buffers while the host is over a budget. The hubs are collected
    /// first: trimming takes each hub's lock, never under the sessions lock.
    fn trim_buffers(&self) {
        if !(self.budgets.replay.over() || self.budgets.live.over()) {
            return;
        }
        let hubs: Vec<Arc<Hub>> = self.lock().by_id.values().map(|s| s.hub.clone()).collect();
        for hub in hubs {
            hub.trim();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Session state stays consistent across a panic elsewhere; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fires every due warning and expiry; returns when the next one is due.
    fn fire_due(&self) -> Option<Instant> {
        let mut st = self.lock();
        if st.shutdown {
            return None;
        }
        let now = Instant::now();
        while let Some((when, id)) = st.deadlines.first().cloned() {
            if when > now {
                return Some(when);
            }
            st.deadlines.pop_first();
            let Some(session) = st.by_id.get_mut(&id) else {
                continue;
            };
            if session.warned {
                st.end(&id, EndReason::Timeout, self);
            } else {
                session.warned = true;
                session.hub.warn_ending(session.expires);
                let next = session.expires;
                st.deadlines.insert((next, id));
            }
        }
        None
    }

    fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }
}

impl State {
    /// Removes a session, tells its clients why, and tells its agent to stop.
    fn end(&mut self, id: &str, reason: EndReason, shared: &Shared) -> Option<Session> {
        let session = self.by_id.remove(id)?;
        self.deadlines
            .remove(&(session.next_deadline(), id.to_owned()));
        session.hub.end(reason);
        // A user's stop is audited by its handler, which knows who; these are the host's.
        let kind = match reason {
            EndReason::Timeout => Some(Kind::SessionExpire),
            EndReason::FilterFailed => Some(Kind::SessionFailed),
            EndReason::Stopped | EndReason::Shutdown => None,
        };
        if let Some(kind) = kind {
            let agents: Vec<Uuid> = session.members.iter().map(|m| m.agent.key.id).collect();
            let mut details = serde_json::json!({"session_id": id, "agent_id": agents.first()});
            if session.fleet.is_some() {
                details["agent_ids"] = serde_json::json!(agents);
            }
            shared
                .audit
                .record(kind, Some(&session.org), "host", details);
        }
        for m in &session.members {
            shared.agents.send(
                &m.agent.key,
                HostFrame::Stop {
                    session_id: id.to_owned(),
                },
            );
        }
        tracing::info!(session = %id, ?reason, "session ended");
        Some(session)
    }
}

/// What an agent is told a session has left at `now`: the agent counts it down on its own
/// monotonic clock, so no wall clock is compared with another.
fn remaining_ms(expires: Instant, now: Instant) -> u64 {
    u64::try_from(expires.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}

fn view(id: &str, s: &Session) -> SessionView {
    let first = s.members.first().map(|m| &m.agent);
    SessionView {
        id: id.to_owned(),
        agent_id: first.map_or(Uuid::nil(), |a| a.key.id),
        agent_name: first.map_or_else(String::new, |a| a.name.clone()),
        agent_ids: s
            .fleet
            .as_ref()
            .map(|_| s.members.iter().map(|m| m.agent.key.id).collect()),
        started_at: s.started_at,
        expires_at: s.expires_at,
        created_by: s.created_by.clone(),
        clients: s.hub.clients(),
        filters: s.spec.filters.clone(),
        usage: s.usage.view(Instant::now()),
    }
}

/// How often sessions' buffers are trimmed to their fair shares of the host budgets while
/// the host is over one (see [`crate::fanout::ByteBudget`]).
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Warns and expires sessions as their deadlines come, and trims their buffers while the host
/// is over a budget, until shutdown.
async fn expire_sessions(shared: Arc<Shared>) {
    let mut trim = tokio::time::interval(TRIM_INTERVAL);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.is_shutdown() {
        let due = shared.fire_due();
        let sleep = async {
            match due {
                Some(when) => tokio::time::sleep_until(when.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shared.wake.notified() => {}
            _ = trim.tick() => shared.trim_buffers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Next;

    /// Clients see the agent as its newest link left it, whatever order two links' news
    /// arrive in: a superseded link reporting its end late does not show a connected agent as
    /// gone.
    #[tokio::test]
    async fn a_late_offline_from_a_superseded_link_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path()).unwrap();
        let sessions = Sessions::new(Agents::default(), Tuning::default(), audit);
        let key = AgentKey::new("acme", Uuid::new_v4());
        let view = sessions
            .start(NewSession {
                created_by: "alice".into(),
                org: "acme".into(),
                target: NewTarget::Agent(AgentRef {
                    key: key.clone(),
                    name: "edge-1".into(),
                    hostname: "edge-1".into(),
                    online: true,
                    link: 0,
                }),
                filters: Filters::default(),
                limits: RateLimits {
                    lines_per_second: 0,
                    bytes_per_second: 0,
                },
                timeout: Duration::from_secs(60),
                backfill: None,
            })
            .unwrap();
        let mut sub = sessions
            .hub("acme", &view.id)
            .unwrap()
            .subscribe(None)
            .unwrap();
        sessions.agent_link_changed(&key, 1, false, "edge-1");
        sessions.agent_link_changed(&key, 3, true, "edge-1");
        sessions.agent_link_changed(&key, 2, false, "edge-1");
        let mut events = Vec::new();
        while let Next::Burst(burst) = sub.live.try_recv() {
            events.extend(burst.messages.iter().map(|m| m.text.to_string()));
        }
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].contains("agent_disconnected"), "{events:?}");
        assert!(events[1].contains("agent_reconnected"), "{events:?}");
        sessions.shutdown();
    }

    /// Clients hear `backfill_done` only for a session that asked for a backfill, and once:
    /// an agent sending it for a session without one, or again, is not believed.
    #[tokio::test]
    async fn backfill_done_is_told_once_and_only_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path()).unwrap();
        let sessions = Sessions::new(Agents::default(), Tuning::default(), audit);
        let key = AgentKey::new("acme", Uuid::new_v4());
        let start = |backfill| {
            sessions
                .start(NewSession {
                    created_by: "alice".into(),
                    org: "acme".into(),
                    target: NewTarget::Agent(AgentRef {
                        key: key.clone(),
                        name: "edge-1".into(),
                        hostname: "edge-1".into(),
                        online: true,
                        link: 0,
                    }),
                    filters: Filters::default(),
                    limits: RateLimits {
                        lines_per_second: 0,
                        bytes_per_second: 0,
                    },
                    timeout: Duration::from_secs(60),
                    backfill,
                })
                .unwrap()
        };
        let (plain, asked) = (start(None), start(Some(5)));
        let told = |id: &str| {
            let mut sub = sessions.hub("acme", id).unwrap().subscribe(None).unwrap();
            let mut events: Vec<String> = sub.backlog.iter().map(|m| m.text.to_string()).collect();
            while let Next::Burst(burst) = sub.live.try_recv() {
                events.extend(burst.messages.iter().map(|m| m.text.to_string()));
            }
            events
                .into_iter()
                .filter(|e| e.contains("backfill_done"))
                .count()
        };
        sessions.backfill_done(&key, &plain.id, 7, false);
        sessions.backfill_done(&key, &asked.id, 3, false);
        sessions.backfill_done(&key, &asked.id, 9, true);
        assert_eq!(told(&plain.id), 0, "no backfill was asked for");
        assert_eq!(told(&asked.id), 1, "the first one only");
        sessions.shutdown();
    }
}
