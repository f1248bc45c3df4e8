//! Fleet sessions: one session on many agents, picked by a list of ids or by a [`Selector`].
//!
//! A fleet session runs on every matching agent that is online when it starts, and on every
//! agent that comes online (or reconnects carrying matching labels) while it runs: such an
//! agent joins at its hello, when the host sends it its full session set, and clients get
//! `agent_joined`. Membership only grows: an agent whose labels change keeps running the
//! session until it ends (a revoked agent leaves it).
//!
//! The session's rate limit is a total: each member runs `total / members` (at least 1 line
//! and 1 byte per second), re-split and re-sent to every member when one joins, so the
//! agents together never ship more than the limit the user set.
//!
//! Agents number their records per agent (`seq`), so the hub of a fleet session gives every
//! record the session's own `seq` as it publishes it (one counter, under the hub's lock, in
//! the order clients get them) and keeps the agent's as `agent_seq`: resume (`?since_seq=`)
//! and client de-duplication then work as for one agent. Single-agent sessions keep the
//! agent's `seq`, exactly as before.

use std::collections::BTreeSet;

use logfleet_protocol::agent::RateLimits;
use logfleet_protocol::labels::{Labels, Selector};
use uuid::Uuid;

/// Agents one fleet session runs on at most: each costs the host a member entry and its
/// share of the rate limit shrinks with every one. A selector matching more online agents at
/// start is refused (`409 too_many_agents`); agents that would join beyond it do not.
pub const MAX_AGENTS_PER_SESSION: usize = 256;

/// Which agents a fleet session is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// These agents (the ids `agent_ids` resolved to).
    Agents(BTreeSet<Uuid>),
    /// Every agent of the org the selector matches.
    Selector(Selector),
}

impl Target {
    /// Whether the agent `id` named `name` with `labels` belongs to the session. Only agents
    /// of the session's org are ever asked.
    pub fn wants(&self, id: Uuid, name: &str, labels: &Labels) -> bool {
        match self {
            Target::Agents(ids) => ids.contains(&id),
            Target::Selector(selector) => selector.matches(name, labels),
        }
    }
}

/// What makes a session a fleet session: its target and its total rate limit.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub target: Target,
    pub total: RateLimits,
}

impl Fleet {
    /// What each of `members` agents runs so that together they stay within the total.
    /// 0 (no limit on the agent) stays 0.
    pub fn share(&self, members: usize) -> RateLimits {
        let n = u64::try_from(members.max(1)).unwrap_or(u64::MAX);
        let split = |total: u64| if total == 0 { 0 } else { (total / n).max(1) };
        RateLimits {
            lines_per_second: u32::try_from(split(u64::from(self.total.lines_per_second)))
                .unwrap_or(u32::MAX),
            bytes_per_second: split(self.total.bytes_per_second),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members together never get more than the session's total rate limit.
    #[test]
    fn the_total_rate_is_split_across_members() {
        let fleet = Fleet {
            target: Target::Agents(BTreeSet::new()),
            total: RateLimits {
                lines_per_second: 2_000,
                bytes_per_second: 0,
            },
        };
        assert_eq!(fleet.share(1).lines_per_second, 2_000);
        assert_eq!(fleet.share(3).lines_per_second, 666);
        assert_eq!(fleet.share(0).lines_per_second, 2_000);
        assert_eq!(fleet.share(5_000).lines_per_second, 1);
        assert_eq!(fleet.share(3).bytes_per_second, 0, "no limit stays none");
    }

    /// An id list wants exactly its agents; a selector wants what it matches.
    #[test]
    fn targets_pick_by_id_or_selector() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let listed = Target::Agents(BTreeSet::from([a]));
        assert!(listed.wants(a, "x", &Labels::new()));
        assert!(!listed.wants(b, "x", &Labels::new()));
        let selected = Target::Selector(Selector {
            labels: Labels::from([("env".to_owned(), "prod".to_owned())]),
            name: None,
        });
        let prod = Labels::from([("env".to_owned(), "prod".to_owned())]);
        assert!(selected.wants(b, "edge", &prod));
        assert!(!selected.wants(b, "edge", &Labels::new()));
    }
}
