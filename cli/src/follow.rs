//! Streaming a session to the terminal, optionally following across sessions.
//!
//! Sessions always expire. `--follow` keeps a stream going anyway, the way the reference says
//! to extend one: start the next session (same request) before the current one ends; keep
//! printing the current one until it ends; then connect to the next with `since_seq` = the last
//! `seq` printed, so the host replays what that session already has. Lines both sessions carry
//! are printed once: `seq` is per agent and increases by one per line read, so anything at or
//! below the last printed `seq` is a duplicate. Because the next session is running on the agent
//! before the current one ends, there is no gap.
//!
//! When to start the next one: [`HANDOVER_LEAD`] before the current one expires (or half way
//! through a session shorter than twice that). Not as soon as `session_ending` arrives: for a
//! session shorter than the 30 s warning that arrives at once, and a successor started then
//! would expire together with it. Not earlier than needed either: the overlap is replayed from
//! the host's bounded per-session buffer when the CLI switches over.
//!
//! Every session started here is stopped on the host before [`run`] returns early (shutdown
//! signal, closed output, error), so an interrupted CLI leaves nothing streaming.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

use logfleet_protocol::client::{ClientMessage, Control, EndReason, LogMessage};
use logfleet_protocol::rest::{DEFAULT_TIMEOUT_SECONDS, Session, StartRequest};

use crate::client::Client;
use crate::error::Error;

/// How long before the current session expires the next one is started. Long enough for the
/// start to reach the agent over a slow link; short enough that the overlap (at the host's
/// default 2,000 lines/s rate limit, 6,000 lines) fits the host's 10,000-line replay buffer.
pub const HANDOVER_LEAD: Duration = Duration::from_secs(3);

/// How long stopping the sessions may take when exiting, so a dead host cannot hang Ctrl-C.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where [`run`] delivers what it receives.
pub trait Sink {
    /// A log line to print. An error ends the run: [`io::ErrorKind::BrokenPipe`] means the
    /// reader went away (`| head`) and ends it quietly.
    fn log(&mut self, log: &LogMessage) -> io::Result<()>;
    /// A message for the person watching (session ending, lines dropped, …).
    fn notice(&mut self, text: &str);
}

/// How a [`run`] ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The (last) session ended on the host for this reason.
    Ended(EndReason),
    /// The shutdown future completed (Ctrl-C, SIGTERM); sessions were stopped.
    Interrupted,
    /// The sink's reader went away; sessions were stopped.
    OutputClosed,
}

/// What to stream.
#[derive(Debug, Clone)]
pub struct Options {
    /// The start request, reused unchanged for every session when following.
    pub request: StartRequest,
    /// Start the next session before each one ends, instead of ending with it.
    pub follow: bool,
}

/// Starts a session as `options` says and streams it into `sink` until it ends (or, with
/// `follow`, until `shutdown` completes or something fails). Sessions started here are
/// stopped on the host on every early exit.
pub async fn run<S: Sink>(
    client: &Client,
    options: &Options,
    sink: &mut S,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, Error> {
    let mut follower = Follower {
        client,
        options,
        live: Vec::new(),
        next: None,
        last_seq: None,
    };
    let result = follower.stream(sink, shutdown).await;
    // After a normal end nothing is live; after anything else the current (and maybe the
    // next) session still is.
    if !follower.live.is_empty() {
        follower.stop_all().await;
    }
    result
}

/// The state of one `run`.
struct Follower<'a> {
    client: &'a Client,
    options: &'a Options,
    /// Sessions started here and not yet seen to end: what to stop on exit.
    live: Vec<String>,
    /// The session started to take over from the current one, and when it was requested.
    next: Option<(Session, Instant)>,
    /// The highest `seq` delivered to the sink.
    last_seq: Option<u64>,
}

impl Follower<'_> {
    async fn stream<S: Sink>(
        &mut self,
        sink: &mut S,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Outcome, Error> {
        tokio::pin!(shutdown);
        let (first, mut started) = self.start().await?;
        let mut current = self.client.connect(&first, None).await?;
        loop {
            let handover = self.handover_at(started);
            let msg = tokio::select! {
                msg = current.next() => msg?,
                () = sleep_until_some(handover) => {
                    self.next = Some(self.start().await?);
                    continue;
                }
                // Only waiting races the shutdown signal: REST calls run to completion, so a
                // session is never started without its id being recorded for clean-up.
                () = &mut shutdown => return Ok(Outcome::Interrupted),
            };
            let Some(msg) = msg else {
                return Err(Error::StreamClosed {
                    session_id: current.session_id().to_owned(),
                    detail: "closed without session_ended".to_owned(),
                });
            };
            match msg {
                ClientMessage::Log(log) => {
                    if self.last_seq.is_some_and(|last| log.seq <= last) {
                        continue;
                    }
                    self.last_seq = Some(log.seq);
                    match sink.log(&log) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                            return Ok(Outcome::OutputClosed);
                        }
                        Err(e) => {
                            return Err(Error::Protocol(format!("cannot write output: {e}")));
                        }
                    }
                }
                ClientMessage::Control(Control::SessionEnding {
                    seconds_remaining, ..
                }) => {
                    let id = current.session_id();
                    sink.notice(&if self.options.follow {
                        format!("session {id} ends in {seconds_remaining}s (--follow: a new session continues it)")
                    } else {
                        format!("session {id} ends in {seconds_remaining}s (use --follow to keep streaming)")
                    });
                }
                ClientMessage::Control(Control::SessionEnded { reason }) => {
                    let ended = current.session_id().to_owned();
                    self.live.retain(|id| *id != ended);
                    if reason != EndReason::Timeout || !self.options.follow {
                        if reason != EndReason::Timeout {
                            sink.notice(&format!("session {ended} {}", ended_text(reason)));
                        }
                        return Ok(Outcome::Ended(reason));
                    }
                    let (next, next_started) = match self.next.take() {
                        Some(next) => next,
                        None => {
                            // Expired before the handover (the host's clock ran ahead of
                            // ours): carry on, but say lines may be missing.
                            sink.notice(&format!(
                                "session {ended} ended before the next one started; lines may be missing"
                            ));
                            self.start().await?
                        }
                    };
                    current.close().await;
                    current = self.client.connect(&next, self.last_seq).await?;
                    started = next_started;
                    sink.notice(&format!(
                        "session {ended} timed out; continuing in session {}",
                        next.id
                    ));
                }
                ClientMessage::Control(other) => sink.notice(&control_text(&other)),
            }
        }
    }

    /// When to start the session that takes over from one requested at `started`: `None`
    /// when not following or when it is started already.
    fn handover_at(&self, started: Instant) -> Option<Instant> {
        if !self.options.follow || self.next.is_some() {
            return None;
        }
        let timeout = Duration::from_secs(
            self.options
                .request
                .timeout_seconds
                .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        );
        // `started` is before the host saw the request, so this errs on the early side.
        Some(started + timeout - HANDOVER_LEAD.min(timeout / 2))
    }

    /// Starts a session; returns it and when it was requested.
    async fn start(&mut self) -> Result<(Session, Instant), Error> {
        let requested = Instant::now();
        let session = self.client.start(&self.options.request).await?;
        tracing::debug!(session = %session.id, expires_at = %session.expires_at, "session started");
        self.live.push(session.id.clone());
        Ok((session, requested))
    }

    /// Stops every session still live, best effort and bounded by [`STOP_TIMEOUT`]: one that
    /// already ended answers `session_not_found`, which is fine.
    async fn stop_all(&mut self) {
        let client = self.client;
        let ids = std::mem::take(&mut self.live);
        let stops = async {
            for id in &ids {
                match client.stop(id).await {
                    Ok(_) => tracing::debug!(session = %id, "session stopped"),
                    Err(e) if e.code() == Some("session_not_found") => {}
                    Err(e) => tracing::warn!(session = %id, error = %e, "could not stop session"),
                }
            }
        };
        if tokio::time::timeout(STOP_TIMEOUT, stops).await.is_err() {
            tracing::warn!(sessions = ?ids, "timed out stopping sessions; they will expire");
        }
    }
}

/// Sleeps until `at`; never completes for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn ended_text(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Timeout => "timed out",
        EndReason::Stopped => "was stopped",
        EndReason::Shutdown => "ended: the host is shutting down",
        EndReason::FilterFailed => "ended: a filter failed (see the filter error above)",
    }
}

/// One line for a control event other than ending/ended.
fn control_text(control: &Control) -> String {
    match control {
        Control::AgentDisconnected => {
            "agent disconnected; the session continues when it reconnects".to_owned()
        }
        Control::AgentReconnected => "agent reconnected".to_owned(),
        Control::LogsDropped { count, reason } => {
            let why = match reason {
                logfleet_protocol::client::DropReason::ClientLagging => "this client fell behind",
                logfleet_protocol::client::DropReason::RateLimited => "the session's rate limit",
                logfleet_protocol::client::DropReason::AgentBufferFull => {
                    "the agent's buffer was full"
                }
                logfleet_protocol::client::DropReason::FilterFailed => {
                    "a filter failed before deciding about them"
                }
            };
            format!("{count} log lines dropped: {why}")
        }
        Control::FilterError { plugin, message } => {
            format!("plugin '{plugin}' failed and is disabled for this session: {message}")
        }
        Control::SessionEnding {
            seconds_remaining, ..
        } => format!("session ends in {seconds_remaining}s"),
        Control::SessionEnded { reason } => format!("session {}", ended_text(*reason)),
        Control::BandwidthWarning {
            bytes_per_hour,
            budget,
        } => format!(
            "your organisation streamed {bytes_per_hour} bytes in the last hour, over its budget of {budget}"
        ),
        Control::FiltersChanged { filters } => format!(
            "filters changed: {}",
            serde_json::to_string(filters).unwrap_or_default()
        ),
    }
}
