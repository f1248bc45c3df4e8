//! Who an agent is: its organisation and its id, together.
//!
//! An agent id (the `sub` of its token) is a UUID the org's token minter chose, so nothing
//! stops another org from minting a token with the same UUID. Keying anything by the UUID
//! alone would let that token take over the first agent's link and feed its sessions; every
//! map, lookup and check on the host uses an [`AgentKey`] instead.

use std::fmt;

use uuid::Uuid;

/// An agent's identity on the host: the same UUID in another org is another agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentKey {
    pub org: String,
    pub id: Uuid,
}

impl AgentKey {
    pub fn new(org: impl Into<String>, id: Uuid) -> AgentKey {
        AgentKey {
            org: org.into(),
            id,
        }
    }
}

impl fmt::Display for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.id)
    }
}
