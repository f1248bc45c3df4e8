//! The LogFleet edge agent: tails log files, parses lines, reports metrics, and ships the lines
//! that match the host's streaming sessions.
//!
//! ```text
//! files ─► tail (thread) ─► pipeline (task): seq, level, metrics, sessions ─► outbox ─► uplink (task) ─► host
//!                                  ▲                                                     │
//!                                  └──── Start / Stop / Sessions / Plugin frames ◄───────┘
//!
//! starting a session:  pipeline ─► loader (task) ─► FetchPlugin ─► outbox ─► host
//!                      host ─► Plugin ─► pipeline ─► loader ─► build (blocking thread) ─► chain ready ─► pipeline
//! ```
//!
//! Where things live:
//!
//! - [`config`]: [`Config`], [`Tuning`], the TOML file and how flags override it.
//! - [`tail`]: the file tailer (inotify wake-ups, rotated files followed to their end,
//!   truncation, line numbers, checkpoints).
//! - [`multiline`]: continuation lines joined into one record (stack traces).
//! - [`parse`]: from a line read to a record (level; message, event time and fields).
//! - [`metrics`]: per-source counts and the agent's health report.
//! - [`filter`]: session chains over the WebAssembly filter runtime ([`ChainBuilder`]).
//! - [`plugins`]: plugin components fetched from the host, cached by digest.
//! - [`loader`]: preparing a starting session's chain (plugin fetches, off-thread builds).
//! - [`filter_test`]: the `filter-test` command: a session's filters over stdin.
//! - [`ratelimit`]: per-session token buckets.
//! - [`session`]: one session's chain, rate limit and pending batch.
//! - [`backfill`]: a starting session's most recent records, read backwards from its files.
//! - [`pipeline`]: the task owning all sessions and metrics.
//! - [`state`]: what survives a restart: reserved `seq`s and the running sessions.
//! - [`outbox`]: the byte-bounded queue between pipeline and uplink, and its overflow policy.
//! - [`uplink`]: the WebSocket connection to the host, reconnecting forever.
//! - [`tls`]: whom the uplink trusts for `wss://` (`--ca-cert`).
//!
//! [`run`] wires them together; `main.rs` only parses arguments and calls it.

pub mod backfill;
pub mod checkpointing;
pub mod config;
pub mod filter;
pub mod filter_test;
pub mod loader;
pub mod metrics;
pub mod multiline;
pub mod outbox;
pub mod parse;
pub mod pipeline;
pub mod plugins;
pub mod ratelimit;
pub mod session;
pub mod state;
pub mod tail;
pub mod tls;
pub mod uplink;

mod time;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logfleet_protocol::agent::{Hello, PROTOCOL_VERSION};
use logfleet_protocol::rest::SourceInfo;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use config::{Config, ConfigError, Settings, SourceConfig, Tuning};
pub use filter::ChainBuilder;

use filter::RuntimeError;
use loader::ChainLoader;
use outbox::Outbox;
use pipeline::{HOST_CHANNEL_CAPACITY, Pipeline};
use tail::{TAIL_CHANNEL_BATCHES, TailStats};
use uplink::Uplink;

/// How long shutdown waits for the tailer to stop and the pipeline to flush; a tailer stuck
/// in file I/O (a hung network filesystem) must not keep the agent from exiting.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not start. Everything after start (lost host, bad files, bad lines,
/// failing filters) is handled and logged, never returned.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the tailer thread: {0}")]
    Tailer(#[source] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("agent startup was interrupted: {0}")]
    Startup(tokio::task::JoinError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Runs the agent until `shutdown` resolves: the WebAssembly filter runtime with the agent's
/// bounds, caching under `config.tuning.cache_dir` (or the default location; see
/// [`config::resolve_cache_dir`]), its state in `config.tuning.state_dir` (default: under the
/// cache directory, see [`state::resolve`]). See [`run_with`].
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    // Refuse a bad config before touching the disk.
    config::connect_url(&config.host)?;
    config::validate_sources(&config.sources)?;
    let configured = config.tuning.cache_dir.clone();
    let configured_state = config.tuning.state_dir.clone();
    let fast_tier = config.tuning.fast_tier;
    // Creating directories and starting the engine block: keep them off the executor.
    let (builder, state_dir) = tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
        let cache_dir = config::resolve_cache_dir(configured.as_deref())?;
        match &cache_dir {
            Some(dir) => info!(dir = %dir.display(), "filter cache directory"),
            None => info!("no filter cache directory; compiled filters are kept in memory only"),
        }
        let state = state::resolve(configured_state.as_deref(), cache_dir.as_deref())?;
        Ok((
            ChainBuilder::open(cache_dir.as_deref(), fast_tier)?,
            state.map(|s| s.path().to_owned()),
        ))
    })
    .await
    .map_err(AgentError::Startup)??;
    config.tuning.state_dir = state_dir;
    run_with(config, builder, shutdown).await
}

/// Runs the agent with the given filter runtime until `shutdown` resolves, then stops tailing,
/// flushes session batches, sends what is queued and waits for the host to acknowledge it if
/// connected (bounded wait), closes the WebSocket normally and returns.
/// `config.tuning.cache_dir` is not used: `builder` already has its caches (tests share one
/// runtime this way). `config.tuning.state_dir` is used as given (no default here): with one,
/// sessions saved there that have not ended are resumed (see [`resume`]).
pub async fn run_with(
    config: Config,
    builder: ChainBuilder,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let url = config::connect_url(&config.host)?;
    config::validate_sources(&config.sources)?;
    warm_up(&builder);
    // Several rustls crypto providers may be compiled into the process; pick one explicitly.
    // An error only means one was installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = config
        .ca_cert
        .as_deref()
        .map(tls::client_config)
        .transpose()?;

    let tuning = config.tuning;
    let mut resumed = resume(tuning.state_dir.clone(), &tuning).await?;
    // Resuming from checkpoints, the tailer reads again what the buffer holds after them.
    let spool_upto = match resumed.tail.start {
        tail::StartPolicy::Resume { .. } => resumed.tail.resume_from.spool_end,
        tail::StartPolicy::AtEnd => None,
    };
    if let (Some(dir), None) = (&tuning.buffer_dir, &resumed.state) {
        // Resent frames are told from new ones by `seq`, which only a state directory keeps
        // rising across restarts (and the buffer's cut point is in the checkpoints there).
        return Err(ConfigError::BufferDir {
            path: dir.display().to_string(),
            error: std::io::Error::other(
                "a disk buffer needs a state directory: give --state-dir (or a usable cache directory)",
            ),
        }
        .into());
    }
    let outbox = open_outbox(&tuning, spool_upto).await?;
    let loader = ChainLoader::new(builder, outbox.clone());
    let tail_stats = Arc::new(TailStats::default());
    // Bounded: the tailer waits when the pipeline is behind (see `tail`).
    let (line_tx, line_rx) = mpsc::channel(TAIL_CHANNEL_BATCHES);
    // Bounded: the uplink waits when the pipeline is behind (see `pipeline`).
    let (host_tx, host_rx) = mpsc::channel(HOST_CHANNEL_CAPACITY);
    let (drain_tx, drain_rx) = watch::channel(false);

    let mut pipeline = Pipeline::new(
        config.sources.iter().map(|s| s.name.as_str()),
        loader,
        outbox.clone(),
        tail_stats.clone(),
    )
    .parse_sources_as(&config.sources)
    .backfill_scan_bytes(tuning.backfill_scan_bytes);
    if let Some(state) = &resumed.state {
        pipeline = pipeline.with_state(state);
        let (snapshots, published) = watch::channel(tail::Snapshot::default());
        resumed.tail.snapshots = Some(snapshots);
        pipeline = pipeline.with_checkpoints(published, tail::CheckpointStore::new(state.path()));
        let restored = pipeline.restore(resumed.sessions);
        if restored > 0 {
            info!(
                sessions = restored,
                "resuming sessions saved before the restart"
            );
        }
    }
    let tailer = tail::spawn(&config.sources, resumed.tail, tail_stats, line_tx)
        .map_err(AgentError::Tailer)?;
    let pipeline = AbortOnDrop(tokio::spawn(pipeline.run(
        line_rx,
        host_rx,
        tuning.batch_interval,
        config.metrics_interval,
    )));
    let uplink = Uplink {
        url,
        tls,
        token: config.token,
        labels: config.labels.clone(),
        hello: Hello {
            protocol: PROTOCOL_VERSION,
            name: config.name.clone(),
            hostname: config::default_name(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            sources: config
                .sources
                .iter()
                .map(|s| SourceInfo {
                    name: s.name.clone(),
                    path: s.path.clone(),
                })
                .collect(),
            // Filled in by the uplink at every connect, from the outbox.
            outbox: 0,
            next_frame: 0,
        },
        outbox,
        host_frames: host_tx,
        tuning,
    };
    let uplink = AbortOnDrop(tokio::spawn(uplink.run(drain_rx)));
    info!(name = %config.name, sources = config.sources.len(), "agent started");

    shutdown.await;
    info!("shutting down");
    // Order matters: the tailer stops and closes its channel, the pipeline then ends after a
    // final flush into the outbox, and only then does the uplink drain the outbox and close.
    tailer.signal_stop();
    match tokio::time::timeout(STOP_TIMEOUT, pipeline.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "pipeline task failed"),
        Err(_) => warn!("tailer did not stop within {STOP_TIMEOUT:?}; pending lines are lost"),
    }
    // The uplink may have ended already; then nobody listens, which is fine.
    let _ = drain_tx.send(true);
    if let Err(e) = uplink.join().await {
        warn!(error = %e, "uplink task failed");
    }
    info!("agent stopped");
    Ok(())
}

/// What a start continues from, read from the state directory.
struct Resumed {
    state: Option<state::StateDir>,
    /// Saved sessions (the pipeline starts those that have not ended).
    sessions: Vec<state::SavedSession>,
    tail: tail::TailOptions,
}

/// Reads the state directory (blocking, so on a blocking thread): the saved sessions, and the
/// tailer's options. Checkpoints are always written when there is a state directory; they are
/// resumed from (backlog up to [`Tuning::backlog_cap_bytes`] per file) only
/// when a saved session is still running, since only then is anyone waiting for those lines.
/// Otherwise files start at their end as without state: lines written while the agent was
/// down are neither shipped nor counted in metrics.
async fn resume(dir: Option<std::path::PathBuf>, tuning: &Tuning) -> Result<Resumed, AgentError> {
    let mut tail = tail::TailOptions::from_tuning(tuning);
    let Some(dir) = dir else {
        return Ok(Resumed {
            state: None,
            sessions: Vec::new(),
            tail,
        });
    };
    let (state, sessions, checkpoints) = tokio::task::spawn_blocking(move || {
        let state =
            state::StateDir::open_exclusive(&dir).map_err(|error| ConfigError::StateDir {
                path: dir.display().to_string(),
                error,
            })?;
        let now = time::now_ms();
        let sessions = state.load_sessions();
        let running = sessions.iter().any(|s| s.ends_at_ms > now);
        let store = tail::CheckpointStore::new(state.path());
        let checkpoints = running.then(|| store.load());
        Ok::<_, AgentError>((state, sessions, checkpoints))
    })
    .await
    .map_err(AgentError::Startup)??;
    info!(dir = %state.path().display(), "state directory");
    if let Some(checkpoints) = checkpoints {
        tail.start = tail::StartPolicy::Resume {
            backlog_cap_bytes: tuning.backlog_cap_bytes,
        };
        tail.resume_from = checkpoints;
    }
    Ok(Resumed {
        state: Some(state),
        sessions,
        tail,
    })
}

/// The outbox: in memory, or also on disk in `--buffer-dir` (which must work: a clear
/// startup error otherwise), holding first what the last run left unacknowledged there.
async fn open_outbox(tuning: &Tuning, upto: Option<(u64, u64)>) -> Result<Outbox, AgentError> {
    let Some(dir) = tuning.buffer_dir.clone() else {
        return Ok(Outbox::new(tuning.buffer_bytes));
    };
    let limit = tuning.buffer_bytes;
    let outbox = tokio::task::spawn_blocking(move || {
        let upto = upto.map(|(segment, offset)| outbox::spool::Pos { segment, offset });
        Outbox::with_spool(limit, &dir, upto).map_err(|error| ConfigError::BufferDir {
            path: dir.display().to_string(),
            error,
        })
    })
    .await
    .map_err(AgentError::Startup)??;
    if !outbox.is_empty() {
        info!(
            bytes = outbox.buffered_bytes(),
            "resending what the disk buffer kept from before the restart"
        );
    }
    Ok(outbox)
}

/// Compiles the built-in filters (or loads them from the disk cache) on a blocking thread, so
/// the first session does not wait for it. Not awaited: sessions started meanwhile simply
/// compile what they need themselves.
fn warm_up(builder: &ChainBuilder) {
    let runtime = builder.runtime().clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        match runtime.warm_up() {
            Ok(()) => info!(elapsed = ?started.elapsed(), "built-in filters ready"),
            // A broken build of the agent; sessions using the built-in will report it.
            Err(e) => error!(error = %e, "built-in filters cannot be compiled"),
        }
    });
}

/// A spawned task that is aborted when this is dropped: the agent's tasks if `run` is dropped
/// (e.g. its caller's task was aborted), so no part of the agent outlives it; a pending
/// session's loader when the session is cancelled.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    //! The agent against a minimal in-test host: real files, real sockets, real WebSockets.

    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use logfleet_protocol::agent::{
        AgentFrame, HostFrame, RateLimits, SessionSpec, decode, encode,
    };
    use logfleet_protocol::{Filters, Level};
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    /// Upper bound for anything a test waits on; generous so slow CI machines do not flake.
    const WAIT: Duration = Duration::from_secs(10);

    /// The host's end of an agent link. It acknowledges every frame it reads, as a real host
    /// does once it has handled one, unless told not to.
    struct HostWs {
        ws: WebSocketStream<TcpStream>,
        /// The number of the next frame after `Hello` (see `Hello::next_frame`).
        next: u64,
        acking: bool,
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn config(port: u16, dir: &Path) -> Config {
        let mut config = Config::new(
            format!("http://127.0.0.1:{port}"),
            "agent-token",
            "edge-01",
            // One record per line: these tests count lines, not stack traces.
            vec![SourceConfig {
                multiline: multiline::Multiline::None,
                ..SourceConfig::new("app", dir.join("*.log").to_string_lossy().into_owned())
            }],
        );
        config.metrics_interval = Duration::from_secs(3600);
        config.tuning = Tuning {
            poll_interval: Duration::from_millis(5),
            glob_interval: Duration::from_millis(20),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(50),
            batch_interval: Duration::from_millis(5),
            buffer_bytes: 1 << 20,
            cache_dir: filter::tests::test_cache_dir(),
            // Each test agent its own (the test cache is shared): no test resumes another's.
            state_dir: Some(dir.join("state")),
            ..Tuning::default()
        };
        config
    }

    /// An agent running in a test task, with its shutdown trigger.
    struct Agent {
        stop: oneshot::Sender<()>,
        task: JoinHandle<Result<(), AgentError>>,
    }

    fn start(config: Config) -> Agent {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, async {
            let _ = stopped.await;
        }));
        Agent { stop, task }
    }

    /// Accepts one agent connection; returns it with the Authorization header it sent.
    // The callback's error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    async fn accept(listener: &TcpListener) -> (HostWs, String) {
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut auth = String::new();
        let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
            assert_eq!(req.uri().path(), "/api/v1/agent/connect");
            auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            Ok(resp)
        })
        .await
        .unwrap();
        let ws = HostWs {
            ws,
            next: 0,
            acking: true,
        };
        (ws, auth)
    }

    /// Decodes a frame the agent sent, acknowledging it unless the link does not.
    async fn received(ws: &mut HostWs, bytes: &[u8]) -> AgentFrame {
        let frame: AgentFrame = decode(bytes).unwrap();
        if let AgentFrame::Hello(hello) = &frame {
            ws.next = hello.next_frame;
        } else {
            let number = ws.next;
            ws.next += 1;
            if ws.acking {
                send(ws, HostFrame::Ack { upto: number }).await;
            }
        }
        frame
    }

    /// The next agent frame, skipping pings.
    async fn next_frame(ws: &mut HostWs) -> AgentFrame {
        loop {
            let msg = tokio::time::timeout(WAIT, ws.ws.next())
                .await
                .expect("agent frame in time")
                .expect("connection open")
                .unwrap();
            match msg {
                Message::Binary(bytes) => return received(ws, &bytes).await,
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    async fn send(ws: &mut HostWs, frame: HostFrame) {
        ws.ws
            .send(Message::Binary(encode(&frame).into()))
            .await
            .unwrap();
    }

    fn session(id: &str, levels: Vec<Level>) -> SessionSpec {
        SessionSpec {
            id: id.into(),
            filters: Filters {
                levels,
                ..Filters::default()
            },
            limits: RateLimits {
                lines_per_second: 1000,
                bytes_per_second: 1 << 20,
            },
            remaining_ms: 60_000,
            backfill: None,
        }
    }

    /// Reads until the agent's close, answering it as a real host does, then until the end.
    async fn finish(mut ws: HostWs) -> Vec<AgentFrame> {
        let mut frames = Vec::new();
        while let Some(msg) = tokio::time::timeout(WAIT, ws.ws.next()).await.unwrap() {
            match msg {
                Ok(Message::Binary(b)) => frames.push(received(&mut ws, &b).await),
                Ok(Message::Close(frame)) => {
                    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        frames
    }

    /// Collects log records until `n` arrived.
    async fn records(ws: &mut HostWs, n: usize) -> Vec<logfleet_protocol::agent::Record> {
        let mut got = Vec::new();
        while got.len() < n {
            match next_frame(ws).await {
                AgentFrame::Logs(batch) => got.extend(batch.records),
                AgentFrame::Metrics(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn streams_session_lines_then_closes_normally() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "old line 1\nold line 2\n");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = start(config(listener.local_addr().unwrap().port(), dir.path()));

        let (mut ws, auth) = accept(&listener).await;
        assert_eq!(auth, "Bearer agent-token");
        let AgentFrame::Hello(hello) = next_frame(&mut ws).await else {
            panic!("expected hello");
        };
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        assert_eq!(hello.name, "edge-01");
        assert_eq!(hello.sources[0].name, "app");
        send(
            &mut ws,
            HostFrame::Sessions(vec![session("s1", vec![Level::Error])]),
        )
        .await;
        // The session may start a moment after the frame is sent: wait until the agent runs
        // it (lines before that are, correctly, not streamed).
        let mut n = 0;
        let first = loop {
            n += 1;
            append(&log, &format!("ERROR probe {n}\n"));
            let mut frame = None;
            if let Ok(f) =
                tokio::time::timeout(Duration::from_millis(100), next_frame(&mut ws)).await
            {
                frame = Some(f);
            }
            if let Some(AgentFrame::Logs(batch)) = frame {
                break batch.records[0].clone();
            }
        };
        assert_eq!(first.level, Level::Error);
        assert_eq!(first.source, "app");
        assert_eq!(
            first.line,
            2 + n,
            "line numbers count the lines there at start"
        );
        assert!(first.file.ends_with("app.log"));

        append(&log, "INFO skipped\nERROR wanted\n");
        let got = records(&mut ws, 1).await;
        assert_eq!(got[0].message, "wanted", "the level token is parsed out");
        assert_eq!(
            got[0].seq,
            first.seq + 2,
            "seq counts every line read, matched or not"
        );

        // Lines pending in a batch at shutdown are flushed before the normal close.
        append(&log, "ERROR last words\n");
        tokio::time::sleep(Duration::from_millis(30)).await;
        agent.stop.send(()).unwrap();
        let last: Vec<String> = finish(ws)
            .await
            .into_iter()
            .filter_map(|f| match f {
                AgentFrame::Logs(batch) => Some(batch.records.into_iter().map(|r| r.message)),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(last, ["last words"]);
        agent.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn reconnects_and_delivers_lines_buffered_while_away() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = start(config(listener.local_addr().unwrap().port(), dir.path()));

        let (mut ws, _) = accept(&listener).await;
        assert!(matches!(next_frame(&mut ws).await, AgentFrame::Hello(_)));
        send(&mut ws, HostFrame::Start(session("s1", vec![]))).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&log, "before\n");
        assert_eq!(records(&mut ws, 1).await[0].message, "before");

        // The host goes away; lines keep being read and wait in the outbox.
        drop(ws);
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&log, "during 1\nduring 2\n");
        tokio::time::sleep(Duration::from_millis(50)).await;

        let (mut ws, _) = accept(&listener).await;
        assert!(matches!(next_frame(&mut ws).await, AgentFrame::Hello(_)));
        let got = records(&mut ws, 2).await;
        let messages: Vec<&str> = got.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["during 1", "during 2"]);
        assert_eq!(got[0].line, 2);

        // A session set without s1 stops it.
        send(&mut ws, HostFrame::Sessions(vec![])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&log, "after stop\n");
        tokio::time::sleep(Duration::from_millis(50)).await;
        agent.stop.send(()).unwrap();
        for frame in finish(ws).await {
            assert!(
                !matches!(frame, AgentFrame::Logs(_)),
                "stopped session sent {frame:?}"
            );
        }
        agent.task.await.unwrap().unwrap();
    }

    /// A batch the socket took but the host never acknowledged (the link died silently) is
    /// sent again on the next link, under its number, which the new `Hello` starts from.
    #[tokio::test]
    async fn unacknowledged_batches_are_resent_after_a_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = start(config(listener.local_addr().unwrap().port(), dir.path()));

        let (mut ws, _) = accept(&listener).await;
        let AgentFrame::Hello(first_hello) = next_frame(&mut ws).await else {
            panic!("expected hello");
        };
        send(&mut ws, HostFrame::Start(session("s1", vec![]))).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&log, "acknowledged\n");
        assert_eq!(records(&mut ws, 1).await[0].message, "acknowledged");
        ws.acking = false;
        append(&log, "lost with the link\n");
        assert_eq!(records(&mut ws, 1).await[0].message, "lost with the link");
        let unacknowledged = ws.next - 1;
        drop(ws);

        let (mut ws, _) = accept(&listener).await;
        let AgentFrame::Hello(hello) = next_frame(&mut ws).await else {
            panic!("expected hello");
        };
        assert_eq!(
            hello.outbox, first_hello.outbox,
            "one outbox for the agent's life"
        );
        assert_eq!(hello.next_frame, unacknowledged);
        send(&mut ws, HostFrame::Sessions(vec![session("s1", vec![])])).await;
        assert_eq!(records(&mut ws, 1).await[0].message, "lost with the link");
        append(&log, "after\n");
        assert_eq!(records(&mut ws, 1).await[0].message, "after");
        agent.stop.send(()).unwrap();
        finish(ws).await;
        agent.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn rejected_token_is_retried_and_metrics_flow() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = config(listener.local_addr().unwrap().port(), dir.path());
        config.metrics_interval = Duration::from_millis(30);
        let agent = start(config);

        // First attempt: the host refuses the token.
        let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        tcp.write_all(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        drop(tcp);

        // The agent tries again (at reconnect_max) and reports metrics once connected.
        let (mut ws, _) = accept(&listener).await;
        assert!(matches!(next_frame(&mut ws).await, AgentFrame::Hello(_)));
        let AgentFrame::Metrics(metrics) = next_frame(&mut ws).await else {
            panic!("expected metrics");
        };
        assert_eq!(
            metrics.sources.len(),
            1,
            "the first report lists every source"
        );
        assert_eq!(metrics.sources[0].name, "app");
        agent.stop.send(()).unwrap();
        finish(ws).await;
        agent.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_while_host_unreachable_returns_promptly() {
        let dir = tempfile::tempdir().unwrap();
        // A port nobody listens on: bind, learn the port, close.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let agent = start(config(port, dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        agent.stop.send(()).unwrap();
        tokio::time::timeout(WAIT, agent.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Plugins the agent lacks are fetched over the link and cached; one the host cannot
    /// supply fails its session (filters fail closed) with a `FilterError` naming it, and the
    /// agent carries on with other sessions.
    #[tokio::test]
    async fn plugins_are_fetched_over_the_link_and_failures_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = config(listener.local_addr().unwrap().port(), dir.path());
        // A fresh cache: the agent has no plugin yet.
        let cache = tempfile::tempdir().unwrap();
        config.tuning.cache_dir = Some(cache.path().to_owned());
        let agent = start(config);

        let (mut ws, _) = accept(&listener).await;
        assert!(matches!(next_frame(&mut ws).await, AgentFrame::Hello(_)));
        let (errors_only, bytes) =
            filter::tests::level_plugin("errors-only", r#"{"levels":["ERROR"]}"#);
        let absent = logfleet_protocol::PluginRef {
            name: "absent".into(),
            config: "null".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
        };
        let mut spec = session("s1", vec![]);
        spec.filters.plugins = vec![errors_only.clone(), absent.clone()];
        send(&mut ws, HostFrame::Start(spec)).await;

        // The agent asks for both components; the host has one of them.
        let mut asked = Vec::new();
        while asked.len() < 2 {
            match next_frame(&mut ws).await {
                AgentFrame::FetchPlugin { digest } => asked.push(digest),
                AgentFrame::Metrics(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
        asked.sort();
        let mut want = vec![errors_only.digest.clone(), absent.digest.clone()];
        want.sort();
        assert_eq!(asked, want);
        send(
            &mut ws,
            HostFrame::Plugin {
                digest: errors_only.digest.clone(),
                bytes,
            },
        )
        .await;
        send(
            &mut ws,
            HostFrame::PluginUnavailable {
                digest: absent.digest.clone(),
                message: "no such plugin".into(),
            },
        )
        .await;
        let FilterErrorFrame {
            plugin,
            message,
            dropped,
        } = loop {
            match next_frame(&mut ws).await {
                AgentFrame::FilterError {
                    session_id,
                    plugin,
                    message,
                    dropped,
                } => {
                    assert_eq!(session_id, "s1");
                    break FilterErrorFrame {
                        plugin,
                        message,
                        dropped,
                    };
                }
                AgentFrame::Metrics(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        };
        assert_eq!(plugin, "absent");
        assert!(message.contains("no such plugin"), "{message}");
        assert_eq!(dropped, 0, "the session never ran");

        // Another session with the fetched plugin runs, which keeps errors only.
        let mut spec = session("s2", vec![]);
        spec.filters.plugins = vec![errors_only.clone()];
        send(&mut ws, HostFrame::Start(spec)).await;
        // Lines are part of a session once its chain is ready: probe until one arrives.
        let got = loop {
            append(&log, "INFO dropped\nERROR kept\n");
            if let Ok(got) =
                tokio::time::timeout(Duration::from_millis(200), records(&mut ws, 1)).await
            {
                break got;
            }
        };
        assert_eq!(got[0].message, "kept");
        // And the component is cached on disk for the next session or restart.
        let hex = errors_only.digest.strip_prefix("sha256:").unwrap();
        assert!(
            cache
                .path()
                .join(format!("plugins/sha256-{hex}.wasm"))
                .is_file()
        );

        agent.stop.send(()).unwrap();
        finish(ws).await;
        agent.task.await.unwrap().unwrap();
    }

    /// The fields of a `FilterError` frame a test looks at.
    struct FilterErrorFrame {
        plugin: String,
        message: String,
        dropped: u64,
    }

    /// A restart with no session saved starts every file at its end: lines written while the
    /// agent was down are neither shipped nor counted in metrics.
    #[tokio::test]
    async fn a_restart_without_saved_sessions_starts_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "before 1\n");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = config(listener.local_addr().unwrap().port(), dir.path());
        config.metrics_interval = Duration::from_millis(30);
        let state = config.tuning.state_dir.clone().unwrap();

        let agent = start(config.clone());
        let (mut ws, _) = accept(&listener).await;
        assert!(matches!(next_frame(&mut ws).await, AgentFrame::Hello(_)));
        append(&log, "before 2\n");
        agent.stop.send(()).unwrap();
        finish(ws).await;
        agent.task.await.unwrap().unwrap();
        assert!(
            state.join(tail::checkpoint::CHECKPOINT_FILE).is_file(),
            "the first run kept its positions"
        );

        append(&log, "INFO down 1\nINFO down 2\nINFO down 3\n");
        let agent = start(config);
        let (mut ws, _) = accept(&listener).await;
        assert!(matches!(next_frame(&mut ws).await, AgentFrame::Hello(_)));
        let mut counted = 0u64;
        // Probes must come after the tailer's first scan (which starts files at their end).
        loop {
            if let AgentFrame::Metrics(m) = next_frame(&mut ws).await {
                counted += m.sources.iter().flat_map(|s| s.levels).sum::<u64>();
                if m.health.files_watched > 0 {
                    break;
                }
            }
        }
        send(&mut ws, HostFrame::Start(session("s1", vec![]))).await;
        let mut probes = 0u64;
        let mut messages = Vec::new();
        // Probe until the session streams, counting every line metrics report.
        'probing: loop {
            probes += 1;
            append(&log, &format!("INFO probe {probes}\n"));
            let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
            while let Ok(frame) = tokio::time::timeout_at(deadline, next_frame(&mut ws)).await {
                match frame {
                    AgentFrame::Logs(batch) => {
                        messages.extend(batch.records.into_iter().map(|r| r.message));
                        break 'probing;
                    }
                    AgentFrame::Metrics(m) => {
                        counted += m.sources.iter().flat_map(|s| s.levels).sum::<u64>();
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            assert!(probes < 100, "the session never streamed");
        }
        // Two more reports: every probe has been counted by then.
        let mut reports = 0;
        while reports < 2 {
            match next_frame(&mut ws).await {
                AgentFrame::Metrics(m) => {
                    counted += m.sources.iter().flat_map(|s| s.levels).sum::<u64>();
                    reports += 1;
                }
                AgentFrame::Logs(batch) => {
                    messages.extend(batch.records.into_iter().map(|r| r.message));
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(
            messages.iter().all(|m| m.starts_with("probe")),
            "{messages:?}"
        );
        assert_eq!(
            counted, probes,
            "only lines written after the restart count"
        );
        agent.stop.send(()).unwrap();
        finish(ws).await;
        agent.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn invalid_host_is_a_startup_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(1, dir.path());
        config.host = "localhost:8080".into();
        let err = run(config, std::future::pending()).await.unwrap_err();
        assert!(err.to_string().contains("invalid host URL"), "{err}");
    }
}
