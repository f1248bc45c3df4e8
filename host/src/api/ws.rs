//! `GET /api/v1/stream/ws/{session_id}`: one session's stream to one client.

use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use logfleet_protocol::client::{CLOSE_CLIENT_TOO_SLOW, Control, DropReason};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{WsUser, query_param};
use crate::config::Tuning;
use crate::error::ApiError;
use crate::fanout::{Outgoing, Subscription};
use crate::state::{AppState, Stats};

/// Times in a row a client may fall behind without once catching up before it is closed with
/// [`CLOSE_CLIENT_TOO_SLOW`].
pub const MAX_LAG_STRIKES: u32 = 3;

pub async fn client_ws(
    State(state): State<AppState>,
    WsUser(claims): WsUser,
    Path(session_id): Path<String>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let since_seq = match query_param(&uri, "since_seq") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                "since_seq must be a non-negative integer",
            )
        })?),
    };
    let hub = state
        .sessions
        .hub(&claims.org, &session_id)
        .ok_or_else(|| ApiError::session_not_found(&session_id))?;
    let ws = ws.map_err(|e| ApiError::new(e.status(), "websocket_required", e.body_text()))?;
    let sub = hub
        .subscribe(since_seq)
        .ok_or_else(|| ApiError::session_not_found(&session_id))?;
    let guard = state.connection_guard.clone();
    Ok(ws
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
        guard: _guard,
    } = sub;
    let tuning: Tuning = state.config.tuning;
    let end = 'serve: {
        for msg in backlog {
            if socket.send(Message::Text(msg.text)).await.is_err() {
                break 'serve End::PeerGone;
            }
        }
        let mut ping = tokio::time::interval(tuning.ping_interval);
        ping.reset();
        let mut last_heard = Instant::now();
        let mut strikes = 0u32;
        loop {
            tokio::select! {
                msg = live.recv() => match msg {
                    Ok(Outgoing { text, ends, .. }) => {
                        if socket.send(Message::Text(text)).await.is_err() {
                            break End::PeerGone;
                        }
                        if ends {
                            break End::SessionEnded;
                        }
                        if live.is_empty() {
                            strikes = 0;
                        }
                    }
                    Err(RecvError::Lagged(count)) => {
                        Stats::add(&state.stats.client_messages_dropped, count);
                        strikes += 1;
                        if strikes >= MAX_LAG_STRIKES {
                            break End::TooSlow;
                        }
                        let notice = Outgoing::control(Control::LogsDropped {
                            count,
                            reason: DropReason::ClientLagging,
                        });
                        if socket.send(Message::Text(notice.text)).await.is_err() {
                            break End::PeerGone;
                        }
                    }
                    Err(RecvError::Closed) => break End::SessionEnded,
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
                        break {
                            tracing::debug!("session client silent too long; dropping it");
                            End::PeerGone
                        };
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
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
        close_gracefully(&mut socket, code, reason).await;
    }
}

/// Longest wait for a peer to answer our close frame.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a close frame and reads until the peer's answer, so the last messages are not lost:
/// closing a TCP socket that still has unread input makes the kernel send RST, and the peer
/// then discards what it had received but not yet read.
pub async fn close_gracefully(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
