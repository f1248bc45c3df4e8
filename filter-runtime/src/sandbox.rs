//! What a filter instance can touch: its store state (memory accounting, the panic message it
//! reported) and the imports the linker provides. Nothing else is linked; every other import a
//! component declares (a `wasm32-wasip2` guest declares ~14 WASI interfaces) traps when called.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, ResourceLimiter};

use crate::bindings;

/// Longest panic message kept from a guest; the rest is cut so a hostile guest cannot make
/// the host hold (or forward to clients) an arbitrarily long string.
pub(crate) const MAX_PANIC_MESSAGE_BYTES: usize = 1024;

/// Most core instances a component may create (a Rust guest creates a handful).
const MAX_CORE_INSTANCES: usize = 64;
/// Most linear memories per filter instance.
const MAX_MEMORIES: usize = 8;
/// Most tables per filter instance.
const MAX_TABLES: usize = 32;
/// Most elements in one table (each costs a pointer of host memory).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The WASI interface std's `HashMap` (and so `regex`) seeds itself from. Matched by prefix
/// so any 0.2.x a guest was built against is served.
const INSECURE_SEED_PREFIX: &str = "wasi:random/insecure-seed@0.2.";

/// Data of one filter's `Store`: everything the host tracks per instance.
pub(crate) struct StoreState {
    pub(crate) memory: MemoryLimiter,
    /// What the guest reported through `host.report-panic` before trapping.
    pub(crate) panic_message: Option<String>,
}

impl StoreState {
    pub(crate) fn new(memory_limit: usize) -> StoreState {
        StoreState {
            memory: MemoryLimiter {
                limit: memory_limit,
                used: 0,
                exceeded: false,
            },
            panic_message: None,
        }
    }
}

/// Caps the total linear memory of one instance and remembers whether the cap was hit, so a
/// resulting trap is reported as "memory limit" rather than a generic trap.
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Sum of all memories' sizes, in bytes.
    used: usize,
    pub(crate) exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.used - current.min(self.used) + desired;
        if used > self.limit {
            self.exceeded = true;
            // Trap right here rather than let `memory.grow` return -1: a Rust guest aborts on
            // allocation failure anyway, and trapping names the cause precisely.
            return Err(wasmtime::Error::msg(format!(
                "filter memory limit of {} bytes exceeded",
                self.limit
            )));
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The `types` interface has no functions; its (empty) host trait is still required.
impl bindings::logfleet::filter::types::Host for StoreState {}

impl bindings::logfleet::filter::host::Host for StoreState {
    fn report_panic(&mut self, mut message: String) {
        if message.len() > MAX_PANIC_MESSAGE_BYTES {
            let mut cut = MAX_PANIC_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.panic_message = Some(message);
    }
}

/// The linker every component starts from: the WIT's `host` interface only.
pub(crate) fn base_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    bindings::Filter::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The linker for one component: the base linker plus a seed for std's hash maps under the
/// exact name the component imports, and traps for every other import.
pub(crate) fn component_linker(
    base: &Linker<StoreState>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = base.clone();
    for (name, _) in component.component_type().imports(engine) {
        if name.starts_with(INSECURE_SEED_PREFIX) {
            // Hash-flooding resistance is moot inside a sandbox, but the seed costs nothing
            // to make random, so keep std's intent.
            let seeds = RandomState::new();
            linker
                .instance(name)?
                .func_wrap("insecure-seed", move |_, (): ()| {
                    Ok(((seeds.hash_one(0u8), seeds.hash_one(1u8)),))
                })?;
        }
    }
    linker.define_unknown_imports_as_traps(component)?;
    Ok(linker)
}

/// Whether a component may import `name`: the WIT's own interfaces and WASI, which a Rust
/// guest links whether it uses it or not (calls trap). Anything else can never work here.
pub(crate) fn import_allowed(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("logfleet:filter/")
}
