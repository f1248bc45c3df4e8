//! How a [`Runtime`](crate::Runtime) is set up, and the bounds it enforces by default.

use std::path::PathBuf;
use std::time::Duration;

/// Default CPU deadline for one `filter-batch` call: generous for a batch of a few thousand
/// lines (≈ 0.1–1 ms of real work), short enough that a looping plugin costs little.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_millis(100);

/// Default CPU deadline for instantiating and configuring a filter, where a guest may compile
/// a regex of up to 1 MiB.
pub const DEFAULT_CONFIGURE_DEADLINE: Duration = Duration::from_secs(1);

/// Default cap on one filter instance's linear memory: room for a regex guest and a 1 MiB
/// batch many times over, small enough that 16 plugins × a few sessions stays bounded.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// How a [`Runtime`](crate::Runtime) is built. `Default` gives the documented defaults and no
/// disk cache.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components (`.cwasm`) are kept across restarts, so a session start does
    /// not recompile. Created if missing. Must be private to this program: artifacts found
    /// there are loaded as trusted native code. `None` keeps compiled code in memory only.
    pub cache_dir: Option<PathBuf>,
    /// CPU deadline per `filter-batch` call; a filter over it is disabled for its session.
    /// Enforced at the epoch tick granularity ([`crate::runtime::EPOCH_TICK`]) and never short.
    pub call_deadline: Duration,
    /// CPU deadline for instantiating and configuring a filter.
    pub configure_deadline: Duration,
    /// Most bytes of linear memory one filter instance may hold.
    pub memory_limit: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            call_deadline: DEFAULT_CALL_DEADLINE,
            configure_deadline: DEFAULT_CONFIGURE_DEADLINE,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}
