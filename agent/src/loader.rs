//! Getting a session's filter chain ready without ever blocking the pipeline.
//!
//! Starting a session can take a while: plugins the agent lacks must come from the host over
//! the uplink (`FetchPlugin` → `Plugin` / `PluginUnavailable`), and building the chain may
//! compile components (≈ 1 s each on a cold cache). [`ChainLoader::load`] does both in a task
//! of its own: it fetches what is missing — one request per digest, however many sessions
//! wait for it — then builds the chain on a blocking thread. The pipeline starts the session
//! when the chain is ready.
//!
//! A plugin the host cannot supply, whose bytes do not match its digest, or that does not
//! arrive within the fetch timeout ([`PLUGIN_FETCH_TIMEOUT`] by default) fails the session:
//! filters fail closed, so it never runs without one of its filters. The failure is reported
//! as the session's `filter_error` and the session ends.
//!
//! Bounds: at most [`MAX_INFLIGHT_FETCHES`] digests requested at once, at most
//! [`MAX_CONCURRENT_BUILDS`] chains built at once (each may occupy a core compiling), and
//! plugin bytes are checked against [`MAX_COMPONENT_BYTES`] before they are hashed or stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use logfleet_filter_runtime::MAX_COMPONENT_BYTES;
use logfleet_protocol::Filters;
use logfleet_protocol::agent::AgentFrame;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::filter::{Built, ChainBuilder, FilterFailure};
use crate::outbox::Outbox;
use crate::plugins::is_digest;

/// How long a requested plugin may take to arrive before the sessions waiting for it fail.
/// Generous: the component may be megabytes over a slow edge link.
pub const PLUGIN_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most digests requested from the host at once; more than a session can name
/// ([`MAX_PLUGINS`](logfleet_protocol::filters::MAX_PLUGINS)), so one session always fits.
pub const MAX_INFLIGHT_FETCHES: usize = 32;
/// Most chains built at once. Builds may compile for a second or more each; two keep a
/// small edge machine responsive while a burst of sessions starts.
pub const MAX_CONCURRENT_BUILDS: usize = 2;

/// The name a session's `filter_error` carries when the filter runtime itself failed (a bug)
/// rather than one filter.
pub const RUNTIME_FILTER_NAME: &str = "filter-runtime";

/// What waiters of a fetch learn: `Ok` once the component is in the plugin store, else the
/// message to report as the plugin's `filter_error`.
type FetchResult = Result<(), String>;

/// Prepares sessions' chains (see the module docs). Cheap to clone; clones share the fetches
/// in flight.
#[derive(Clone)]
pub struct ChainLoader {
    inner: Arc<Inner>,
}

/// What clones of a [`ChainLoader`] share.
struct Inner {
    builder: ChainBuilder,
    /// Where `FetchPlugin` requests go.
    outbox: Outbox,
    fetch_timeout: Duration,
    fetches: Mutex<Fetches>,
    builds: Arc<Semaphore>,
}

/// Digests requested from the host and not yet answered.
#[derive(Default)]
struct Fetches {
    by_digest: HashMap<String, Fetch>,
    /// Tells a fetch from a later one of the same digest.
    next_id: u64,
}

/// One outstanding request; every session waiting for the digest subscribes to `done`.
struct Fetch {
    id: u64,
    deadline: Instant,
    /// Bytes arrived and are being verified and stored; a repeated delivery is ignored, so
    /// a host resending a component cannot pile up hashing work.
    delivering: bool,
    done: watch::Sender<Option<FetchResult>>,
}

impl ChainLoader {
    pub fn new(builder: ChainBuilder, outbox: Outbox) -> ChainLoader {
        ChainLoader::with_fetch_timeout(builder, outbox, PLUGIN_FETCH_TIMEOUT)
    }

    /// Like [`ChainLoader::new`] with another fetch timeout (tests).
    pub fn with_fetch_timeout(
        builder: ChainBuilder,
        outbox: Outbox,
        fetch_timeout: Duration,
    ) -> ChainLoader {
        ChainLoader {
            inner: Arc::new(Inner {
                builder,
                outbox,
                fetch_timeout,
                fetches: Mutex::default(),
                builds: Arc::new(Semaphore::new(MAX_CONCURRENT_BUILDS)),
            }),
        }
    }

    /// Fetches the plugins of `filters` the agent lacks, then builds the chain on a blocking
    /// thread. The first plugin (in chain order) that could not be had fails the whole load:
    /// a session never runs without one of its filters. Cancel-safe: dropping the future
    /// abandons the wait (a build already running finishes on its thread and is discarded).
    pub async fn load(&self, filters: Filters) -> Built {
        let unavailable = self.fetch_missing(&filters).await;
        for plugin in &filters.plugins {
            let why = if is_digest(&plugin.digest) {
                unavailable.get(&plugin.digest).cloned()
            } else {
                Some(format!(
                    "the host named no valid component digest for this plugin ('{}')",
                    plugin.digest
                ))
            };
            if let Some(message) = why {
                warn!(plugin = %plugin.name, %message, "plugin unavailable; the session fails");
                return Err(FilterFailure {
                    plugin: plugin.name.clone(),
                    message,
                });
            }
        }

        // The semaphore is never closed, so `acquire_owned` cannot fail; were it to, building
        // unthrottled is still correct.
        let permit = self.inner.builds.clone().acquire_owned().await.ok();
        let builder = self.inner.builder.clone();
        let built = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            builder.build(&filters)
        })
        .await;
        built.unwrap_or_else(|e| {
            // A panic inside the runtime: a bug. The session fails rather than run unfiltered.
            error!(error = %e, "building a session's filters panicked; the session fails");
            Err(FilterFailure {
                plugin: RUNTIME_FILTER_NAME.to_owned(),
                message: format!("the agent's filter runtime failed: {e}"),
            })
        })
    }

    /// A `Plugin` frame from the host: verifies and stores it off the executor, then wakes
    /// the sessions waiting for it. Bytes nobody asked for (or gave up on) are ignored.
    pub fn plugin_received(&self, digest: String, bytes: Vec<u8>) {
        match self.fetches().by_digest.get_mut(&digest) {
            None => {
                debug!(%digest, "plugin the agent is not waiting for; ignored");
                return;
            }
            Some(fetch) if fetch.delivering => {
                debug!(%digest, "plugin delivered twice; the copy is ignored");
                return;
            }
            Some(fetch) => fetch.delivering = true,
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            let message = format!(
                "plugin rejected: the host sent {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                bytes.len()
            );
            self.finish(&digest, None, Err(message));
            return;
        }
        let loader = self.clone();
        tokio::spawn(async move {
            let store = loader.inner.builder.plugins().clone();
            let key = digest.clone();
            let stored = tokio::task::spawn_blocking(move || store.put(&key, bytes)).await;
            let result = match stored {
                Ok(Ok(())) => {
                    info!(%digest, "plugin received from the host");
                    Ok(())
                }
                Ok(Err(e)) => {
                    warn!(%digest, error = %e, "plugin from the host refused");
                    Err(format!("plugin rejected: {e}"))
                }
                Err(e) => Err(format!("plugin could not be stored: {e}")),
            };
            loader.finish(&digest, None, result);
        });
    }

    /// A `PluginUnavailable` frame from the host: the sessions waiting for it fail.
    pub fn plugin_unavailable(&self, digest: &str, message: &str) {
        warn!(%digest, %message, "the host cannot supply a plugin");
        self.finish(
            digest,
            None,
            Err(format!("plugin not available from the host: {message}")),
        );
    }

    /// Requests every outstanding digest again. Called when the host (re)sends its session
    /// list, which it does after every connect: a request queued before the link dropped may
    /// never have been answered. Deadlines are not extended.
    pub fn resend_fetches(&self) {
        let fetches = self.fetches();
        for digest in fetches.by_digest.keys() {
            debug!(%digest, "requesting plugin again after reconnect");
            self.inner.outbox.push(AgentFrame::FetchPlugin {
                digest: digest.clone(),
            });
        }
    }

    /// Digests requested and not yet answered.
    pub fn fetches_in_flight(&self) -> usize {
        self.fetches().by_digest.len()
    }

    /// Fetches the digests of `filters` missing from the plugin store, concurrently; returns
    /// why each one that could not be had is unavailable.
    async fn fetch_missing(&self, filters: &Filters) -> HashMap<String, String> {
        let mut seen = HashSet::new();
        let wanted: Vec<String> = filters
            .plugins
            .iter()
            .map(|p| p.digest.clone())
            .filter(|d| is_digest(d) && seen.insert(d.clone()))
            .collect();
        if wanted.is_empty() {
            return HashMap::new();
        }
        let store = self.inner.builder.plugins().clone();
        let missing = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .filter(|d| !store.contains(d))
                .collect::<Vec<_>>()
        })
        .await
        // The check only stats files; if it panicked, the build reports what is missing.
        .unwrap_or_default();
        let results = join_all(missing.iter().map(|d| self.fetch(d))).await;
        missing
            .into_iter()
            .zip(results)
            .filter_map(|(digest, result)| result.err().map(|why| (digest, why)))
            .collect()
    }

    /// Waits for `digest` to be in the plugin store, requesting it from the host unless a
    /// request is already out.
    async fn fetch(&self, digest: &str) -> FetchResult {
        let (id, deadline, mut done) = {
            let mut fetches = self.fetches();
            let now = Instant::now();
            self.expire(&mut fetches, now);
            match fetches.by_digest.get(digest) {
                Some(fetch) => (fetch.id, fetch.deadline, fetch.done.subscribe()),
                None => {
                    if fetches.by_digest.len() >= MAX_INFLIGHT_FETCHES {
                        return Err(format!(
                            "plugin not fetched: {MAX_INFLIGHT_FETCHES} other plugins are being fetched already"
                        ));
                    }
                    let id = fetches.next_id;
                    fetches.next_id += 1;
                    let deadline = now + self.inner.fetch_timeout;
                    let (tx, rx) = watch::channel(None);
                    fetches.by_digest.insert(
                        digest.to_owned(),
                        Fetch {
                            id,
                            deadline,
                            delivering: false,
                            done: tx,
                        },
                    );
                    debug!(%digest, "fetching plugin from the host");
                    self.inner.outbox.push(AgentFrame::FetchPlugin {
                        digest: digest.to_owned(),
                    });
                    (id, deadline, rx)
                }
            }
        };
        match tokio::time::timeout_at(deadline, done.wait_for(Option::is_some)).await {
            Ok(Ok(result)) => (*result)
                .clone()
                .unwrap_or_else(|| Err("plugin fetch ended without a result".to_owned())),
            // Every removal sends a result first, so the sender cannot be gone without one.
            Ok(Err(_)) => Err("plugin fetch abandoned".to_owned()),
            Err(_) => {
                let message = self.not_delivered(digest);
                warn!(%digest, "plugin not delivered in time");
                self.finish(digest, Some(id), Err(message.clone()));
                Err(message)
            }
        }
    }

    /// Ends the fetch of `digest` (only fetch `id`, if given) and tells its waiters.
    fn finish(&self, digest: &str, id: Option<u64>, result: FetchResult) {
        let mut fetches = self.fetches();
        if fetches
            .by_digest
            .get(digest)
            .is_some_and(|f| id.is_none_or(|id| f.id == id))
            && let Some(fetch) = fetches.by_digest.remove(digest)
        {
            fetch.done.send_replace(Some(result));
        }
    }

    /// Ends fetches past their deadline. Their waiters have timed out (or were cancelled with
    /// their session), so nobody else would remove them.
    fn expire(&self, fetches: &mut Fetches, now: Instant) {
        let expired: Vec<String> = fetches
            .by_digest
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for digest in expired {
            if let Some(fetch) = fetches.by_digest.remove(&digest) {
                fetch
                    .done
                    .send_replace(Some(Err(self.not_delivered(&digest))));
            }
        }
    }

    fn not_delivered(&self, digest: &str) -> String {
        format!(
            "plugin not delivered: the host did not send component {digest} within {:?}",
            self.inner.fetch_timeout
        )
    }

    /// The fetch table. Every mutation is a single insert or remove, so a lock poisoned by a
    /// panicking thread is used as is.
    fn fetches(&self) -> MutexGuard<'_, Fetches> {
        self.inner
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ChainLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainLoader")
            .field("fetches_in_flight", &self.fetches_in_flight())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::{builder, level_plugin, record};
    use logfleet_protocol::agent::decode;
    use logfleet_protocol::{Level, PluginRef};

    fn filters(plugins: Vec<PluginRef>) -> Filters {
        Filters {
            plugins,
            ..Filters::default()
        }
    }

    /// Pops the `FetchPlugin` requests queued so far.
    fn fetch_requests(outbox: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.try_pop())
            .filter_map(|e| match decode::<AgentFrame>(e.bytes()).unwrap() {
                AgentFrame::FetchPlugin { digest } => Some(digest),
                _ => None,
            })
            .collect()
    }

    /// Waits for the next `FetchPlugin` request (load tasks run concurrently with the test).
    async fn next_request(outbox: &Outbox) -> String {
        let entry = tokio::time::timeout(Duration::from_secs(10), outbox.next())
            .await
            .expect("a plugin request");
        match decode::<AgentFrame>(entry.bytes()).unwrap() {
            AgentFrame::FetchPlugin { digest } => digest,
            other => panic!("expected a plugin request, got {other:?}"),
        }
    }

    fn spawn_load(loader: &ChainLoader, plugins: Vec<PluginRef>) -> tokio::task::JoinHandle<Built> {
        let loader = loader.clone();
        tokio::spawn(async move { loader.load(filters(plugins)).await })
    }

    #[tokio::test]
    async fn one_request_per_digest_however_many_sessions_wait() {
        let outbox = Outbox::new(1 << 20);
        let loader = ChainLoader::new(builder(), outbox.clone());
        let (plugin, bytes) = level_plugin("errors", r#"{"levels":["ERROR"]}"#);
        let a = spawn_load(&loader, vec![plugin.clone()]);
        assert_eq!(next_request(&outbox).await, plugin.digest);
        let b = spawn_load(&loader, vec![plugin.clone(), plugin.clone()]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(fetch_requests(&outbox).is_empty(), "one request only");

        loader.plugin_received(plugin.digest.clone(), bytes);
        for task in [a, b] {
            let mut chain = task.await.unwrap().expect("the chain builds");
            let out = chain.apply(&[
                record(1, Level::Info, "app", "x"),
                record(2, Level::Error, "app", "y"),
            ]);
            assert_eq!(out.kept.len(), 1);
        }
        assert_eq!(loader.fetches_in_flight(), 0);

        // Now stored: the next session fetches nothing.
        assert!(loader.load(filters(vec![plugin])).await.is_ok());
        assert!(fetch_requests(&outbox).is_empty());
    }

    #[tokio::test]
    /// A plugin that cannot be had (bytes not matching its digest, unavailable from the host,
    /// never delivered, a malformed digest) fails the load, naming the plugin and the cause:
    /// a session never runs without one of its filters.
    async fn bad_bytes_unavailable_and_timeouts_fail_the_load() {
        let outbox = Outbox::new(1 << 20);
        let loader =
            ChainLoader::with_fetch_timeout(builder(), outbox.clone(), Duration::from_millis(200));
        let (plugin, _) = level_plugin("errors", r#"{"levels":["ERROR"]}"#);

        // Bytes that do not match the digest.
        let task = spawn_load(&loader, vec![plugin.clone()]);
        next_request(&outbox).await;
        loader.plugin_received(plugin.digest.clone(), b"not it".to_vec());
        let failure = task.await.unwrap().err().expect("the load fails");
        assert_eq!(failure.plugin, "errors");
        assert!(failure.message.contains("plugin rejected"), "{failure:?}");

        // The host cannot supply it.
        let task = spawn_load(&loader, vec![plugin.clone()]);
        next_request(&outbox).await;
        loader.plugin_unavailable(&plugin.digest, "deleted by its owner");
        let failure = task.await.unwrap().err().expect("the load fails");
        assert!(
            failure.message.contains("deleted by its owner"),
            "{failure:?}"
        );

        // Never answered.
        let failure = loader
            .load(filters(vec![plugin.clone()]))
            .await
            .err()
            .expect("the load fails");
        assert!(failure.message.contains("not delivered"), "{failure:?}");
        assert_eq!(loader.fetches_in_flight(), 0);
        assert_eq!(fetch_requests(&outbox).len(), 1);

        // A malformed digest is never requested.
        let mut bad = plugin;
        bad.digest = "sha256:../../x".into();
        let failure = loader
            .load(filters(vec![bad]))
            .await
            .err()
            .expect("the load fails");
        assert_eq!(failure.plugin, "errors");
        assert!(fetch_requests(&outbox).is_empty());
    }

    #[tokio::test]
    async fn abandoned_fetches_expire_and_are_requested_again() {
        let outbox = Outbox::new(1 << 20);
        let loader =
            ChainLoader::with_fetch_timeout(builder(), outbox.clone(), Duration::from_millis(300));
        let (plugin, bytes) = level_plugin("errors", r#"{"levels":["ERROR"]}"#);
        // A session cancelled while waiting leaves its request behind...
        let task = spawn_load(&loader, vec![plugin.clone()]);
        next_request(&outbox).await;
        task.abort();
        tokio::time::sleep(Duration::from_millis(400)).await;
        // ...which a later session replaces with a fresh request instead of failing at once.
        let task = spawn_load(&loader, vec![plugin.clone()]);
        assert_eq!(next_request(&outbox).await, plugin.digest);
        loader.resend_fetches();
        assert_eq!(next_request(&outbox).await, plugin.digest);
        loader.plugin_received(plugin.digest.clone(), bytes);
        assert!(task.await.unwrap().is_ok());
    }
}
