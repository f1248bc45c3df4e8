//! [`Runtime`]: the engine, linker, deadline ticker and compiled-component caches, shared by
//! every chain of a process.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use logfleet_protocol::Filters;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::FilterPre;
use crate::builtins::Builtin;
use crate::cache::{DiskCache, MemoryCache, Prepared};
use crate::chain::{self, Chain, PluginSource};
use crate::config::RuntimeConfig;
use crate::error::{ChainError, RuntimeError, ValidateError};
use crate::instance::Bounds;
use crate::sandbox::{self, StoreState};
use crate::ticker::EpochTicker;
use crate::validate;

/// How often the engine's epoch advances: the granularity of every CPU deadline. Each tick
/// is one relaxed atomic add; 5 ms keeps that negligible while bounding overrun.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Smallest accepted memory limit: one WebAssembly page.
const MIN_MEMORY_LIMIT: usize = 64 << 10;

/// The filter runtime of a process: a cheap, clonable handle. Chains keep a clone, so the
/// deadline ticker outlives every chain that relies on it.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// What [`Runtime`] handles share.
struct Inner {
    engine: Engine,
    /// The WIT's host imports; each component gets a clone plus its own trap stubs.
    linker: Linker<StoreState>,
    /// Bounds of plugin instances.
    bounds: Bounds,
    /// Bounds of built-in filter instances: the same memory cap, generous deadlines.
    builtin_bounds: Bounds,
    memory_cache: Mutex<MemoryCache>,
    disk_cache: Option<DiskCache>,
    stats: Stats,
    _ticker: EpochTicker,
}

/// Counters behind [`CacheStats`].
#[derive(Default)]
struct Stats {
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    reused_in_memory: AtomicU64,
}

/// How components were obtained since the runtime started; for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Compiled from WebAssembly (slow: ~1 s for a regex guest).
    pub compiled: u64,
    /// Loaded from the disk cache (~1 ms).
    pub loaded_from_disk: u64,
    /// Found ready in memory.
    pub reused_in_memory: u64,
}

/// Why a component could not be made ready to instantiate.
#[derive(Debug)]
pub(crate) enum PrepareError {
    /// No bytes were available for the digest.
    Unavailable,
    /// Bytes were given but hash to another digest.
    DigestMismatch(String),
    /// Not a component, or it does not implement the world.
    Invalid(String),
}

impl Runtime {
    /// Builds the engine (epoch interruption on, no async/concurrency support), opens the disk
    /// cache if configured, and starts the deadline ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if config.memory_limit < MIN_MEMORY_LIMIT {
            return Err(RuntimeError::Config("memory_limit must be at least 64 KiB"));
        }
        if config.call_deadline.is_zero()
            || config.builtin_call_deadline.is_zero()
            || config.configure_deadline.is_zero()
        {
            return Err(RuntimeError::Config("deadlines must be positive"));
        }
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            // Sync calls cost ~2x when stores carry concurrency state (measured).
            .concurrency_support(false);
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let linker =
            sandbox::base_linker(&engine).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let disk_cache =
            match &config.cache_dir {
                None => None,
                Some(dir) => Some(DiskCache::open(dir, &engine).map_err(|source| {
                    RuntimeError::CacheDir {
                        path: dir.clone(),
                        source,
                    }
                })?),
            };
        let ticker =
            EpochTicker::start(engine.clone(), EPOCH_TICK).map_err(RuntimeError::Ticker)?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                bounds: Bounds {
                    call_deadline: config.call_deadline,
                    configure_deadline: config.configure_deadline,
                    memory_limit: config.memory_limit,
                },
                builtin_bounds: Bounds {
                    call_deadline: config.builtin_call_deadline,
                    configure_deadline: config.configure_deadline.max(config.builtin_call_deadline),
                    memory_limit: config.memory_limit,
                },
                memory_cache: Mutex::new(MemoryCache::default()),
                disk_cache,
                stats: Stats::default(),
                _ticker: ticker,
            }),
        })
    }

    /// The built-in filters embedded in this crate.
    pub fn builtins() -> &'static [Builtin; 3] {
        &Builtin::ALL
    }

    /// Checks that `bytes` is a component implementing `logfleet:filter/filter@1.0.0` that
    /// starts within the sandbox's limits. Compiles it: CPU-heavy (up to ~1 s), so call it
    /// off the async executor (`spawn_blocking`).
    pub fn validate(&self, bytes: &[u8]) -> Result<(), ValidateError> {
        validate::validate(self, bytes)
    }

    /// Builds a session's chain: level → source → pattern → plugins in order, only the filters
    /// `filters` uses, each instantiated in its own store and configured once. Plugin bytes are
    /// asked of `plugins` only when no compiled copy is cached. CPU-heavy on a cache miss.
    pub fn chain(
        &self,
        filters: &Filters,
        plugins: &dyn PluginSource,
    ) -> Result<Chain, ChainError> {
        chain::build(self, filters, plugins)
    }

    /// Instantiates and configures each of `plugins` as a session would, then drops them: how
    /// the host refuses, before a session starts, a config a plugin rejects (or that makes it
    /// trap or time out while configuring). Uses and fills the compiled-component caches, so
    /// only the first check of a component compiles it. CPU-heavy on a cache miss: call it
    /// off the async executor.
    pub fn check_plugins(
        &self,
        plugins: &[logfleet_protocol::PluginRef],
        source: &dyn PluginSource,
    ) -> Result<(), ChainError> {
        let filters = Filters {
            plugins: plugins.to_vec(),
            ..Filters::default()
        };
        chain::build(self, &filters, source).map(drop)
    }

    /// Compiles (or loads from the disk cache) the built-ins now, so the first session does not
    /// wait for it.
    pub fn warm_up(&self) -> Result<(), ChainError> {
        for builtin in Builtin::ALL {
            self.prepare(builtin.digest(), || {
                Some(Cow::Borrowed(builtin.component()))
            })
            .map_err(|e| chain::prepare_error(builtin.name(), builtin.digest(), e))?;
        }
        Ok(())
    }

    /// How components were obtained so far.
    pub fn cache_stats(&self) -> CacheStats {
        let s = &self.inner.stats;
        CacheStats {
            compiled: s.compiled.load(Ordering::Relaxed),
            loaded_from_disk: s.loaded_from_disk.load(Ordering::Relaxed),
            reused_in_memory: s.reused_in_memory.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Bounds of plugin instances.
    pub(crate) fn bounds(&self) -> Bounds {
        self.inner.bounds
    }

    /// Bounds of built-in filter instances.
    pub(crate) fn builtin_bounds(&self) -> Bounds {
        self.inner.builtin_bounds
    }

    /// Links `component` against the sandbox and type-checks it against the world.
    pub(crate) fn link(&self, component: &Component) -> wasmtime::Result<FilterPre<StoreState>> {
        let linker = sandbox::component_linker(&self.inner.linker, &self.inner.engine, component)?;
        FilterPre::new(linker.instantiate_pre(component)?)
    }

    /// The ready-to-instantiate component for `digest`: from memory, else from the disk cache,
    /// else compiled from `bytes()` (checked against `digest`) and cached both ways.
    pub(crate) fn prepare<'a>(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> Option<Cow<'a, [u8]>>,
    ) -> Result<Arc<Prepared>, PrepareError> {
        let inner = &self.inner;
        if let Some(prepared) = self.memory_cache().get(digest) {
            inner.stats.reused_in_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(prepared);
        }
        let cached = inner
            .disk_cache
            .as_ref()
            .and_then(|disk| disk.load(&inner.engine, digest));
        let component = match cached {
            Some(component) => {
                inner.stats.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%digest, "filter component loaded from disk cache");
                component
            }
            None => {
                let bytes = bytes().ok_or(PrepareError::Unavailable)?;
                let actual = crate::cache::digest(&bytes);
                if actual != digest {
                    return Err(PrepareError::DigestMismatch(actual));
                }
                let started = std::time::Instant::now();
                let component = Component::new(&inner.engine, &bytes)
                    .map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
                inner.stats.compiled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%digest, elapsed = ?started.elapsed(), "filter component compiled");
                if let Some(disk) = &inner.disk_cache {
                    disk.store(digest, &component);
                }
                component
            }
        };
        let pre = self
            .link(&component)
            .map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
        let prepared = Arc::new(Prepared { pre });
        self.memory_cache()
            .insert(digest.to_owned(), Arc::clone(&prepared));
        Ok(prepared)
    }

    /// Keeps a component compiled elsewhere (upload validation) under `digest`, in memory and
    /// on disk, so the first session naming it does not compile it again.
    pub(crate) fn remember(
        &self,
        digest: String,
        component: &Component,
        pre: FilterPre<StoreState>,
    ) {
        if let Some(disk) = &self.inner.disk_cache {
            disk.store(&digest, component);
        }
        self.memory_cache()
            .insert(digest, Arc::new(Prepared { pre }));
    }

    /// The in-memory cache. A panic while holding the lock cannot leave the map inconsistent
    /// (every mutation is a single insert/remove), so a poisoned lock is used as is.
    fn memory_cache(&self) -> std::sync::MutexGuard<'_, MemoryCache> {
        self.inner
            .memory_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("bounds", &self.inner.bounds)
            .field("disk_cache", &self.inner.disk_cache.is_some())
            .finish_non_exhaustive()
    }
}
