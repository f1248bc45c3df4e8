//! `GET /api/v1/stream/ws/{session_id}`: one session's stream to one client.

use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use logfleet_protocol::client::{CLOSE_CLIENT_TOO_SLOW, Control, DropReason};

use serde::Deserialize;

use crate::api::query::Query;
use crate::auth::WsUser;
use crate::config::Tuning;
use crate::error::ApiError;
use crate::fanout::{Outgoing, SubscribeError, Subscription};
use crate::state::{AppState, Stats};

/// Largest frame a session client may send. Clients have nothing to say beyond pongs and
/// close frames, so nothing bigger is buffered for them.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
/// Read chunk of a client socket. Clients send next to nothing, and tungstenite's 128 KiB
/// default is allocated and touched per connection: with hundreds of clients on a session that
/// was most of the host's memory.
const CLIENT_READ_BUFFER_BYTES: usize = 4 * 1024;

/// The session WebSocket's query (`?token=` is read by [`WsUser`]).
#[derive(Deserialize)]
pub struct ClientWsQuery {
    /// Resume after this `seq`: missed lines come from the replay buffer first.
    since_seq: Option<u64>,
}

pub async fn client_ws(
    State(state): State<AppState>,
    WsUser(claims): WsUser,
    Path(session_id): Path<String>,
    Query(ClientWsQuery { since_seq }): Query<ClientWsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let hub = state
        .sessions
        .hub(&claims.org, &session_id)
        .ok_or_else(|| ApiError::session_not_found(&session_id))?;
    let ws = ws.map_err(|e| ApiError::new(e.status(), "websocket_required", e.body_text()))?;
    let sub = hub.subscribe(since_seq).map_err(|e| match e {
        SubscribeError::Ended => ApiError::session_not_found(&session_id),
        SubscribeError::Full => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_clients",
            format!(
                "session '{}' already serves {} clients (the most it may); close one first",
                crate::error::echo(&session_id),
                state.config.tuning.max_clients_per_session
            ),
        ),
    })?;
    let guard = state.connection_guard.clone();
    Ok(ws
        // Selected only when offered: browsers offer it with their token (see `auth`).
        .protocols([crate::auth::WS_PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(CLIENT_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            serve_client(socket, sub, state).await;
            drop(guard);
        })
        .into_response())
}

/// Why the client loop ended, and so how to close.
enum End {
    SessionEnded,
    TooSlow,
    PeerGone,
}

impl End {
    fn as_str(&self) -> &'static str {
        match self {
            End::SessionEnded => "session ended",
            End::TooSlow => "too slow",
            End::PeerGone => "peer gone",
        }
    }
}

async fn serve_client(mut socket: WebSocket, sub: Subscription, state: AppState) {
    let Subscription {
        backlog,
        mut live,
        mut next_log,
        guard: _guard,
    } = sub;
    let tuning: Tuning = state.config.tuning;
    let limit = tuning.idle_timeout;
    let end = 'serve: {
        let texts = backlog.into_iter().map(|m| m.text).collect();
        if !send_all(&mut socket, texts, limit).await {
            break 'serve End::PeerGone;
        }
        let mut ping = tokio::time::interval(tuning.ping_interval);
        ping.reset();
        let mut last_heard = Instant::now();
        let mut lost_total = 0u64;
        loop {
            tokio::select! {
                burst = live.recv() => match burst {
                    Some(burst) => {
                        // Lines between what this client got and this burst were lost to lag.
                        let lost = burst.logs_before.saturating_sub(next_log);
                        next_log = burst.logs_before + burst.logs;
                        let notice = (lost > 0).then(|| {
                            Stats::add(&state.stats.client_messages_dropped, lost);
                            Outgoing::control(Control::LogsDropped {
                                count: lost,
                                reason: DropReason::ClientLagging,
                                agent_id: None,
                            })
                            .text
                        });
                        let ends = burst.messages.iter().any(|m| m.ends);
                        let texts = notice
                            .into_iter()
                            .chain(burst.messages.iter().map(|m| m.text.clone()))
                            .collect();
                        if !send_all(&mut socket, texts, limit).await {
                            break End::PeerGone;
                        }
                        if ends {
                            break End::SessionEnded;
                        }
                        lost_total += lost;
                        if lost_total > tuning.max_client_lost_lines {
                            break End::TooSlow;
                        }
                    }
                    None => break End::SessionEnded,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None => break End::PeerGone,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "session client read failed");
                        break End::PeerGone;
                    }
                    // Clients have nothing to say; any frame (pongs included) shows they live.
                    Some(Ok(_)) => last_heard = Instant::now(),
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > tuning.idle_timeout {
                        tracing::debug!("session client silent too long; dropping it");
                        break End::PeerGone;
                    }
                    if !send_within(&mut socket, Message::Ping(Default::default()), limit).await {
                        break End::PeerGone;
                    }
                }
            }
        }
    };
    tracing::debug!(reason = end.as_str(), "session client leaving");
    let close = match end {
        End::SessionEnded => Some((1000, "session ended")),
        End::TooSlow => {
            Stats::add(&state.stats.clients_closed_slow, 1);
            Some((CLOSE_CLIENT_TOO_SLOW, "client_too_slow"))
        }
        End::PeerGone => None,
    };
    if let Some((code, reason)) = close {
        close_gracefully(socket, code, reason).await;
    }
}

/// Longest wait for a peer to answer our close frame.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a close frame and reads until the peer's answer, so the last messages are not lost:
/// closing a TCP socket that still has unread input makes the kernel send RST, and the peer
/// then discards what it had received but not yet read. Reading goes on while the close frame
/// waits for buffer space (a slow peer), and the whole exchange is bounded.
pub async fn close_gracefully(socket: WebSocket, code: u16, reason: &str) {
    let (mut tx, mut rx) = socket.split();
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let send = async {
        let _ = tx.send(Message::Close(Some(frame))).await;
    };
    let drain = async {
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        tokio::join!(send, drain);
    })
    .await;
}

/// Writes text messages with one flush at the end, giving up after `limit`: a burst of lines
/// costs one write, not one per line. Returns whether all went out.
async fn send_all(socket: &mut WebSocket, texts: Vec<Utf8Bytes>, limit: Duration) -> bool {
    let write = async {
        for text in texts {
            socket.feed(Message::Text(text)).await?;
        }
        socket.flush().await
    };
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}

/// Sends one message, giving up after `limit`: a peer that stopped reading must not pin this
/// task (and its queue) forever. Returns whether the message went out.
async fn send_within(socket: &mut WebSocket, msg: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, socket.send(msg)).await,
        Ok(Ok(()))
    )
}
