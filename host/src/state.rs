//! The state every handler shares, in one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use logfleet_filter_runtime::Runtime;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::audit::Audit;
use crate::auth::Auth;
use crate::config::Config;
use crate::enrollment::Enrollments;
use crate::plugins::Plugins;
use crate::registry::Agents;
use crate::session::Sessions;

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Auth,
    pub agents: Agents,
    pub sessions: Sessions,
    pub enrollments: Enrollments,
    pub audit: Audit,
    pub stats: Arc<Stats>,
    /// What agents sent, per org and agent, for `GET /api/v1/usage` and the org budget.
    pub usage: crate::usage::Usage,
    pub plugins: Plugins,
    /// Validates plugin uploads, and plugin configs at session start
    /// ([`crate::filter_check`]); caches compiled components by digest, in memory and under
    /// `<data-dir>/compiled`.
    pub runtime: Runtime,
    /// Bounds how many uploads and plugin-config checks run at once (see
    /// [`MAX_CONCURRENT_VALIDATIONS`]).
    pub validations: Arc<Semaphore>,
    /// Flips to `true` when the host shuts down; long-lived connections watch it.
    pub shutdown: watch::Receiver<bool>,
    /// Held by every long-lived connection task; shutdown waits until all are dropped
    /// (mini-redis's `shutdown_complete` pattern).
    pub connection_guard: mpsc::Sender<()>,
}

/// Plugin uploads validated and session plugin configs checked at once; each may compile for
/// up to a second of a core.
pub const MAX_CONCURRENT_VALIDATIONS: usize = 2;

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub log_lines_received: AtomicU64,
    pub agent_drops_reported: AtomicU64,
    /// Log lines an agent sent again that the session already had (a restarted agent
    /// resending from its disk buffer), not published twice.
    pub duplicate_lines_skipped: AtomicU64,
    pub client_messages_dropped: AtomicU64,
    pub clients_closed_slow: AtomicU64,
    pub agent_connections: AtomicU64,
    /// Agent links closed for breaking a limit on what an agent sends (code 4011).
    pub agent_limit_violations: AtomicU64,
    /// Agent links dropped because a write to the agent did not finish in time.
    pub agent_write_timeouts: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
