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
use crate::tiers::{self, UpgradeJob, UpgradeSlot, Upgrades};
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
    /// Cranelift: the code every chain ends up running, and the only tier of built-ins.
    optimized: Compiler,
    /// Winch, when the fast tier is on: a never-seen plugin starts on its code while
    /// `upgrades` compiles the optimised code in the background.
    baseline: Option<Compiler>,
    /// The background Cranelift compiles of plugins running on baseline code.
    upgrades: Option<Upgrades>,
    /// Bounds of plugin instances.
    bounds: Bounds,
    /// Bounds of built-in filter instances: the same memory cap, generous deadlines.
    builtin_bounds: Bounds,
    stats: Stats,
    _ticker: EpochTicker,
}

/// One compiler tier's engine, the WIT's host imports linked for it (each component gets a
/// clone plus its own trap stubs), and the components it compiled. Components and
/// pre-instances of one engine cannot run in another, so each tier has its own of each.
pub(crate) struct Compiler {
    tier: Tier,
    engine: Engine,
    linker: Linker<StoreState>,
    memory_cache: Mutex<MemoryCache>,
    disk_cache: Option<DiskCache>,
}

/// Counters behind [`CacheStats`].
#[derive(Default)]
struct Stats {
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    reused_in_memory: AtomicU64,
    compiled_baseline: AtomicU64,
}

/// How components were obtained since the runtime started; for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Compiled from WebAssembly with the optimising compiler (slow: ~1 s for a regex
    /// guest), in the foreground or in the background.
    pub compiled: u64,
    /// Loaded from the disk cache (~1 ms), either tier.
    pub loaded_from_disk: u64,
    /// Found ready in memory, either tier.
    pub reused_in_memory: u64,
    /// Compiled with the baseline compiler (the fast tier) so a session could start at once.
    pub compiled_baseline: u64,
}

/// Which compiler made a component's native code. Both run the same WebAssembly under the
/// same sandbox (memory cap, epoch deadlines, the same imports); they differ in how long
/// compiling takes and how fast the result runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Winch, wasmtime's single-pass baseline compiler: compiles several times faster than
    /// Cranelift, runs slower. Only plugins start here, and only until `Optimized` is ready.
    Baseline,
    /// Cranelift, the optimising compiler.
    Optimized,
}

/// A component ready to instantiate, and, when it is baseline code, where the optimised
/// code will appear once the background compile finishes.
pub(crate) struct Ready {
    pub(crate) prepared: Arc<Prepared>,
    pub(crate) upgrade: Option<Arc<UpgradeSlot>>,
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
    /// Builds the engines (Cranelift; and Winch with `config.fast_tier`), opens the disk cache
    /// if configured, and starts the deadline ticker thread (and, with the fast tier, the
    /// background compiler thread).
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
        let optimized = Compiler::new(Tier::Optimized, &config)?;
        let baseline = if config.fast_tier {
            Some(Compiler::new(Tier::Baseline, &config)?)
        } else {
            None
        };
        let mut engines = vec![optimized.engine.clone()];
        engines.extend(baseline.iter().map(|b| b.engine.clone()));
        let ticker = EpochTicker::start(engines, EPOCH_TICK).map_err(RuntimeError::Ticker)?;
        let (upgrades, queue) = if baseline.is_some() {
            let (upgrades, queue) = Upgrades::new();
            (Some(upgrades), Some(queue))
        } else {
            (None, None)
        };
        let inner = Arc::new(Inner {
            optimized,
            baseline,
            upgrades,
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
            stats: Stats::default(),
            _ticker: ticker,
        });
        if let Some(queue) = queue {
            let weak = Arc::downgrade(&inner);
            tiers::start_worker(queue, move |job| {
                // The runtime is gone: nobody is left to run the optimised code.
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                Runtime { inner }.upgrade(job);
                true
            })
            .map_err(RuntimeError::Worker)?;
        }
        Ok(Runtime { inner })
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
            compiled_baseline: s.compiled_baseline.load(Ordering::Relaxed),
        }
    }

    /// The optimising tier's engine: uploads are validated with it.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.optimized.engine
    }

    /// Bounds of plugin instances.
    pub(crate) fn bounds(&self) -> Bounds {
        self.inner.bounds
    }

    /// Bounds of built-in filter instances.
    pub(crate) fn builtin_bounds(&self) -> Bounds {
        self.inner.builtin_bounds
    }

    /// Links `component` (compiled by the optimising tier) against the sandbox and
    /// type-checks it against the world.
    pub(crate) fn link(&self, component: &Component) -> wasmtime::Result<FilterPre<StoreState>> {
        self.inner.optimized.link(component)
    }

    /// The optimised, ready-to-instantiate component for `digest`: from memory, else from the
    /// disk cache, else compiled from `bytes()` (checked against `digest`) and cached both
    /// ways. Built-ins always come from here.
    pub(crate) fn prepare<'a>(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> Option<Cow<'a, [u8]>>,
    ) -> Result<Arc<Prepared>, PrepareError> {
        let optimized = &self.inner.optimized;
        if let Some(prepared) = self.cached(optimized, digest)? {
            return Ok(prepared);
        }
        let bytes = checked(digest, bytes)?;
        self.compile(optimized, digest, &bytes, true)
            .map(|(p, _)| p)
    }

    /// A plugin's component for a session about to start: the optimised code if it is
    /// cached; else, with the fast tier, baseline code (cached, or compiled now: several times
    /// faster than optimising) plus a background compile of the optimised code the session's
    /// chain switches to when it is ready; else the optimised code compiled now.
    pub(crate) fn prepare_plugin<'a>(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> Option<Cow<'a, [u8]>>,
    ) -> Result<Ready, PrepareError> {
        let inner = &self.inner;
        let optimized = &inner.optimized;
        if let Some(prepared) = self.cached(optimized, digest)? {
            return Ok(Ready {
                prepared,
                upgrade: None,
            });
        }
        let (Some(baseline), Some(upgrades)) = (&inner.baseline, &inner.upgrades) else {
            let bytes = checked(digest, bytes)?;
            return Ok(Ready {
                prepared: self
                    .compile(optimized, digest, &bytes, true)
                    .map(|(p, _)| p)?,
                upgrade: None,
            });
        };
        // The background compile needs the bytes even when the baseline code is cached.
        let bytes = checked(digest, bytes)?;
        let prepared = match self.cached(baseline, digest)? {
            Some(prepared) => prepared,
            None => match self.compile(baseline, digest, &bytes, true).map(|(p, _)| p) {
                Ok(prepared) => prepared,
                Err(PrepareError::Invalid(message)) => {
                    // Winch does not implement every instruction Cranelift does (parts of
                    // SIMD): such a plugin simply starts on optimised code.
                    tracing::info!(%digest, %message, "baseline compiler refused the plugin; compiling it optimised");
                    return Ok(Ready {
                        prepared: self
                            .compile(optimized, digest, &bytes, true)
                            .map(|(p, _)| p)?,
                        upgrade: None,
                    });
                }
                Err(e) => return Err(e),
            },
        };
        let upgrade = upgrades.request(digest, bytes.into_owned());
        Ok(Ready { prepared, upgrade })
    }

    /// The background compile of one plugin's optimised code: runs on the upgrade worker.
    fn upgrade(&self, job: UpgradeJob) {
        let optimized = &self.inner.optimized;
        let digest = job.digest.clone();
        if let Ok(Some(prepared)) = self.cached(optimized, &digest) {
            job.finish(Some(prepared));
        } else {
            match self.compile(optimized, &digest, &job.bytes, false) {
                Ok((prepared, component)) => {
                    // Chains may switch before the artifact is on disk: an artifact on disk
                    // means the code is already in chains' reach.
                    job.finish(Some(prepared));
                    if let Some(disk) = &optimized.disk_cache {
                        disk.store(&digest, &component);
                    }
                }
                Err(e) => {
                    tracing::warn!(%digest, error = ?e, "optimising a plugin failed; its sessions keep the baseline code");
                    job.finish(None);
                    return;
                }
            }
        }
        // Sessions from now on start on the optimised code: the baseline code is only kept
        // by the chains still running it.
        if let Some(baseline) = &self.inner.baseline {
            baseline.memory_cache().remove(&digest);
        }
    }

    /// `digest`'s component of `compiler`, from memory or else from its disk cache.
    fn cached(
        &self,
        compiler: &Compiler,
        digest: &str,
    ) -> Result<Option<Arc<Prepared>>, PrepareError> {
        let stats = &self.inner.stats;
        if let Some(prepared) = compiler.memory_cache().get(digest) {
            stats.reused_in_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(prepared));
        }
        let Some(component) = compiler
            .disk_cache
            .as_ref()
            .and_then(|disk| disk.load(&compiler.engine, digest))
        else {
            return Ok(None);
        };
        stats.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%digest, tier = ?compiler.tier, "filter component loaded from disk cache");
        compiler.keep(digest, &component, false).map(Some)
    }

    /// Compiles `bytes` (already checked against `digest`) with `compiler`, caching the result
    /// in memory, and on disk if `store`.
    fn compile(
        &self,
        compiler: &Compiler,
        digest: &str,
        bytes: &[u8],
        store: bool,
    ) -> Result<(Arc<Prepared>, Component), PrepareError> {
        let started = std::time::Instant::now();
        let component = Component::new(&compiler.engine, bytes)
            .map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
        let counter = match compiler.tier {
            Tier::Optimized => &self.inner.stats.compiled,
            Tier::Baseline => &self.inner.stats.compiled_baseline,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%digest, tier = ?compiler.tier, elapsed = ?started.elapsed(), "filter component compiled");
        let prepared = compiler.keep(digest, &component, store)?;
        Ok((prepared, component))
    }

    /// Keeps a component compiled elsewhere (upload validation) under `digest`, in memory and
    /// on disk, so the first session naming it does not compile it again.
    pub(crate) fn remember(
        &self,
        digest: String,
        component: &Component,
        pre: FilterPre<StoreState>,
    ) {
        let optimized = &self.inner.optimized;
        if let Some(disk) = &optimized.disk_cache {
            disk.store(&digest, component);
        }
        optimized
            .memory_cache()
            .insert(digest, Arc::new(Prepared { pre }));
    }
}

impl Compiler {
    /// The engine of `tier`: epoch interruption on (both compilers emit the epoch checks the
    /// call deadlines rely on), no async/concurrency support (sync calls cost ~2x when stores
    /// carry concurrency state, measured), and the disk cache of `config` if any.
    fn new(tier: Tier, config: &RuntimeConfig) -> Result<Compiler, RuntimeError> {
        let engine_error = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .concurrency_support(false);
        match tier {
            Tier::Baseline => {
                wasm.strategy(wasmtime::Strategy::Winch);
            }
            Tier::Optimized => {
                wasm.strategy(wasmtime::Strategy::Cranelift);
                if config.fast_tier {
                    // With the fast tier, optimising happens in the background while the
                    // session already streams: one thread, so it never takes both cores
                    // from the agent's own work.
                    wasm.parallel_compilation(false);
                }
            }
        }
        let engine = Engine::new(&wasm).map_err(engine_error)?;
        let linker = sandbox::base_linker(&engine).map_err(engine_error)?;
        let disk_cache = match &config.cache_dir {
            None => None,
            Some(dir) => Some(DiskCache::open(dir, &engine, tier).map_err(|source| {
                RuntimeError::CacheDir {
                    path: dir.clone(),
                    source,
                }
            })?),
        };
        Ok(Compiler {
            tier,
            engine,
            linker,
            memory_cache: Mutex::new(MemoryCache::default()),
            disk_cache,
        })
    }

    fn link(&self, component: &Component) -> wasmtime::Result<FilterPre<StoreState>> {
        let linker = sandbox::component_linker(&self.linker, &self.engine, component)?;
        FilterPre::new(linker.instantiate_pre(component)?)
    }

    /// Links `component` and keeps it in memory (and on disk if `store`).
    fn keep(
        &self,
        digest: &str,
        component: &Component,
        store: bool,
    ) -> Result<Arc<Prepared>, PrepareError> {
        let pre = self
            .link(component)
            .map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
        let prepared = Arc::new(Prepared { pre });
        self.memory_cache()
            .insert(digest.to_owned(), Arc::clone(&prepared));
        if store && let Some(disk) = &self.disk_cache {
            disk.store(digest, component);
        }
        Ok(prepared)
    }

    /// The in-memory cache. A panic while holding the lock cannot leave the map inconsistent
    /// (every mutation is a single insert/remove), so a poisoned lock is used as is.
    fn memory_cache(&self) -> std::sync::MutexGuard<'_, MemoryCache> {
        self.memory_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `bytes()`, checked to hash to `digest`.
fn checked<'a>(
    digest: &str,
    bytes: impl FnOnce() -> Option<Cow<'a, [u8]>>,
) -> Result<Cow<'a, [u8]>, PrepareError> {
    let bytes = bytes().ok_or(PrepareError::Unavailable)?;
    let actual = crate::cache::digest(&bytes);
    if actual != digest {
        return Err(PrepareError::DigestMismatch(actual));
    }
    Ok(bytes)
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("bounds", &self.inner.bounds)
            .field("disk_cache", &self.inner.optimized.disk_cache.is_some())
            .field("fast_tier", &self.inner.baseline.is_some())
            .finish_non_exhaustive()
    }
}
