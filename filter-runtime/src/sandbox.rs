//! What a filter instance can touch: its store state (memory accounting, the panic message it
//! reported, its deny-all WASI) and the imports the linker provides: the WIT's `host`
//! interface and WASI p2 as `wasi` configures it. Any other import traps when called.

use std::sync::Arc;

use wasmtime::component::{
    Component, HasSelf, Linker, LinkerInstance, ResourceType, types::ComponentItem,
};
use wasmtime::{Engine, ResourceLimiter};

use crate::bindings;
use crate::wasi::{self, GuestWasi};

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

/// Data of one filter's `Store`: everything the host tracks per instance.
pub(crate) struct StoreState {
    pub(crate) memory: MemoryLimiter,
    /// What the guest reported through `host.report-panic` before trapping.
    pub(crate) panic_message: Option<String>,
    /// The guest's WASI: no files, sockets or environment; output goes to the log.
    pub(crate) wasi: GuestWasi,
}

impl StoreState {
    /// `label` names the filter in the log lines its output becomes.
    pub(crate) fn new(memory_limit: usize, label: Arc<str>) -> StoreState {
        StoreState {
            memory: MemoryLimiter {
                limit: memory_limit,
                used: 0,
                exceeded: false,
            },
            panic_message: None,
            wasi: GuestWasi::new(label),
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

/// The linker every component starts from: the WIT's `host` interface and the deny-all WASI.
pub(crate) fn base_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    bindings::Filter::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;
    wasi::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The linker for one component: the base linker plus traps for every import it does not
/// serve (a WASI interface newer than ours, `wasi:http`, ...), so such a component still runs
/// until it calls one. (Not `Linker::define_unknown_imports_as_traps`: it stubs a WASI
/// interface imported at an older patch under its exact name, shadowing the real one.)
pub(crate) fn component_linker(
    base: &Linker<StoreState>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = base.clone();
    for (name, item) in component.component_type().imports(engine) {
        if wasi::provides(name) || name.starts_with("logfleet:filter/") {
            continue;
        }
        let mut root = linker.root();
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut stubs = root.instance(name)?;
                for (export, item) in instance.exports(engine) {
                    stub(&mut stubs, &format!("{name}#{export}"), export, &item.ty)?;
                }
            }
            ty => stub(&mut root, name, name, &ty)?,
        }
    }
    Ok(linker)
}

/// Defines `item` (named `export` in `instance`, `full` in messages) as a trap when it is a
/// function, an opaque host resource when it is a resource.
fn stub(
    instance: &mut LinkerInstance<'_, StoreState>,
    full: &str,
    export: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let message = format!("unknown import: `{full}` is not provided to filters");
            instance.func_new(export, move |_, _, _, _| {
                Err(wasmtime::Error::msg(message.clone()))
            })
        }
        ComponentItem::Resource(_) => {
            instance.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))
        }
        _ => Ok(()),
    }
}

/// Whether a component may import `name`: the WIT's own interfaces and WASI, which standard
/// toolchains link whether the filter uses it or not. Anything else can never work here.
pub(crate) fn import_allowed(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("logfleet:filter/")
}
