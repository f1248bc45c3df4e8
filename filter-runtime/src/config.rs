//! How a [`Runtime`](crate::Runtime) is set up, and the bounds it enforces by default.

use std::path::PathBuf;
use std::time::Duration;

/// Default CPU deadline for one plugin's `filter-batch` call: generous for a batch of a few
/// thousand lines (≈ 0.1–1 ms of real work), short enough that a looping plugin costs little.
/// A plugin over it fails, and its session ends (filters fail closed).
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_millis(100);

/// Default deadline for one call (`filter-batch`, and instantiating or configuring) of a
/// built-in filter (`level`, `source`, `pattern`). They are ours and linear-time (≈ 1 ms for a
/// full batch), so this is not a sandbox bound but a backstop against a bug: long enough that
/// a loaded or briefly descheduled machine never hits it, since a built-in over its deadline
/// ends the session like any failing filter. Deadlines are wall-clock (epoch ticks), so a CPU
/// hiccup counts against them.
pub const DEFAULT_BUILTIN_CALL_DEADLINE: Duration = Duration::from_secs(5);

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
    /// Deadline per plugin `filter-batch` call; a plugin over it fails, which ends its
    /// session. Enforced at the epoch tick granularity ([`crate::runtime::EPOCH_TICK`]) and
    /// never short.
    pub call_deadline: Duration,
    /// Deadline per built-in filter call (batches, and starting it: the longer of this and
    /// `configure_deadline`); see [`DEFAULT_BUILTIN_CALL_DEADLINE`].
    pub builtin_call_deadline: Duration,
    /// CPU deadline for instantiating and configuring a filter.
    pub configure_deadline: Duration,
    /// Most bytes of linear memory one filter instance may hold.
    pub memory_limit: usize,
    /// The fast tier: a plugin with no optimised code cached starts on code from Winch,
    /// wasmtime's baseline compiler (several times faster to compile, slower to run), while
    /// Cranelift compiles the optimised code in the background (one compile at a time, one
    /// low-priority thread); running chains switch to it between two batches. Built-ins
    /// always run optimised code. Costs a second engine. The agent turns it on; `false`
    /// (the default) compiles every component with Cranelift before it runs.
    pub fast_tier: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            call_deadline: DEFAULT_CALL_DEADLINE,
            builtin_call_deadline: DEFAULT_BUILTIN_CALL_DEADLINE,
            configure_deadline: DEFAULT_CONFIGURE_DEADLINE,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            fast_tier: false,
        }
    }
}
