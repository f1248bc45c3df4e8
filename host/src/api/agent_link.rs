//! `GET /api/v1/agent/connect`: the WebSocket an agent keeps open. Carries `Hello`, metrics and
//! log batches up, session commands down (frames in `logfleet_protocol::agent`).
//!
//! Everything an agent sends is bounded ([`logfleet_protocol::agent_limits`]): a frame is
//! inflated at most to [`MAX_AGENT_FRAME_BYTES`], then checked, and an agent that breaks a
//! bound is closed with [`CLOSE_LIMIT_EXCEEDED`] and a reason naming it, and counted. Every
//! write to an agent has a deadline ([`crate::config::Tuning::agent_write_deadline`]): an
//! agent that stops reading is dropped rather than holding its link task.
//!
//! Acknowledged delivery (protocol 3): every frame after `Hello` has a number (from
//! `Hello::next_frame`, one up per binary message). A frame is applied unless the agent's
//! [`Delivered`] mark says it was already (a resend after a reconnect), and then
//! acknowledged with a cumulative `Ack { upto }` once it is handled — a batch is in its
//! session's hub by then. Acknowledgements wait until nothing more is readable, so a burst of
//! frames costs one `Ack`.

use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use logfleet_protocol::agent::{
    self, AgentFrame, CLOSE_LIMIT_EXCEEDED, CLOSE_PROTOCOL_MISMATCH, CLOSE_REVOKED,
    CLOSE_SUPERSEDED, FrameError, Hello, HostFrame, PROTOCOL_VERSION, Record,
};
use logfleet_protocol::agent_limits::{self, Limit, LimitExceeded, MAX_AGENT_FRAME_BYTES};
use logfleet_protocol::client::{ClientMessage, Control, LogMessage, Metadata};
use logfleet_protocol::labels::{self, Labels};
use tokio_tungstenite::tungstenite;

use crate::api::ws::close_gracefully;
use crate::auth::AgentIdentity;
use crate::delivery::Delivered;
use crate::error::ApiError;
use crate::fanout::{Outgoing, to_text};
use crate::identity::AgentKey;
use crate::registry::LinkEnd;
use crate::session::FilterFailed;
use crate::state::{AppState, Stats};
use crate::time::rfc3339_millis;
use crate::usage;

/// Read chunk of an agent link. Tungstenite's 128 KiB default is allocated and touched per
/// connection, which alone would take 1.3 GB for 10,000 agents that mostly send 40-byte
/// metrics; a streaming agent's larger frames are still read whole, in more reads.
const AGENT_READ_BUFFER_BYTES: usize = 8 * 1024;

/// Frames handled before an `Ack` goes out even while more are waiting to be read.
const ACK_EVERY_FRAMES: usize = 32;

pub async fn agent_connect(
    State(state): State<AppState>,
    ident: AgentIdentity,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| ApiError::new(e.status(), "websocket_required", e.body_text()))?;
    let guard = state.connection_guard.clone();
    Ok(ws
        // The codec tag is the one byte a frame may have beyond the inflated bound.
        .max_message_size(MAX_AGENT_FRAME_BYTES + 1)
        .max_frame_size(MAX_AGENT_FRAME_BYTES + 1)
        .read_buffer_size(AGENT_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            run_link(socket, ident, state).await;
            drop(guard);
        })
        .into_response())
}

async fn run_link(mut socket: WebSocket, ident: AgentIdentity, state: AppState) {
    let tuning = state.config.tuning;
    let (hello, labels) =
        match tokio::time::timeout(tuning.hello_timeout, read_hello(&mut socket)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err((code, reason))) => {
                tracing::warn!(agent = %ident.key, %reason, "agent refused");
                if code == CLOSE_LIMIT_EXCEEDED {
                    Stats::add(&state.stats.agent_limit_violations, 1);
                }
                close_gracefully(socket, code, &reason).await;
                return;
            }
            Err(_) => {
                tracing::warn!(agent = %ident.key, "agent sent no hello in time");
                return;
            }
        };
    let key = &ident.key;
    let mut conn = state
        .agents
        .connect(key, ident.name.as_deref(), &hello, &labels);
    // Revoked while this link waited for its hello: a revocation marks the agent revoked
    // before it unlists it, so either that unlisting closed this link already, or this check
    // sees the mark.
    if state.enrollments.is_revoked(key) {
        state.agents.remove(key);
        let (code, reason) = close_for(Some(LinkEnd::Revoked));
        close_gracefully(socket, code, &reason).await;
        return;
    }
    Stats::add(&state.stats.agent_connections, 1);
    tracing::info!(agent = %ident.key, name = %hello.name, replaced = conn.replaced, "agent connected");
    // Joins the fleet sessions that want it (with its labels as the registry merged them).
    let specs = match state.agents.labeled(key) {
        Some((me, labels)) => state.sessions.specs_for_agent(&me, &labels),
        None => Vec::new(),
    };
    let sync = HostFrame::Sessions(specs);
    if !send_to_agent(&mut socket, &sync, key, &state).await {
        state.agents.disconnect(key, conn.link_id);
        return;
    }
    state
        .sessions
        .agent_link_changed(key, conn.link_id, true, &hello.hostname);

    let mut shutdown = state.shutdown.clone();
    let mut ping = tokio::time::interval(tuning.ping_interval);
    ping.reset();
    let mut last_heard = Instant::now();
    let mut numbering = Numbering {
        outbox: hello.outbox,
        next: hello.next_frame,
        delivered: conn.delivered.clone(),
    };
    // The highest frame number handled and not acknowledged yet, and how many frames since
    // the last `Ack`.
    let mut ack_owed: Option<u64> = None;
    let mut unacked = 0usize;
    let close_reason = loop {
        // Biased: reading goes before acknowledging, so an `Ack` covers everything readable.
        // Timers and commands go first: they are rare, and a flood of frames must not starve
        // them.
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Some((1001, "host shutting down".to_owned())),
            end = &mut conn.end => break Some(close_for(end.ok())),
            cmd = conn.commands.recv() => match cmd {
                Some(frame) => {
                    let frame = state.sessions.time_left_now(frame);
                    if !send_to_agent(&mut socket, &frame, key, &state).await {
                        break None;
                    }
                }
                // The registry dropped this link: the command sender goes with the reason.
                None => break Some(close_for(conn.end.try_recv().ok())),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > tuning.idle_timeout {
                    tracing::warn!(agent = %ident.key, "agent silent too long; dropping link");
                    break None;
                }
                let ping = socket.send(Message::Ping(Default::default()));
                if tokio::time::timeout(tuning.agent_write_timeout, ping).await.map_or(true, |r| r.is_err()) {
                    break None;
                }
                state.agents.touch(key);
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    last_heard = Instant::now();
                    let number = numbering.take();
                    let reply = match read_frame(&bytes) {
                        // Claimed and applied with no await in between (`handle_frame` awaits
                        // only to answer `FetchPlugin`): see `crate::delivery`.
                        Ok(frame) if numbering.claim(number) => handle_frame(&state, &ident, &numbering.delivered, frame, bytes.len()).await,
                        Ok(_) => {
                            tracing::debug!(agent = %ident.key, frame = number, "frame handled already (a resend); skipped");
                            None
                        }
                        Err(Refused::Limit(e)) => break Some(limit_exceeded(&state, key, &e)),
                        Err(Refused::Malformed(e)) => {
                            tracing::warn!(agent = %ident.key, error = %e, "bad frame from agent");
                            None
                        }
                    };
                    ack_owed = Some(number);
                    unacked += 1;
                    // A link that always has more to read still acknowledges as it goes, or the
                    // agent's window would fill and it would count healthy batches as dropped.
                    if unacked >= ACK_EVERY_FRAMES
                        && let Some(upto) = ack_owed.take()
                    {
                        unacked = 0;
                        if !send_to_agent(&mut socket, &HostFrame::Ack { upto }, key, &state).await {
                            break None;
                        }
                    }
                    // Replies (plugin components, up to 16 MiB) go straight out on this socket,
                    // one at a time, never piling up in the command queue.
                    if let Some(reply) = reply
                        && !send_to_agent(&mut socket, &reply, key, &state).await
                    {
                        break None;
                    }
                }
                Some(Err(e)) => match oversized(e) {
                    Some(e) => break Some(limit_exceeded(&state, key, &e)),
                    None => break None,
                },
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            // Nothing more readable right now: acknowledge what was handled.
            _ = std::future::ready(()), if ack_owed.is_some() => {
                unacked = 0;
                if let Some(upto) = ack_owed.take()
                    && !send_to_agent(&mut socket, &HostFrame::Ack { upto }, key, &state).await
                {
                    break None;
                }
            }
        }
    };
    if let Some((code, reason)) = close_reason {
        close_gracefully(socket, code, &reason).await;
    }
    if state.agents.disconnect(key, conn.link_id) {
        tracing::info!(agent = %ident.key, "agent disconnected");
        state
            .sessions
            .agent_link_changed(key, conn.link_id, false, &hello.hostname);
    }
}

/// The numbers of the frames on one link, and the agent's mark of what is handled.
struct Numbering {
    /// The outbox the link's `Hello` named.
    outbox: u64,
    /// The number of the next binary message.
    next: u64,
    delivered: std::sync::Arc<Delivered>,
}

impl Numbering {
    /// The number of the message just read (every binary message has one, even one that
    /// turns out malformed: the agent counted it).
    fn take(&mut self) -> u64 {
        let number = self.next;
        self.next = self.next.wrapping_add(1);
        number
    }

    /// Whether frame `number` is to be applied (not a resend of one handled already).
    fn claim(&self, number: u64) -> bool {
        self.delivered.claim(self.outbox, number)
    }
}

/// The close frame for a link the registry ended. Without a reason, its command queue was
/// stuck or the host is shutting down: the agent reconnects and resynchronises.
fn close_for(end: Option<LinkEnd>) -> (u16, String) {
    let (code, reason) = match end {
        Some(LinkEnd::Superseded) => (
            CLOSE_SUPERSEDED,
            "superseded: another connection of this agent (same org and id) took over",
        ),
        Some(LinkEnd::Revoked) => (CLOSE_REVOKED, "this agent was revoked"),
        None => (1000, "link reset"),
    };
    (code, reason.to_owned())
}

/// Reads the first frame, which must be a `Hello` of this protocol within the limits; else
/// the close code and reason to refuse the agent with.
async fn read_hello(socket: &mut WebSocket) -> Result<(Hello, Labels), (u16, String)> {
    let protocol = |reason: String| (CLOSE_PROTOCOL_MISMATCH, reason);
    loop {
        match socket.recv().await {
            Some(Ok(Message::Binary(bytes))) => {
                return match read_frame(&bytes) {
                    Ok(AgentFrame::Hello(hello)) if hello.protocol == PROTOCOL_VERSION => {
                        Ok((hello, Labels::new()))
                    }
                    Ok(AgentFrame::HelloLabeled { hello, labels })
                        if hello.protocol == PROTOCOL_VERSION =>
                    {
                        labels::check_labels(&labels)
                            .map(|()| (hello, labels))
                            .map_err(|e| (CLOSE_LIMIT_EXCEEDED, format!("labels: {e}")))
                    }
                    Ok(AgentFrame::Hello(hello) | AgentFrame::HelloLabeled { hello, .. }) => {
                        Err(protocol(format!(
                            "agent protocol {} is not supported; this host speaks {PROTOCOL_VERSION}",
                            hello.protocol
                        )))
                    }
                    Ok(_) => Err(protocol("the first frame must be hello".to_owned())),
                    Err(Refused::Limit(e)) => Err((CLOSE_LIMIT_EXCEEDED, e.to_string())),
                    Err(Refused::Malformed(e)) => Err(protocol(format!(
                        "cannot read hello ({e}); this host speaks protocol {PROTOCOL_VERSION}"
                    ))),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) => {
                return Err(match oversized(e) {
                    Some(e) => (CLOSE_LIMIT_EXCEEDED, e.to_string()),
                    None => protocol("connection failed before hello".to_owned()),
                });
            }
            _ => return Err(protocol("connection closed before hello".to_owned())),
        }
    }
}

/// Why a frame from an agent was not applied.
enum Refused {
    /// Over a bound: the agent is closed with [`CLOSE_LIMIT_EXCEEDED`].
    Limit(LimitExceeded),
    /// Not a frame of this protocol: logged and skipped.
    Malformed(FrameError),
}

/// Decodes one agent frame, inflating at most to [`MAX_AGENT_FRAME_BYTES`], and checks it
/// against the limits on what an agent sends.
fn read_frame(bytes: &[u8]) -> Result<AgentFrame, Refused> {
    let frame =
        agent::decode_within::<AgentFrame>(bytes, MAX_AGENT_FRAME_BYTES).map_err(|e| match e {
            FrameError::TooLarge { size, limit } => Refused::Limit(LimitExceeded {
                limit: Limit::FrameBytes,
                actual: size,
                max: limit,
            }),
            FrameError::OverLimit(exceeded) => Refused::Limit(exceeded),
            other => Refused::Malformed(other),
        })?;
    agent_limits::check(&frame).map_err(Refused::Limit)?;
    Ok(frame)
}

/// The bound a read error broke, if it was a message over the WebSocket size cap.
fn oversized(e: axum::Error) -> Option<LimitExceeded> {
    let e = e.into_inner();
    match e.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(cap)) => {
            let (actual, max) = match cap {
                tungstenite::error::CapacityError::MessageTooLong { size, max_size } => {
                    (*size, *max_size)
                }
                _ => (MAX_AGENT_FRAME_BYTES + 2, MAX_AGENT_FRAME_BYTES + 1),
            };
            Some(LimitExceeded {
                limit: Limit::FrameBytes,
                actual,
                max,
            })
        }
        _ => None,
    }
}

/// Counts and logs a broken limit; the close code and reason for the agent.
fn limit_exceeded(state: &AppState, agent: &AgentKey, e: &LimitExceeded) -> (u16, String) {
    Stats::add(&state.stats.agent_limit_violations, 1);
    tracing::warn!(%agent, limit = %e.limit, actual = e.actual, max = e.max, "agent broke a limit; closing its link");
    (CLOSE_LIMIT_EXCEEDED, e.to_string())
}

/// Writes one frame to the agent within [`crate::config::Tuning::agent_write_deadline`] for its
/// size. `false` when the link failed or the agent did not take it in time (counted): either
/// way the link is done.
async fn send_to_agent(
    socket: &mut WebSocket,
    frame: &HostFrame,
    agent: &AgentKey,
    state: &AppState,
) -> bool {
    let bytes = agent::encode(frame);
    let deadline = state.config.tuning.agent_write_deadline(bytes.len());
    match tokio::time::timeout(deadline, socket.send(Message::Binary(bytes.into()))).await {
        Ok(result) => result.is_ok(),
        Err(_) => {
            Stats::add(&state.stats.agent_write_timeouts, 1);
            tracing::warn!(%agent, ?deadline, "agent did not read its link in time; dropping it");
            false
        }
    }
}

/// Applies one frame (`wire_bytes` long on the link) from an agent; returns what to answer
/// it directly, if anything.
async fn handle_frame(
    state: &AppState,
    ident: &AgentIdentity,
    delivered: &Delivered,
    frame: AgentFrame,
    wire_bytes: usize,
) -> Option<HostFrame> {
    let agent = &ident.key;
    let now = Instant::now();
    match frame {
        AgentFrame::Hello(_) | AgentFrame::HelloLabeled { .. } => {}
        AgentFrame::Metrics(m) => {
            let bytes = usage::Bytes {
                metrics_bytes: wire_bytes as u64,
                streaming_bytes: 0,
            };
            state.usage.record(agent, bytes, now);
            state.agents.record_metrics(agent, &m);
        }
        AgentFrame::Logs(mut batch) => {
            let bytes = usage::Bytes {
                metrics_bytes: 0,
                streaming_bytes: wire_bytes as u64,
            };
            let org_hour = state.usage.record(agent, bytes, now);
            let Some(feed) = state.sessions.agent_feed(agent, &batch.session_id) else {
                tracing::debug!(session = %batch.session_id, "log batch for a session that is no longer active");
                return None;
            };
            tracing::trace!(session = %batch.session_id, lines = batch.records.len(), "log batch");
            let repeated = delivered.fresh_logs(&batch.session_id, &mut batch.records);
            if repeated > 0 {
                Stats::add(&state.stats.duplicate_lines_skipped, repeated as u64);
                tracing::debug!(session = %batch.session_id, lines = repeated, "lines the session already had skipped");
            }
            let lines = batch.records.len() as u64;
            Stats::add(&state.stats.log_lines_received, lines);
            feed.usage.shipped(lines, wire_bytes as u64, now);
            let budget = state.config.tuning.org_bandwidth_budget;
            if budget > 0 && org_hour > budget && feed.usage.should_warn(now, usage::WARN_EVERY) {
                feed.hub.publish(Control::BandwidthWarning {
                    bytes_per_hour: org_hour,
                    budget,
                });
            }
            let agent_id = agent.id.to_string();
            if feed.fleet {
                feed.hub.publish_numbered(|first| {
                    (first..)
                        .zip(batch.records)
                        .map(|(seq, r)| {
                            log_message(r, Some(seq), &agent_id, &feed.hostname, feed.backfilling)
                        })
                        .collect()
                });
            } else {
                let messages = batch
                    .records
                    .into_iter()
                    .map(|r| log_message(r, None, &agent_id, &feed.hostname, feed.backfilling))
                    .collect();
                if feed.backfilling {
                    feed.hub.publish_opening_logs(messages);
                } else {
                    feed.hub.publish_logs(messages);
                }
            }
        }
        AgentFrame::Dropped {
            session_id,
            count,
            reason,
        } => {
            if let Some(feed) = state.sessions.agent_feed(agent, &session_id) {
                Stats::add(&state.stats.agent_drops_reported, count);
                feed.usage.dropped(reason, count);
                let dropped = Control::LogsDropped {
                    count,
                    reason,
                    agent_id: Some(agent.id.to_string()),
                };
                if feed.backfilling {
                    feed.hub.publish_opening(dropped);
                } else {
                    feed.hub.publish(dropped);
                }
            }
        }
        AgentFrame::FilterError {
            session_id,
            plugin,
            message,
            dropped,
        } => {
            // The agent has stopped the session (filters fail closed); end it for clients.
            let failure = FilterFailed {
                plugin,
                message,
                dropped,
            };
            if state.sessions.fail(agent, &session_id, failure) {
                Stats::add(&state.stats.agent_drops_reported, dropped);
            }
        }
        AgentFrame::FiltersChanged { session_id } => {
            state.sessions.filters_applied(agent, &session_id);
        }
        AgentFrame::BackfillDone {
            session_id,
            count,
            truncated,
        } => {
            state
                .sessions
                .backfill_done(agent, &session_id, count, truncated);
        }
        AgentFrame::FetchPlugin { digest } => {
            // Only components of the agent's own org; the agent verifies the digest again.
            // Reading up to 16 MiB from disk happens on a blocking thread.
            let plugins = state.plugins.clone();
            let (org, wanted) = (agent.org.clone(), digest.clone());
            let bytes = tokio::task::spawn_blocking(move || plugins.bytes_for(&org, &wanted))
                .await
                .ok()
                .flatten();
            return Some(match bytes {
                Some(bytes) => HostFrame::Plugin { digest, bytes },
                None => HostFrame::PluginUnavailable {
                    digest,
                    message: "no such plugin in this org (deleted?)".to_owned(),
                },
            });
        }
    }
    None
}

/// A record as clients get it. `session_seq`: the `seq` a fleet session gave it (the agent's
/// own then goes to `agent_seq`); `backfill`: it is part of the session's backfill.
fn log_message(
    r: Record,
    session_seq: Option<u64>,
    agent_id: &str,
    hostname: &str,
    backfill: bool,
) -> Outgoing {
    let seq = session_seq.unwrap_or(r.seq);
    let agent_seq = session_seq.map(|_| r.seq);
    // An agent's fields that are not a JSON object are left out rather than passed on.
    let fields = r
        .fields
        .and_then(|f| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&f).ok());
    let msg = ClientMessage::Log(LogMessage {
        seq,
        agent_seq,
        agent_id: agent_id.to_owned(),
        timestamp: rfc3339_millis(r.event_ms.unwrap_or(r.timestamp_ms)),
        level: r.level,
        source: r.source,
        message: r.message,
        metadata: Metadata {
            host: hostname.to_owned(),
            file: r.file,
            line: r.line,
            read_at: rfc3339_millis(r.timestamp_ms),
            fields,
        },
        backfill,
    });
    Outgoing {
        seq: Some(seq),
        ends: false,
        text: to_text(&msg),
    }
}
