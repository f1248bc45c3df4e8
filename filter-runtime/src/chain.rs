//! One session's filters, in order, and what running them over records produces.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use logfleet_protocol::agent::Record;
use logfleet_protocol::{Filters, PluginRef};

use crate::batch::{BatchEncoder, Survivors};
use crate::builtins::Builtin;
use crate::error::ChainError;
use crate::instance::CallFailure;
use crate::instance::FilterInstance;
use crate::runtime::{PrepareError, Ready, Runtime, Tier};
use crate::tiers::UpgradeSlot;

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

/// The filter that failed (trap, deadline, memory cap, broken verdicts) and so ended its
/// chain. The agent forwards it to the session's clients as a `filter_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFailure {
    /// The plugin's name, or `level` / `source` / `pattern` for a built-in.
    pub plugin: String,
    /// What happened, for users.
    pub message: String,
}

/// What [`Chain::apply`] produces for one slice of records. Either `kept` holds the records
/// every filter decided to keep and `undecided` is 0, or (the chain failed, during this call
/// or before) `kept` is empty and `undecided` counts the records no filter rejected: the
/// failed filter held them, or kept them before later filters could see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainOutput {
    /// The records every filter kept, in input order.
    pub kept: Vec<Kept>,
    /// The filter that failed during this call; the chain keeps nothing from now on.
    pub failure: Option<FilterFailure>,
    /// Records not rejected by any filter and not kept by all of them: they pass nowhere.
    pub undecided: u64,
}

/// One filter of a chain; `instance` is `None` once it has failed (its store is dropped:
/// a trapped instance cannot be entered again).
struct Stage {
    name: String,
    builtin: bool,
    /// Sees each record's line as read rather than its message: the `pattern` built-in,
    /// which keeps grep semantics on parsed records.
    matches_line: bool,
    instance: Option<FilterInstance>,
    /// The compiler tier of `instance`'s code.
    tier: Tier,
    /// While `instance` runs baseline code: where the optimised code will appear.
    upgrade: Option<Arc<UpgradeSlot>>,
    /// The filter's config, to configure the optimised instance with.
    config: String,
}

/// A session's filter chain: level → source → pattern → plugins, each in its own store.
/// Later filters see only what earlier ones kept, with rewritten messages. Not shared between
/// sessions; `Send`, so it can move to a blocking thread.
///
/// Fails closed: no record passes a filter that did not decide about it. The first filter
/// that fails ends the chain: from then on it keeps nothing.
pub struct Chain {
    /// Keeps the engines' deadline ticker alive as long as the chain, and starts the
    /// optimised instances of the fast tier.
    runtime: Runtime,
    stages: Vec<Stage>,
    encoder: BatchEncoder,
    /// The filter that failed, once one has.
    failed: Option<String>,
}

impl Chain {
    /// Runs `records` through every filter. Never panics on filter misbehaviour: the first
    /// filter that fails is reported in `failure`, nothing of this call is kept, and the
    /// records no filter had rejected are counted as `undecided`; so are all records of later
    /// calls.
    pub fn apply(&mut self, records: &[Record]) -> ChainOutput {
        if self.failed.is_some() {
            return ChainOutput {
                kept: Vec::new(),
                failure: None,
                undecided: records.len() as u64,
            };
        }
        // A batch boundary: no record is inside any instance, so a filter can change
        // instance here without any record seeing both or neither.
        self.switch_to_optimized();
        let mut survivors = Survivors::all(records.len());

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
                let taken =
                    self.encoder
                        .encode(records, &survivors, pos, fields, stage.matches_line);
                let verdicts = match instance.filter_batch(self.encoder.batch()) {
                    Ok(verdicts) => verdicts,
                    Err(failure) => {
                        // Kept by this filter so far (`write`) but unseen by later ones, or
                        // not decided at all (from `pos` on): none of them may pass.
                        let undecided = write + (survivors.indices.len() - pos);
                        self.failed = Some(stage.name.clone());
                        return ChainOutput {
                            kept: Vec::new(),
                            failure: Some(stage.failed(failure)),
                            undecided: undecided as u64,
                        };
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
            survivors.indices.truncate(write);
        }

        let kept = std::mem::take(&mut survivors.indices)
            .into_iter()
            .map(|index| Kept {
                index,
                message: survivors.take_message(index),
            })
            .collect();
        ChainOutput {
            kept,
            failure: None,
            undecided: 0,
        }
    }

    /// The chain's filters in order: built-in names, then plugin names.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// The filter that failed and ended this chain, if one has.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Each filter's name and the compiler tier of the code it runs now, in chain order.
    pub fn tiers(&self) -> impl Iterator<Item = (&str, Tier)> {
        self.stages.iter().map(|s| (s.name.as_str(), s.tier))
    }

    /// Replaces each baseline instance whose optimised code has become ready with a new,
    /// configured instance of that code. The new instance starts from `configure`, like the
    /// session's first: whatever state the plugin kept between batches (a sampler's counter)
    /// starts over. If it cannot start (it could not when the session started either, so
    /// this is not expected), the baseline instance goes on.
    fn switch_to_optimized(&mut self) {
        for stage in &mut self.stages {
            let Some(ready) = stage.upgrade.as_ref().and_then(|slot| slot.get()) else {
                continue;
            };
            let ready = ready.clone();
            stage.upgrade = None;
            let Some(prepared) = ready else {
                continue;
            };
            if stage.instance.is_none() {
                continue;
            }
            match instantiate(&self.runtime, &stage.name, false, &prepared, &stage.config) {
                Ok(instance) => {
                    stage.instance = Some(instance);
                    stage.tier = Tier::Optimized;
                    tracing::info!(plugin = %stage.name, "plugin switched to optimised code");
                }
                Err(error) => {
                    tracing::warn!(plugin = %stage.name, %error, "optimised plugin code cannot start; keeping the baseline code");
                }
            }
        }
    }
}

impl Stage {
    /// Ends this filter after `failure`: its poisoned instance is dropped, the failure
    /// logged and returned for the session's clients.
    fn failed(&mut self, failure: CallFailure) -> FilterFailure {
        self.instance = None;
        let message = failure.to_string();
        if self.builtin {
            tracing::error!(filter = %self.name, %message, "built-in filter failed (a bug); the chain keeps nothing");
        } else {
            tracing::warn!(plugin = %self.name, %message, "plugin failed; the chain keeps nothing");
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
            .field("failed", &self.failed)
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
        runtime: runtime.clone(),
        stages,
        encoder: BatchEncoder::new(),
        failed: None,
    })
}

fn builtin_stage(runtime: &Runtime, builtin: Builtin, config: &str) -> Result<Stage, ChainError> {
    let prepared = runtime
        .prepare(builtin.digest(), || {
            Some(Cow::Borrowed(builtin.component()))
        })
        .map_err(|e| prepare_error(builtin.name(), builtin.digest(), e))?;
    let mut stage = start(runtime, builtin.name(), true, &prepared, config)?;
    stage.matches_line = builtin == Builtin::Pattern;
    Ok(stage)
}

/// Makes the components of several distinct plugins ready at once, a thread each: a cold
/// plugin compiles for up to a second, much of it single-threaded, so a session with two new
/// plugins waits for the slowest rather than the sum. With one plugin, nothing is done here.
fn prepare_in_parallel<'p>(
    runtime: &Runtime,
    plugins: &'p [PluginRef],
    source: &dyn PluginSource,
) -> HashMap<&'p str, Result<Ready, PrepareError>> {
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
                    runtime
                        .prepare_plugin(&plugin.digest, || source.component(plugin).map(Cow::Owned))
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
    ready: Option<Result<Ready, PrepareError>>,
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
            .prepare_plugin(&digest, || Some(Cow::Owned(bytes)))
            .map_err(|e| prepare_error(name, &digest, e))?
    } else {
        runtime
            .prepare_plugin(&plugin.digest, || source.component(plugin).map(Cow::Owned))
            .map_err(|e| prepare_error(name, &plugin.digest, e))?
    };
    let mut stage = start(runtime, name, false, &prepared.prepared, &plugin.config)?;
    if prepared.upgrade.is_some() {
        stage.tier = Tier::Baseline;
        stage.upgrade = prepared.upgrade;
    }
    Ok(stage)
}

/// Instantiates and configures one filter, as a stage of optimised code.
fn start(
    runtime: &Runtime,
    name: &str,
    builtin: bool,
    prepared: &crate::cache::Prepared,
    config: &str,
) -> Result<Stage, ChainError> {
    let instance = instantiate(runtime, name, builtin, prepared, config)?;
    Ok(Stage {
        name: name.to_owned(),
        builtin,
        matches_line: false,
        instance: Some(instance),
        tier: Tier::Optimized,
        upgrade: None,
        config: config.to_owned(),
    })
}

/// Instantiates `prepared` in a new store (of the engine that compiled it) and configures it.
fn instantiate(
    runtime: &Runtime,
    name: &str,
    builtin: bool,
    prepared: &crate::cache::Prepared,
    config: &str,
) -> Result<FilterInstance, ChainError> {
    let startup = |failure: crate::instance::CallFailure| ChainError::Startup {
        plugin: name.to_owned(),
        message: failure.to_string(),
    };
    let bounds = if builtin {
        runtime.builtin_bounds()
    } else {
        runtime.bounds()
    };
    let engine = prepared.pre.instance_pre().engine();
    let mut instance = FilterInstance::start(engine, prepared, bounds, name).map_err(startup)?;
    instance
        .configure(config)
        .map_err(startup)?
        .map_err(|message| ChainError::Configure {
            plugin: name.to_owned(),
            message,
        })?;
    Ok(instance)
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
