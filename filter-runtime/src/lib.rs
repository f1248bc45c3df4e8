//! The LogFleet filter runtime: runs log filters — the built-in `level`, `source` and
//! `pattern` filters and user plugins — as sandboxed WebAssembly components (wasmtime), and
//! validates plugin uploads against the `logfleet:filter@1.0.0` world (`wit/filter.wit`).
//!
//! The agent builds one [`Chain`] per session with [`Runtime::chain`] and feeds it batches of
//! records with [`Chain::apply`]; the host checks uploads with [`Runtime::validate`].
//!
//! Where things live:
//! - [`config`]: [`RuntimeConfig`] and the default bounds (deadline, memory cap, cache size).
//! - [`runtime`]: [`Runtime`], the shared handle: engine, linker, epoch ticker, caches.
//! - [`chain`]: [`Chain`], one session's filters in order, and its output types.
//! - [`builtins`]: [`Builtin`], the three built-in components embedded in this crate.
//! - [`error`]: [`RuntimeError`], [`ValidateError`], [`ChainError`].
//! - `bindings`: host bindings generated from the WIT world.
//! - `sandbox`: per-instance store state — memory limiter, the `host` import, the linker.
//! - `instance`: one configured filter instance and how its calls fail.
//! - `batch`: encoding records into the WIT's columnar batch.
//! - `cache`: compiled components, in memory and on disk.
//! - `ticker`: the thread that advances the engines' epochs for call deadlines.
//! - `tiers`: the fast tier's background optimising compiles and the slots chains watch.
//! - `validate`: checks on an uploaded component.
//! - [`wasi`]: the WASI a filter sees: linked so standard toolchains' components run, every door shut.

mod batch;
mod bindings;
pub mod builtins;
mod cache;
pub mod chain;
pub mod config;
pub mod error;
mod instance;
pub mod runtime;
mod sandbox;
mod ticker;
mod tiers;
mod validate;
pub mod wasi;

pub use builtins::Builtin;
pub use cache::write_atomically;
pub use chain::{Chain, ChainOutput, FilterFailure, Kept, PluginSource};
pub use config::RuntimeConfig;
pub use error::{ChainError, RuntimeError, ValidateError};
pub use runtime::{CacheStats, Runtime, Tier};
pub use validate::MAX_COMPONENT_BYTES;

/// `sha256:<hex>` of `bytes`: how plugins are named by content everywhere in LogFleet.
pub fn digest(bytes: &[u8]) -> String {
    cache::digest(bytes)
}

/// The agent moves chains to blocking threads and shares the runtime between sessions.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<Chain>();
    send::<Runtime>();
    sync::<Runtime>();
};
