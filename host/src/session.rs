//! Streaming sessions: creation, lookup, stop, and the background task that warns and expires
//! them (the shape of mini-redis's `db.rs`: state behind one lock, a set of deadlines, and a
//! task woken by `Notify` when the earliest deadline changes).
//!
//! This handle is the seam a multi-host backend (NATS) replaces: everything else asks it, never
//! the map inside.

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
use crate::fanout::{Hub, HubBounds, ReplayBudget};
use crate::identity::AgentKey;
use crate::registry::{AgentRef, Agents};
use crate::time::rfc3339;

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
    /// Every session's replay buffer counts against it.
    replay_budget: ReplayBudget,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Session>,
    /// The next event of each session: its warning, then its expiry.
    deadlines: BTreeSet<(Instant, String)>,
    shutdown: bool,
}

/// One active session. Its org is its agent's (`agent.key.org`).
struct Session {
    agent: AgentRef,
    created_by: String,
    /// What the agent runs. Its `remaining_ms` is the full timeout; frames say the time left
    /// when they are written ([`Sessions::specs_for_agent`], [`Sessions::time_left_now`]).
    spec: SessionSpec,
    started_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    expires: Instant,
    warned: bool,
    /// Whether clients were last told the agent is connected.
    agent_online: bool,
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
    pub agent_id: Uuid,
    pub agent_name: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    pub clients: usize,
}

impl SessionView {
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.id.clone(),
            agent_id: self.agent_id.to_string(),
            agent_name: self.agent_name.clone(),
            status: "active".to_owned(),
            started_at: rfc3339(self.started_at),
            expires_at: rfc3339(self.expires_at),
            created_by: self.created_by.clone(),
            clients: self.clients,
        }
    }
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
    /// The agent already runs [`MAX_SESSIONS_PER_AGENT`] sessions.
    TooMany,
    /// The org already runs [`MAX_SESSIONS_PER_ORG`] sessions.
    OrgFull,
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

/// What a new session is made of. Its org is the agent's.
pub struct NewSession {
    pub created_by: String,
    pub agent: AgentRef,
    pub filters: Filters,
    pub limits: RateLimits,
    pub timeout: Duration,
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
                replay_budget: ReplayBudget::new(tuning.replay_budget_bytes),
                tuning,
            }),
        };
        tokio::spawn(expire_sessions(sessions.shared.clone()));
        sessions
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Starts a session and tells its agent, unless the agent already runs
    /// [`MAX_SESSIONS_PER_AGENT`].
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
        };
        let session = Session {
            agent: new.agent,
            created_by: new.created_by,
            spec: spec.clone(),
            started_at,
            expires_at,
            expires,
            warned: false,
            agent_online: true,
            hub: Arc::new(Hub::with_budget(
                HubBounds::from(&self.shared.tuning),
                self.shared.replay_budget.clone(),
            )),
        };
        let view = view(&id, &session);
        let agent = session.agent.key.clone();
        {
            let mut st = self.lock();
            let running = st.by_id.values().filter(|s| s.agent.key == agent).count();
            if running >= MAX_SESSIONS_PER_AGENT {
                return Err(StartRefused::TooMany);
            }
            let in_org = st
                .by_id
                .values()
                .filter(|s| s.agent.key.org == agent.org)
                .count();
            if in_org >= MAX_SESSIONS_PER_ORG {
                return Err(StartRefused::OrgFull);
            }
            let deadline = session.next_deadline();
            let earliest = st.deadlines.first().is_none_or(|(t, _)| deadline < *t);
            st.deadlines.insert((deadline, id.clone()));
            st.by_id.insert(id.clone(), session);
            if earliest {
                self.shared.wake.notify_one();
            }
        }
        // Offline or stuck: the agent gets the session in the full set when it (re)connects.
        self.shared.agents.send(&agent, HostFrame::Start(spec));
        tracing::info!(session = %id, %agent, "session started");
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
            Some(s) if s.agent.key.org == org => {
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

    /// Ends every session of an agent (it was revoked), reason `stopped`; returns how many.
    pub fn end_for_agent(&self, agent: &AgentKey) -> usize {
        let mut st = self.lock();
        let ids: Vec<String> = st
            .by_id
            .iter()
            .filter(|(_, s)| s.agent.key == *agent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            st.end(id, EndReason::Stopped, &self.shared);
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
        let Some(session) = st.by_id.get(id).filter(|s| s.agent.key == *agent) else {
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
        });
        st.end(id, EndReason::FilterFailed, &self.shared).is_some()
    }

    /// Active sessions of `org`, oldest first.
    pub fn list(&self, org: &str) -> Vec<SessionView> {
        let st = self.lock();
        let mut list: Vec<SessionView> = st
            .by_id
            .iter()
            .filter(|(_, s)| s.agent.key.org == org)
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
            .filter(|s| s.agent.key.org == org)
            .map(|s| s.hub.clone())
    }

    /// The hub of a session of this agent, for the agent's lines. Another agent's session
    /// (also one of the same UUID in another org) answers `None`: an agent can only feed its
    /// own sessions.
    pub fn agent_hub(&self, agent: &AgentKey, id: &str) -> Option<(Arc<Hub>, String)> {
        let st = self.lock();
        st.by_id
            .get(id)
            .filter(|s| s.agent.key == *agent)
            .map(|s| (s.hub.clone(), s.agent.hostname.clone()))
    }

    /// The specs of an agent's active sessions, for the full set sent after it says hello,
    /// each with the time it has left now.
    pub fn specs_for_agent(&self, agent: &AgentKey) -> Vec<SessionSpec> {
        let st = self.lock();
        let now = Instant::now();
        st.by_id
            .values()
            .filter(|s| s.agent.key == *agent)
            .map(|s| SessionSpec {
                remaining_ms: remaining_ms(s.expires, now),
                ..s.spec.clone()
            })
            .collect()
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
            if s.agent.key.org == org {
                *counts.entry(s.agent.key.id).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn count_for_agent(&self, agent: &AgentKey) -> usize {
        let st = self.lock();
        st.by_id.values().filter(|s| s.agent.key == *agent).count()
    }

    pub fn active(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Tells the clients of an agent's sessions that it went away or came back, once per change.
    pub fn agent_link_changed(&self, agent: &AgentKey, online: bool, hostname: &str) {
        let mut st = self.lock();
        for s in st.by_id.values_mut().filter(|s| s.agent.key == *agent) {
            s.agent.hostname = hostname.to_owned();
            if s.agent_online != online {
                s.agent_online = online;
                s.hub.publish(if online {
                    Control::AgentReconnected
                } else {
                    Control::AgentDisconnected
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
            shared.audit.record(
                kind,
                Some(&session.agent.key.org),
                "host",
                serde_json::json!({"session_id": id, "agent_id": session.agent.key.id}),
            );
        }
        shared.agents.send(
            &session.agent.key,
            HostFrame::Stop {
                session_id: id.to_owned(),
            },
        );
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
    SessionView {
        id: id.to_owned(),
        agent_id: s.agent.key.id,
        agent_name: s.agent.name.clone(),
        started_at: s.started_at,
        expires_at: s.expires_at,
        created_by: s.created_by.clone(),
        clients: s.hub.clients(),
    }
}

/// Warns and expires sessions as their deadlines come, until shutdown.
async fn expire_sessions(shared: Arc<Shared>) {
    while !shared.is_shutdown() {
        match shared.fire_due() {
            Some(when) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(when.into()) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
