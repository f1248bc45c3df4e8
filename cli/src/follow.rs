//! Streaming a session to the terminal: resuming it when the connection breaks, optionally
//! following across sessions, and stopping every session it started.
//!
//! **Resume.** When the stream breaks without `session_ended`, it is reopened with backoff
//! ([`crate::retry`]) and `?since_seq=` the last `seq` delivered, so the host replays what was
//! missed from its per-session buffer (and says with `logs_dropped` what that buffer no longer
//! held). Anything at or below the last delivered `seq` is skipped, so no line is shown twice.
//! A session that ended meanwhile answers `session_not_found`; one whose expiry (by this
//! machine's clock) is [`EXPIRY_GRACE`] past is given up on.
//!
//! **Follow.** Sessions always expire. `--follow` keeps a stream going anyway, the way the
//! reference says to extend one: start the next session (same request) before the current one
//! ends; keep printing the current one until it ends; then connect to the next with `since_seq`
//! = the last `seq` printed, so the host replays what that session already has. `seq` is per
//! agent and increases by one per line read, so lines both sessions carry are printed once, and
//! because the next session is running on the agent before the current one ends, there is no
//! gap. When the next session cannot be started (the agent is offline for a restart, the host is
//! unreachable), that is said once and retried with backoff, while the current session streams
//! on; if it ends first, starting is retried until it works or the user interrupts. A session
//! ended by a host shutdown is followed the same way.
//!
//! When to start the next one: [`HANDOVER_LEAD`] before the current one expires (or half way
//! through a session shorter than twice that). Not as soon as `session_ending` arrives: for a
//! session shorter than the 30 s warning that arrives at once, and a successor started then
//! would expire together with it. Not earlier than needed either: the overlap is replayed from
//! the host's bounded per-session buffer when the CLI switches over.
//!
//! **Stop.** Every session started here and not seen to end is stopped on the host before
//! [`run`] returns ([`crate::stop`]: retried on a fresh connection for up to [`STOP_TIMEOUT`]);
//! the ones that could not be stopped are returned in [`Finished::not_stopped`], for the caller
//! to say so.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use logfleet_protocol::client::{ClientMessage, Control, EndReason, LogMessage};
use logfleet_protocol::rest::{DEFAULT_TIMEOUT_SECONDS, Session, StartRequest};

use crate::client::Client;
use crate::error::Error;
use crate::output::{control_text, ended_text};
use crate::retry::{Backoff, is_transient};
use crate::stop::stop_all;
pub use crate::stop::{NotStopped, STOP_TIMEOUT};
use crate::stream::LogStream;

/// How long before the current session expires the next one is started. Long enough for the
/// start to reach the agent over a slow link; short enough that the overlap (at the host's
/// default 2,000 lines/s rate limit, 6,000 lines) fits the host's 10,000-line replay buffer.
pub const HANDOVER_LEAD: Duration = Duration::from_secs(3);

/// How long past a session's expiry (as this machine's clock estimates it) reconnecting to it
/// is still tried: the host's clock and the start request's latency may put the real expiry a
/// little later, but a session this far past its end is gone.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(10);

/// Where [`run`] delivers what it receives.
pub trait Sink {
    /// A log line to print. An error ends the run: [`io::ErrorKind::BrokenPipe`] means the
    /// reader went away (`| head`) and ends it quietly.
    fn log(&mut self, log: &LogMessage) -> io::Result<()>;
    /// A message for the person watching (session ending, lines dropped, reconnecting, …).
    fn notice(&mut self, text: &str);
}

/// How a [`run`] ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The (last) session ended on the host for this reason.
    Ended(EndReason),
    /// The shutdown future completed (Ctrl-C, SIGTERM).
    Interrupted,
    /// The sink's reader went away.
    OutputClosed,
}

/// What a [`run`] did: how streaming ended, and what it could not clean up.
#[derive(Debug)]
pub struct Finished {
    pub outcome: Result<Outcome, Error>,
    /// Empty when every session started here is stopped or ended.
    pub not_stopped: Vec<NotStopped>,
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
/// `follow`, until `shutdown` completes or something fails for good). Sessions started here
/// are stopped on the host on every early exit.
pub async fn run<S: Sink>(
    client: &Client,
    options: &Options,
    sink: &mut S,
    shutdown: impl Future<Output = ()>,
) -> Finished {
    let mut follower = Follower {
        client,
        options,
        live: Vec::new(),
        next: None,
        last_seq: None,
        renew_retry: None,
        renew_backoff: Backoff::default(),
        started_one: false,
    };
    let shutdown = std::pin::pin!(shutdown);
    let outcome = follower.stream(sink, shutdown).await;
    // After a normal end nothing is live; after anything else the current (and maybe the
    // next) session still is.
    let not_stopped = stop_all(client, std::mem::take(&mut follower.live)).await;
    Finished {
        outcome,
        not_stopped,
    }
}

/// The state of one `run`.
struct Follower<'a> {
    client: &'a Client,
    options: &'a Options,
    /// Sessions started here and not yet seen to end: what to stop on exit.
    live: Vec<Session>,
    /// The session started to take over from the current one, and when it was requested.
    next: Option<(Session, Instant)>,
    /// The highest `seq` delivered to the sink.
    last_seq: Option<u64>,
    /// When to try starting the next session again after a failed attempt.
    renew_retry: Option<Instant>,
    renew_backoff: Backoff,
    /// A session was started: the ones that continue it ask for no backfill (the lines
    /// before them were streamed already).
    started_one: bool,
}

/// The session being streamed.
struct Current {
    session: Session,
    /// When it was requested, by this machine's clock.
    started: Instant,
    stream: LogStream,
}

/// The shutdown future, pinned once and polled by every wait that may be interrupted.
type Shutdown<'s, F> = Pin<&'s mut F>;

impl Follower<'_> {
    async fn stream<S: Sink, F: Future<Output = ()>>(
        &mut self,
        sink: &mut S,
        mut shutdown: Shutdown<'_, F>,
    ) -> Result<Outcome, Error> {
        let (session, started) = self.start().await?;
        let mut cur = match self
            .attach(session, started, None, sink, &mut shutdown)
            .await?
        {
            Ok(cur) => cur,
            Err(outcome) => return Ok(outcome),
        };
        loop {
            let renew_at = self.renew_at(cur.started);
            let msg = tokio::select! {
                msg = cur.stream.next() => msg,
                () = sleep_until_some(renew_at) => {
                    self.renew(sink).await?;
                    continue;
                }
                // Only waiting races the shutdown signal: REST calls run to completion, so a
                // session is never started without its id being recorded for clean-up.
                () = &mut shutdown => return Ok(Outcome::Interrupted),
            };
            let msg = match msg {
                Ok(Some(msg)) => msg,
                Ok(None) | Err(Error::StreamClosed { .. }) => {
                    let detail = match msg {
                        Err(Error::StreamClosed { detail, .. }) => detail,
                        _ => "closed without session_ended".to_owned(),
                    };
                    sink.notice(&format!(
                        "lost the stream of session {} ({detail}); reconnecting",
                        cur.session.id
                    ));
                    let since = self.last_seq.unwrap_or(0);
                    let (session, started) = (cur.session.clone(), cur.started);
                    cur = match self
                        .attach(session, started, Some(since), sink, &mut shutdown)
                        .await?
                    {
                        Ok(next) => {
                            sink.notice(&format!(
                                "reconnected to session {} (resumed after seq {since})",
                                next.session.id
                            ));
                            next
                        }
                        Err(Outcome::Ended(_)) => {
                            let reason = if Instant::now() >= self.expiry(started) {
                                EndReason::Timeout
                            } else {
                                EndReason::Stopped
                            };
                            sink.notice(&format!(
                                "session {} ended while this client was disconnected",
                                cur.session.id
                            ));
                            match self.carry_on(reason, sink, &mut shutdown).await? {
                                Ok(next) => next,
                                Err(outcome) => return Ok(outcome),
                            }
                        }
                        Err(outcome) => return Ok(outcome),
                    };
                    continue;
                }
                Err(e) => return Err(e),
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
                    let id = &cur.session.id;
                    sink.notice(&if self.options.follow {
                        format!("session {id} ends in {seconds_remaining}s (--follow: a new session continues it)")
                    } else {
                        format!("session {id} ends in {seconds_remaining}s (use --follow to keep streaming)")
                    });
                }
                ClientMessage::Control(Control::SessionEnded { reason }) => {
                    let ended = cur.session.id.clone();
                    self.live.retain(|s| s.id != ended);
                    if !self.follows(reason) && reason != EndReason::Timeout {
                        sink.notice(&format!("session {ended} {}", ended_text(reason)));
                    }
                    cur.stream.close().await;
                    cur = match self.carry_on(reason, sink, &mut shutdown).await? {
                        Ok(next) => next,
                        Err(outcome) => return Ok(outcome),
                    };
                    sink.notice(&format!(
                        "session {ended} {}; continuing in session {}",
                        ended_text(reason),
                        cur.session.id
                    ));
                }
                ClientMessage::Control(other) => sink.notice(&control_text(&other)),
            }
        }
    }

    /// Whether a session that ended for `reason` is followed by the next one.
    fn follows(&self, reason: EndReason) -> bool {
        self.options.follow && matches!(reason, EndReason::Timeout | EndReason::Shutdown)
    }

    /// After the current session ended for `reason`: the next one to stream, or how the run
    /// ends.
    async fn carry_on<S: Sink, F: Future<Output = ()>>(
        &mut self,
        reason: EndReason,
        sink: &mut S,
        shutdown: &mut Shutdown<'_, F>,
    ) -> Result<Result<Current, Outcome>, Error> {
        if !self.follows(reason) {
            return Ok(Err(Outcome::Ended(reason)));
        }
        loop {
            let (session, started) = match self.next.take() {
                Some(next) => next,
                None => {
                    // Expired before the handover (the agent or host was away, or the host's
                    // clock ran ahead of ours): carry on, but say lines may be missing.
                    sink.notice(
                        "the session ended before the next one started; lines read meanwhile are not shown",
                    );
                    match self.start_retrying(sink, shutdown).await? {
                        Some(next) => next,
                        None => return Ok(Err(Outcome::Interrupted)),
                    }
                }
            };
            self.renew_retry = None;
            self.renew_backoff.reset();
            let since = Some(self.last_seq.unwrap_or(0));
            match self.attach(session, started, since, sink, shutdown).await? {
                Ok(cur) => return Ok(Ok(cur)),
                Err(Outcome::Ended(_)) => continue,
                Err(outcome) => return Ok(Err(outcome)),
            }
        }
    }

    /// Connects to `session`'s stream, retrying transient failures with backoff. `Err` holds
    /// how the run ends instead: `Ended` when the session is gone, `Interrupted`.
    async fn attach<S: Sink, F: Future<Output = ()>>(
        &mut self,
        session: Session,
        started: Instant,
        since_seq: Option<u64>,
        sink: &mut S,
        shutdown: &mut Shutdown<'_, F>,
    ) -> Result<Result<Current, Outcome>, Error> {
        let mut backoff = Backoff::default();
        let give_up = self.expiry(started) + EXPIRY_GRACE;
        loop {
            // After a failed first attempt the session has been running unwatched: replay it.
            let since = match since_seq {
                None if backoff.failures() > 0 => Some(0),
                since => since,
            };
            let attempt = tokio::select! {
                r = self.client.connect(&session, since) => r,
                () = shutdown.as_mut() => return Ok(Err(Outcome::Interrupted)),
            };
            match attempt {
                Ok(stream) => {
                    return Ok(Ok(Current {
                        session,
                        started,
                        stream,
                    }));
                }
                Err(e)
                    if e.code() == Some("session_not_found")
                        || (is_transient(&e) && Instant::now() >= give_up) =>
                {
                    self.live.retain(|s| s.id != session.id);
                    return Ok(Err(Outcome::Ended(EndReason::Timeout)));
                }
                Err(e) if is_transient(&e) => {
                    if backoff.failures() == 0 {
                        sink.notice(&format!(
                            "cannot connect to session {}: {e}; retrying",
                            session.id
                        ));
                    }
                    let interrupted = tokio::select! {
                        () = tokio::time::sleep(backoff.delay()) => false,
                        () = shutdown.as_mut() => true,
                    };
                    if interrupted {
                        return Ok(Err(Outcome::Interrupted));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a session, retrying transient failures (agent offline, host unreachable) with
    /// backoff until it works; `None` when interrupted meanwhile.
    async fn start_retrying<S: Sink, F: Future<Output = ()>>(
        &mut self,
        sink: &mut S,
        shutdown: &mut Shutdown<'_, F>,
    ) -> Result<Option<(Session, Instant)>, Error> {
        let mut backoff = Backoff::default();
        loop {
            match self.start().await {
                Ok(started) => {
                    if backoff.failures() > 0 {
                        sink.notice(&format!("started session {}", started.0.id));
                    }
                    return Ok(Some(started));
                }
                Err(e) if is_transient(&e) => {
                    if backoff.failures() == 0 {
                        sink.notice(&format!(
                            "cannot start a session: {e}; retrying until it can (Ctrl-C to give up)"
                        ));
                    }
                    let interrupted = tokio::select! {
                        () = tokio::time::sleep(backoff.delay()) => false,
                        () = shutdown.as_mut() => true,
                    };
                    if interrupted {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the session that takes over from the current one. A transient failure is said
    /// once and retried later (see [`Follower::renew_at`]); the current session streams on.
    async fn renew<S: Sink>(&mut self, sink: &mut S) -> Result<(), Error> {
        match self.start().await {
            Ok(next) => {
                if self.renew_backoff.failures() > 0 {
                    sink.notice(&format!("started the next session {}", next.0.id));
                }
                self.renew_backoff.reset();
                self.renew_retry = None;
                self.next = Some(next);
                Ok(())
            }
            Err(e) if is_transient(&e) => {
                if self.renew_backoff.failures() == 0 {
                    sink.notice(&format!("cannot start the next session yet: {e}; retrying"));
                }
                self.renew_retry = Some(Instant::now() + self.renew_backoff.delay());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// When to start the session that takes over from one requested at `started`: `None`
    /// when not following or when it is started already.
    fn renew_at(&self, started: Instant) -> Option<Instant> {
        if !self.options.follow || self.next.is_some() {
            return None;
        }
        let timeout = self.timeout();
        // `started` is before the host saw the request, so this errs on the early side.
        let due = started + timeout - HANDOVER_LEAD.min(timeout / 2);
        Some(self.renew_retry.map_or(due, |retry| retry.max(due)))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(
            self.options
                .request
                .timeout_seconds
                .unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        )
    }

    /// When a session requested at `started` expires, by this machine's clock.
    fn expiry(&self, started: Instant) -> Instant {
        started + self.timeout()
    }

    /// Starts a session; returns it and when it was requested.
    async fn start(&mut self) -> Result<(Session, Instant), Error> {
        let requested = Instant::now();
        let session = if self.started_one && self.options.request.backfill.is_some() {
            let continuing = StartRequest {
                backfill: None,
                ..self.options.request.clone()
            };
            self.client.start(&continuing).await?
        } else {
            self.client.start(&self.options.request).await?
        };
        self.started_one = true;
        tracing::debug!(session = %session.id, expires_at = %session.expires_at, "session started");
        self.live.push(session.clone());
        Ok((session, requested))
    }
}

/// Sleeps until `at`; never completes for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
