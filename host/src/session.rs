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
use logfleet_protocol::client::{Control, EndReason};
use logfleet_protocol::rest::{SessionSummary, WARNING_SECONDS};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Tuning;
use crate::fanout::{Hub, HubBounds};
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
    tuning: Tuning,
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Session>,
    /// The next event of each session: its warning, then its expiry.
    deadlines: BTreeSet<(Instant, String)>,
    shutdown: bool,
}

/// One active session.
struct Session {
    org: String,
    agent: AgentRef,
    created_by: String,
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

/// What a new session is made of.
pub struct NewSession {
    pub org: String,
    pub created_by: String,
    pub agent: AgentRef,
    pub filters: Filters,
    pub limits: RateLimits,
    pub timeout: Duration,
}

impl Sessions {
    /// Creates the handle and spawns its expiry task, which ends with [`Sessions::shutdown`].
    pub fn new(agents: Agents, tuning: Tuning) -> Sessions {
        let sessions = Sessions {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                agents,
                tuning,
            }),
        };
        tokio::spawn(expire_sessions(sessions.shared.clone()));
        sessions
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Starts a session and tells its agent.
    pub fn start(&self, new: NewSession) -> SessionView {
        let id = format!("sess_{}", Uuid::new_v4().simple());
        let now = Instant::now();
        let started_at = Utc::now();
        let expires = now + new.timeout;
        let expires_at = started_at + new.timeout;
        let spec = SessionSpec {
            id: id.clone(),
            filters: new.filters,
            limits: new.limits,
            expires_at_ms: expires_at.timestamp_millis(),
        };
        let session = Session {
            org: new.org,
            agent: new.agent,
            created_by: new.created_by,
            spec: spec.clone(),
            started_at,
            expires_at,
            expires,
            warned: false,
            agent_online: true,
            hub: Arc::new(Hub::new(HubBounds::from(&self.shared.tuning))),
        };
        let view = view(&id, &session);
        let agent_id = session.agent.id;
        {
            let mut st = self.lock();
            let deadline = session.next_deadline();
            let earliest = st.deadlines.first().is_none_or(|(t, _)| deadline < *t);
            st.deadlines.insert((deadline, id.clone()));
            st.by_id.insert(id.clone(), session);
            if earliest {
                self.shared.wake.notify_one();
            }
        }
        // Offline or stuck: the agent gets the session in the full set when it (re)connects.
        self.shared.agents.send(agent_id, HostFrame::Start(spec));
        tracing::info!(session = %id, agent = %agent_id, "session started");
        view
    }

    /// Stops a session of `org` at a user's request.
    pub fn stop(&self, org: &str, id: &str) -> Option<SessionView> {
        let mut st = self.lock();
        if st.by_id.get(id).is_none_or(|s| s.org != org) {
            return None;
        }
        let session = st.end(id, EndReason::Stopped, &self.shared.agents)?;
        Some(view(id, &session))
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

    /// The hub of a session of this agent, for the agent's lines. Another agent's session
    /// answers `None`: an agent can only feed its own sessions.
    pub fn agent_hub(&self, agent_id: Uuid, id: &str) -> Option<(Arc<Hub>, String)> {
        let st = self.lock();
        st.by_id
            .get(id)
            .filter(|s| s.agent.id == agent_id)
            .map(|s| (s.hub.clone(), s.agent.hostname.clone()))
    }

    /// The specs of an agent's active sessions, for the full set sent after it says hello.
    pub fn specs_for_agent(&self, agent_id: Uuid) -> Vec<SessionSpec> {
        let st = self.lock();
        st.by_id
            .values()
            .filter(|s| s.agent.id == agent_id)
            .map(|s| s.spec.clone())
            .collect()
    }

    /// Active sessions per agent, for listing many agents at once. Taken before the agent
    /// registry's lock, never under it: ending a session locks the registry while holding
    /// this one, so the other order could deadlock.
    pub fn counts_by_agent(&self) -> HashMap<Uuid, usize> {
        let mut counts = HashMap::new();
        for s in self.lock().by_id.values() {
            *counts.entry(s.agent.id).or_insert(0) += 1;
        }
        counts
    }

    pub fn count_for_agent(&self, agent_id: Uuid) -> usize {
        let st = self.lock();
        st.by_id.values().filter(|s| s.agent.id == agent_id).count()
    }

    pub fn active(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Tells the clients of an agent's sessions that it went away or came back, once per change.
    pub fn agent_link_changed(&self, agent_id: Uuid, online: bool, hostname: &str) {
        let mut st = self.lock();
        for s in st.by_id.values_mut().filter(|s| s.agent.id == agent_id) {
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
            st.end(&id, EndReason::Shutdown, &self.shared.agents);
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
                st.end(&id, EndReason::Timeout, &self.agents);
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
    fn end(&mut self, id: &str, reason: EndReason, agents: &Agents) -> Option<Session> {
        let session = self.by_id.remove(id)?;
        self.deadlines
            .remove(&(session.next_deadline(), id.to_owned()));
        session.hub.end(reason);
        agents.send(
            session.agent.id,
            HostFrame::Stop {
                session_id: id.to_owned(),
            },
        );
        tracing::info!(session = %id, ?reason, "session ended");
        Some(session)
    }
}

fn view(id: &str, s: &Session) -> SessionView {
    SessionView {
        id: id.to_owned(),
        agent_id: s.agent.id,
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
