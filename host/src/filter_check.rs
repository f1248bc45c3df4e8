//! Judging a session's plugin configs before the session starts: each named plugin's component
//! is instantiated and configured with the session's config, as the agent will do. A config a
//! plugin refuses (or that makes it trap or overrun its deadline while configuring) is refused
//! at `POST /api/v1/stream/start`, with the plugin's own message, rather than ending the session
//! on the agent a moment later.
//!
//! Compiling a component costs about a second of a core, so the host's [`Runtime`] caches
//! compiled components by digest, in memory and under `<data-dir>/compiled`; an upload's
//! validation fills that cache, so a check is usually an instantiation and a `configure` call
//! (≈ a millisecond). Checks run on a blocking thread, bounded by the same semaphore as upload
//! validations ([`MAX_CONCURRENT_VALIDATIONS`](crate::state::MAX_CONCURRENT_VALIDATIONS)).

use std::sync::Arc;

use logfleet_filter_runtime::{ChainError, Runtime};
use logfleet_protocol::PluginRef;
use tokio::sync::Semaphore;

use crate::plugins::Plugins;

/// Why a session's plugins were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PluginCheckError {
    /// The plugin refused its config, trapped or timed out while starting, or its stored
    /// component cannot be loaded. The text names the plugin and carries its own message.
    #[error("{0}")]
    Refused(ChainError),
    /// The plugin was deleted between resolving its name and checking it.
    #[error("plugin '{0}' was deleted")]
    Deleted(String),
    /// The stored component does not match its digest: the plugin store is damaged.
    #[error("{0}")]
    Corrupt(ChainError),
    /// The host is shutting down.
    #[error("the host is shutting down")]
    ShuttingDown,
    /// The check panicked (a bug in the runtime).
    #[error("checking the plugins failed: {0}")]
    Panicked(String),
}

/// Instantiates and configures every plugin of `plugins` (already pinned to digests of
/// `org`'s store) on a blocking thread, at most as many at once as `permits` allows.
pub async fn check_plugins(
    runtime: &Runtime,
    permits: &Arc<Semaphore>,
    store: &Plugins,
    org: &str,
    plugins: &[PluginRef],
) -> Result<(), PluginCheckError> {
    if plugins.is_empty() {
        return Ok(());
    }
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| PluginCheckError::ShuttingDown)?;
    let runtime = runtime.clone();
    let store = store.clone();
    let org = org.to_owned();
    let plugins = plugins.to_vec();
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // Bytes are read (from disk) only for a component not compiled yet.
        let source = |p: &PluginRef| store.bytes_for(&org, &p.digest);
        runtime.check_plugins(&plugins, &source)
    })
    .await
    .map_err(|e| PluginCheckError::Panicked(e.to_string()))?;
    checked.map_err(|e| match e {
        ChainError::PluginUnavailable { plugin, .. } => PluginCheckError::Deleted(plugin),
        e @ ChainError::DigestMismatch { .. } => PluginCheckError::Corrupt(e),
        e => PluginCheckError::Refused(e),
    })
}
