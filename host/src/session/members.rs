//! Who runs a session: its members (one agent, or a fleet's), what each runs, and how an
//! agent joins the fleet sessions that want it when it says hello (see [`super::fleet`]).

use std::time::Instant;

use logfleet_protocol::agent::{HostFrame, SessionSpec};
use logfleet_protocol::client::Control;
use logfleet_protocol::labels::Labels;

use super::{MAX_AGENTS_PER_SESSION, MAX_SESSIONS_PER_AGENT, Session, Sessions, remaining_ms};
use crate::identity::AgentKey;
use crate::registry::AgentRef;

/// One agent of a session.
pub(super) struct Member {
    pub(super) agent: AgentRef,
    /// Whether clients were last told the agent is connected.
    pub(super) online: bool,
    /// The newest agent link whose change this member applied: links are numbered in the
    /// order they connect, so news of an older link arriving late is ignored.
    pub(super) link: u64,
    /// New filters were sent to this agent and it has not said they are in force yet. A fleet
    /// session re-sends its spec when the rate split changes; only a real filter change is
    /// announced (`filters_changed`).
    pub(super) filters_pending: bool,
}

impl Member {
    pub(super) fn new(agent: AgentRef) -> Member {
        Member {
            link: agent.link,
            online: true,
            filters_pending: false,
            agent,
        }
    }
}

impl Session {
    pub(super) fn member(&self, agent: &AgentKey) -> Option<&Member> {
        self.members.iter().find(|m| m.agent.key == *agent)
    }

    pub(super) fn has(&self, agent: &AgentKey) -> bool {
        self.member(agent).is_some()
    }

    /// What one member runs: the spec, with its share of a fleet session's rate limit.
    pub(super) fn spec_for_member(&self) -> SessionSpec {
        match &self.fleet {
            Some(fleet) => SessionSpec {
                limits: fleet.share(self.members.len()),
                ..self.spec.clone()
            },
            None => self.spec.clone(),
        }
    }

    /// `agent_id` for a per-agent control: the agent's id (always, since fleet sessions).
    pub(super) fn agent_id(agent: &AgentKey) -> Option<String> {
        Some(agent.id.to_string())
    }
}

impl Sessions {
    /// The specs of an agent's active sessions, for the full set sent after it says hello,
    /// each with the time it has left now. The agent (`me`, as the registry has it now, with
    /// its `labels`) first joins every fleet session of its org that wants it and has room:
    /// clients get `agent_joined`, and the other members their new share of the rate limit.
    pub fn specs_for_agent(&self, me: &AgentRef, labels: &Labels) -> Vec<SessionSpec> {
        let agent = &me.key;
        let mut st = self.lock();
        let mut running = st.by_id.values().filter(|s| s.has(agent)).count();
        let mut resplit = Vec::new();
        for (id, s) in st.by_id.iter_mut() {
            let Some(fleet) = &s.fleet else { continue };
            if s.org != agent.org || s.has(agent) || !fleet.target.wants(agent.id, &me.name, labels)
            {
                continue;
            }
            if s.members.len() >= MAX_AGENTS_PER_SESSION || running >= MAX_SESSIONS_PER_AGENT {
                tracing::warn!(session = %id, %agent, "agent matches a fleet session that has no room for it");
                continue;
            }
            running += 1;
            s.members.push(Member::new(me.clone()));
            s.hub.publish(Control::AgentJoined {
                agent_id: agent.id.to_string(),
            });
            tracing::info!(session = %id, %agent, members = s.members.len(), "agent joined a fleet session");
            let spec = s.spec_for_member();
            for m in s.members.iter().filter(|m| m.agent.key != *agent) {
                resplit.push((m.agent.key.clone(), spec.clone()));
            }
        }
        for (member, spec) in resplit {
            self.shared.agents.send(&member, HostFrame::Start(spec));
        }
        let now = Instant::now();
        st.by_id
            .values()
            .filter(|s| s.has(agent))
            .map(|s| SessionSpec {
                remaining_ms: remaining_ms(s.expires, now),
                ..s.spec_for_member()
            })
            .collect()
    }
}
