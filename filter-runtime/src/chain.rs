//! One session's filters, in order, and what running them over records produces.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, PluginRef};

use crate::batch::{BatchEncoder, Survivors};
use crate::builtins::Builtin;
use crate::cache::Prepared;
use crate::error::ChainError;
use crate::instance::CallFailure;
use crate::instance::FilterInstance;
use crate::runtime::{PrepareError, Runtime};

/// Where a chain gets a plugin's component bytes when no compiled copy is cached. Any
/// `Fn(&PluginRef) -> Option<Vec<u8>>` is one. `Sync`, because a session's plugins are
/// compiled in parallel.
pub trait PluginSource: Sync {
    /// The component bytes of `plugin` (whose `digest` they must match), if available.
    fn component(&self, plugin: &PluginRef) -> Option<Vec<u8>>;
}

impl<F: Fn(&PluginRef) -> Option<Vec<u8>> + Sync> PluginSource for F {
    fn component(&self, plugin: &PluginRef) -> Option<Vec<u8>> {
        self(plugin)
    }
}

/// A record that passed every filter of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its index in the slice given to [`Chain::apply`].
    pub index: u32,
    /// Its new message, if a filter rewrote it.
    pub message: Option<String>,
}

/// A filter that failed (trap, deadline, memory cap, broken verdicts) and was disabled for
/// this chain. Reported once; the agent forwards it to clients as a `filter_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFailure {
    /// The plugin's name, or `level` / `source` / `pattern` for a built-in.
    pub plugin: String,
    /// What happened, for users.
    pub message: String,
}

/// What [`Chain::apply`] produces for one slice of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainOutput {
    /// The records every enabled filter kept, in input order.
    pub kept: Vec<Kept>,
    /// Filters disabled during this call.
    pub failures: Vec<FilterFailure>,
}

/// One filter of a chain; `instance` is `None` once it has failed (its store is dropped:
/// a trapped instance cannot be entered again).
struct Stage {
    name: String,
    builtin: bool,
    instance: Option<FilterInstance>,
}

/// A session's filter chain: level → source → pattern → plugins, each in its own store.
/// Later filters see only what earlier ones kept, with rewritten messages. Not shared between
/// sessions; `Send`, so it can move to a blocking thread.
pub struct Chain {
    /// Keeps the engine's deadline ticker alive as long as the chain.
    _runtime: Runtime,
    stages: Vec<Stage>,
    encoder: BatchEncoder,
}

impl Chain {
    /// Runs `records` through every enabled filter. Never panics on filter misbehaviour: a
    /// failing filter is disabled, reported in `failures`, and the records it had not yet
    /// decided about pass it unfiltered, as do all later batches.
    pub fn apply(&mut self, records: &[Record]) -> ChainOutput {
        let mut survivors = Survivors::all(records.len());
        let mut failures = Vec::new();

        for stage in &mut self.stages {
            if survivors.indices.is_empty() {
                break;
            }
            let Some(instance) = stage.instance.as_mut() else {
                continue;
            };
            let fields = instance.fields();
            // Survivors are compacted in place: `write` never passes the batch being read.
            let mut write = 0;
            let mut pos = 0;
            while pos < survivors.indices.len() {
                let taken = self.encoder.encode(records, &survivors, pos, fields);
                let verdicts = match instance.filter_batch(self.encoder.batch()) {
                    Ok(verdicts) => verdicts,
                    Err(failure) => {
                        failures.push(stage.failed(failure));
                        break;
                    }
                };
                // Lengths and indices were checked against the batch by `filter_batch`.
                for rewrite in verdicts.rewrites {
                    let at = pos + rewrite.index as usize;
                    if verdicts.keep[rewrite.index as usize] != 0 {
                        let index = survivors.indices[at];
                        survivors.rewrite(records.len(), index, rewrite.message);
                    }
                }
                for (offset, keep) in verdicts.keep.iter().enumerate() {
                    if *keep != 0 {
                        survivors.indices[write] = survivors.indices[pos + offset];
                        write += 1;
                    }
                }
                pos += taken;
            }
            // After a failure the records not yet decided pass on unfiltered.
            let len = survivors.indices.len();
            survivors.indices.copy_within(pos..len, write);
            survivors.indices.truncate(write + (len - pos));
        }

        let kept = std::mem::take(&mut survivors.indices)
            .into_iter()
            .map(|index| Kept {
                index,
                message: survivors.take_message(index),
            })
            .collect();
        ChainOutput { kept, failures }
    }

    /// The chain's filters in order: built-in names, then plugin names.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// The filters disabled so far.
    pub fn disabled(&self) -> impl Iterator<Item = &str> {
        self.stages
            .iter()
            .filter(|s| s.instance.is_none())
            .map(|s| s.name.as_str())
    }
}

impl Stage {
    /// Disables this filter after `failure`: its poisoned instance is dropped, the failure
    /// logged and returned for the session's clients.
    fn failed(&mut self, failure: CallFailure) -> FilterFailure {
        self.instance = None;
        let message = failure.to_string();
        if self.builtin {
            tracing::error!(filter = %self.name, %message, "built-in filter failed (a bug); disabled for this session");
        } else {
            tracing::warn!(plugin = %self.name, %message, "plugin disabled for this session");
        }
        FilterFailure {
            plugin: self.name.clone(),
            message,
        }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("filters", &self.filters().collect::<Vec<_>>())
            .field("disabled", &self.disabled().collect::<Vec<_>>())
            .finish()
    }
}

/// [`Runtime::chain`]: resolves, instantiates and configures each filter `filters` uses.
pub(crate) fn build(
    runtime: &Runtime,
    filters: &Filters,
    plugins: &dyn PluginSource,
) -> Result<Chain, ChainError> {
    let mut stages = Vec::new();
    if !filters.levels.is_empty() {
        let levels: Vec<&str> = filters.levels.iter().map(|l| l.as_str()).collect();
        let config = serde_json::json!({ "levels": levels }).to_string();
        stages.push(builtin_stage(runtime, Builtin::Level, &config)?);
    }
    if !filters.sources.is_empty() {
        let config = serde_json::json!({ "sources": filters.sources }).to_string();
        stages.push(builtin_stage(runtime, Builtin::Source, &config)?);
    }
    if let Some(pattern) = &filters.pattern {
        let config = serde_json::json!({ "pattern": pattern }).to_string();
        stages.push(builtin_stage(runtime, Builtin::Pattern, &config)?);
    }
    let mut ready = prepare_in_parallel(runtime, &filters.plugins, plugins);
    for plugin in &filters.plugins {
        let prepared = ready.remove(plugin.digest.as_str());
        stages.push(plugin_stage(runtime, plugin, plugins, prepared)?);
    }
    Ok(Chain {
        _runtime: runtime.clone(),
        stages,
        encoder: BatchEncoder::new(),
    })
}

fn builtin_stage(runtime: &Runtime, builtin: Builtin, config: &str) -> Result<Stage, ChainError> {
    let prepared = runtime
        .prepare(builtin.digest(), || {
            Some(Cow::Borrowed(builtin.component()))
        })
        .map_err(|e| prepare_error(builtin.name(), builtin.digest(), e))?;
    start(runtime, builtin.name(), true, &prepared, config)
}

/// Makes the components of several distinct plugins ready at once, a thread each: a cold
/// plugin compiles for up to a second, much of it single-threaded, so a session with two new
/// plugins waits for the slowest rather than the sum. With one plugin, nothing is done here.
fn prepare_in_parallel<'p>(
    runtime: &Runtime,
    plugins: &'p [PluginRef],
    source: &dyn PluginSource,
) -> HashMap<&'p str, Result<Arc<Prepared>, PrepareError>> {
    let mut distinct: Vec<&PluginRef> = Vec::new();
    for plugin in plugins {
        if !plugin.digest.is_empty() && distinct.iter().all(|p| p.digest != plugin.digest) {
            distinct.push(plugin);
        }
    }
    if distinct.len() < 2 {
        return HashMap::new();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = distinct
            .iter()
            .map(|plugin| {
                let work = move || {
                    runtime.prepare(&plugin.digest, || source.component(plugin).map(Cow::Owned))
                };
                (plugin.digest.as_str(), scope.spawn(work))
            })
            .collect();
        // A thread that panicked leaves its plugin to be prepared again in order (and its
        // failure reported there).
        handles
            .into_iter()
            .filter_map(|(digest, handle)| handle.join().ok().map(|r| (digest, r)))
            .collect()
    })
}

fn plugin_stage(
    runtime: &Runtime,
    plugin: &PluginRef,
    source: &dyn PluginSource,
    ready: Option<Result<Arc<Prepared>, PrepareError>>,
) -> Result<Stage, ChainError> {
    let name = plugin.name.as_str();
    let prepared = if let Some(ready) = ready {
        ready.map_err(|e| prepare_error(name, &plugin.digest, e))?
    } else if plugin.digest.is_empty() {
        // No digest from the host: name the component by its content.
        let bytes = source
            .component(plugin)
            .ok_or_else(|| prepare_error(name, "", PrepareError::Unavailable))?;
        let digest = crate::cache::digest(&bytes);
        runtime
            .prepare(&digest, || Some(Cow::Owned(bytes)))
            .map_err(|e| prepare_error(name, &digest, e))?
    } else {
        runtime
            .prepare(&plugin.digest, || source.component(plugin).map(Cow::Owned))
            .map_err(|e| prepare_error(name, &plugin.digest, e))?
    };
    start(runtime, name, false, &prepared, &plugin.config)
}

/// Instantiates and configures one filter.
fn start(
    runtime: &Runtime,
    name: &str,
    builtin: bool,
    prepared: &crate::cache::Prepared,
    config: &str,
) -> Result<Stage, ChainError> {
    let startup = |failure: crate::instance::CallFailure| ChainError::Startup {
        plugin: name.to_owned(),
        message: failure.to_string(),
    };
    let mut instance =
        FilterInstance::start(runtime.engine(), prepared, runtime.bounds()).map_err(startup)?;
    instance
        .configure(config)
        .map_err(startup)?
        .map_err(|message| ChainError::Configure {
            plugin: name.to_owned(),
            message,
        })?;
    Ok(Stage {
        name: name.to_owned(),
        builtin,
        instance: Some(instance),
    })
}

pub(crate) fn prepare_error(name: &str, digest: &str, error: PrepareError) -> ChainError {
    match error {
        PrepareError::Unavailable => ChainError::PluginUnavailable {
            plugin: name.to_owned(),
            digest: digest.to_owned(),
        },
        PrepareError::DigestMismatch(actual) => ChainError::DigestMismatch {
            plugin: name.to_owned(),
            expected: digest.to_owned(),
            actual,
        },
        PrepareError::Invalid(message) => ChainError::Invalid {
            plugin: name.to_owned(),
            message,
        },
    }
}
