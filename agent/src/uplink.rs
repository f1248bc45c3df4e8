//! The uplink: the agent's one WebSocket connection to the host, kept up forever.
//!
//! Per connection: rewind the [`Outbox`] (frames the host never acknowledged go again, first)
//! and send `Hello` saying where the link's frame numbers start, then at once forward host
//! frames to the pipeline, hand the host's acknowledgements to the outbox, send what the
//! outbox lets out, and ping when the host has been silent for 2 × `Tuning::ping_interval`
//! (the host pings too; pinging both ways would double keepalive bytes on the edge link); the
//! link is dead after [`MAX_MISSED_PONGS`] unanswered pings or `Tuning::read_timeout` of
//! silence. Pings from the host are answered by tungstenite as frames are read. A frame the
//! socket took is not delivered until the host acknowledges it: a link that dies silently
//! loses nothing, the next one resends.
//!
//! Losing the host is never an error: the uplink reconnects with full-jitter exponential
//! backoff between `reconnect_min` and `reconnect_max`, reset after a connection that lasted
//! [`STABLE_CONNECTION`]. A rejected token (HTTP 401/403) is logged as such and retried at
//! `reconnect_max`, so a revoked agent does not hammer the host. A link the host closed because
//! another copy of this agent connected (close 4009) waits `superseded_backoff` or more, with
//! an error naming the cause: two copies must not take the link from each other in a loop.

use logfleet_protocol::labels::Labels;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use logfleet_protocol::agent::{
    AgentFrame, CLOSE_REVOKED, CLOSE_SUPERSEDED, Hello, HostFrame, MAX_FRAME_BYTES, decode, encode,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, error, info, warn};

use crate::config::Tuning;
use crate::outbox::Outbox;

/// Longest wait for the TCP + TLS + WebSocket handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unanswered pings after which the link is considered dead.
pub const MAX_MISSED_PONGS: u32 = 2;
/// Longest a single frame may take to write; a host that stops reading (zero TCP window)
/// would otherwise stall the link forever, since the read-side checks cannot run meanwhile.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the reconnect backoff.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// At shutdown, how long queued frames may take to go out and be acknowledged before the agent
/// closes anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The client WebSocket, plain or TLS.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Everything the uplink needs; run it with [`Uplink::run`].
pub struct Uplink {
    pub url: String,
    /// Whom to trust for `wss://` (`--ca-cert`); `None`: the public web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub token: String,
    pub hello: Hello,
    /// Sent with the hello (`HelloLabeled`) when there are any; an agent without labels sends
    /// the plain `Hello` every protocol-3 host reads.
    pub labels: Labels,
    pub outbox: Outbox,
    pub host_frames: mpsc::Sender<HostFrame>,
    pub tuning: Tuning,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("the host rejected the agent token (HTTP {0})")]
    Rejected(StatusCode),
    #[error("connecting timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("{0}")]
    Ws(#[from] tungstenite::Error),
    #[error("the host closed the connection{0}")]
    Closed(String),
    #[error("another connection of this agent (same org and id) took over the link")]
    Superseded,
    #[error("the host revoked this agent")]
    Revoked,
    #[error("no pong for {MAX_MISSED_PONGS} pings")]
    MissedPongs,
    #[error("nothing heard from the host for {0:?}")]
    ReadTimeout(Duration),
    #[error("writing to the host took longer than {WRITE_TIMEOUT:?}")]
    WriteTimeout,
}

impl Uplink {
    /// Connects and reconnects until `drain` turns true; then sends what is queued (bounded by
    /// [`DRAIN_TIMEOUT`]) if connected, closes normally and returns.
    pub async fn run(self, mut drain: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        loop {
            if *drain.borrow() {
                return;
            }
            let started = Instant::now();
            let ws = tokio::select! {
                result = self.connect() => result,
                _ = drain.changed() => return,
            };
            let delay = match ws {
                Ok(ws) => {
                    info!(url = %self.url, "connected to host");
                    self.outbox.set_connected(true);
                    let served = self.serve(ws, &mut drain).await;
                    self.outbox.set_connected(false);
                    match served {
                        Ok(()) => return,
                        Err(LinkError::Superseded) => {
                            let delay = self
                                .tuning
                                .superseded_backoff
                                .mul_f64(1.0 + fastrand::f64() / 2.0);
                            error!(url = %self.url, ?delay, "the host closed this link because another agent with the same identity connected: two agents are running with one token (or this one restarted while its old link was still open). Give each machine its own token; retrying later");
                            attempt = 0;
                            delay
                        }
                        Err(LinkError::Revoked) => {
                            error!(url = %self.url, "the host revoked this agent; its token is refused from now on. Enroll it again for a new token");
                            self.tuning.reconnect_max
                        }
                        Err(e) => {
                            warn!(error = %e, "lost connection to host; reconnecting");
                            if started.elapsed() >= STABLE_CONNECTION {
                                attempt = 0;
                            }
                            self.backoff(&mut attempt)
                        }
                    }
                }
                Err(LinkError::Rejected(status)) => {
                    error!(url = %self.url, %status, "the host rejected the agent token; check --token / LOGFLEET_AGENT_TOKEN. Retrying in {:?}", self.tuning.reconnect_max);
                    self.tuning.reconnect_max
                }
                Err(e) => {
                    warn!(url = %self.url, error = %e, "cannot connect to host");
                    self.backoff(&mut attempt)
                }
            };
            debug!(?delay, "waiting before reconnecting");
            tokio::select! {
                _ = sleep(delay) => {}
                _ = drain.changed() => return,
            }
        }
    }

    /// Full jitter: a uniform wait between `reconnect_min` and min(max, min × 2^attempt).
    fn backoff(&self, attempt: &mut u32) -> Duration {
        let delay = backoff_delay(
            self.tuning.reconnect_min,
            self.tuning.reconnect_max,
            *attempt,
            fastrand::f64(),
        );
        *attempt = attempt.saturating_add(1);
        delay
    }

    async fn connect(&self) -> Result<Ws, LinkError> {
        let mut request = self.url.as_str().into_client_request()?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, auth);
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        // `true`: TCP_NODELAY. Batches are small and latency-bound; Nagle's algorithm with the
        // host's delayed ACK held them up to 40 ms (the old p99).
        // Host frames carry plugin components (up to 64 MiB) in one message; tungstenite's
        // default 16 MiB frame cap would refuse a Python plugin.
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            connector,
        );
        let (mut ws, _response) = match timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => return Err(LinkError::ConnectTimeout),
            Ok(Err(tungstenite::Error::Http(response)))
                if matches!(
                    response.status(),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                ) =>
            {
                return Err(LinkError::Rejected(response.status()));
            }
            Ok(result) => result?,
        };
        // Rewound here, right before Hello, so nothing is taken from the outbox in between.
        let hello = Hello {
            outbox: self.outbox.id(),
            next_frame: self.outbox.rewind(),
            ..self.hello.clone()
        };
        let frame = if self.labels.is_empty() {
            AgentFrame::Hello(hello)
        } else {
            AgentFrame::HelloLabeled {
                hello,
                labels: self.labels.clone(),
            }
        };
        ws.send(Message::Binary(encode(&frame).into())).await?;
        Ok(ws)
    }

    /// Runs one connection. `Ok` means the agent is shutting down and the link was closed.
    async fn serve(&self, mut ws: Ws, drain: &mut watch::Receiver<bool>) -> Result<(), LinkError> {
        let ping_interval = self.tuning.ping_interval;
        let read_timeout = self.tuning.read_timeout;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut unanswered = 0;
        let mut last_heard = Instant::now();
        loop {
            if *drain.borrow() {
                self.close(ws).await;
                return Ok(());
            }
            tokio::select! {
                changed = drain.changed() => {
                    // A dropped sender means the agent is going away: drain as for shutdown.
                    if changed.is_err() {
                        self.close(ws).await;
                        return Ok(());
                    }
                }
                message = ws.next() => {
                    last_heard = Instant::now();
                    match message {
                        None => return Err(LinkError::Closed(String::new())),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(Message::Binary(bytes))) => match decode::<HostFrame>(&bytes) {
                            Ok(HostFrame::Ack { upto }) => self.outbox.ack(upto),
                            Ok(frame) => {
                                if self.host_frames.send(frame).await.is_err() {
                                    debug!("pipeline gone; ignoring host frame");
                                }
                            }
                            Err(e) => warn!(error = %e, "undecodable frame from host; ignored"),
                        },
                        Some(Ok(Message::Pong(_))) => unanswered = 0,
                        Some(Ok(Message::Close(frame))) => {
                            return Err(match frame.as_ref().map(|f| u16::from(f.code)) {
                                Some(CLOSE_SUPERSEDED) => LinkError::Superseded,
                                Some(CLOSE_REVOKED) => LinkError::Revoked,
                                _ => LinkError::Closed(
                                    frame.map(|f| format!(": {} {}", f.code, f.reason)).unwrap_or_default(),
                                ),
                            });
                        }
                        Some(Ok(Message::Text(_))) => warn!("unexpected text frame from host; ignored"),
                        Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    }
                }
                // A frame that fails to go stays unacknowledged in the outbox: the next link
                // resends it.
                entry = self.outbox.next() => {
                    timeout(WRITE_TIMEOUT, ws.send(Message::Binary(entry.bytes().clone())))
                        .await
                        .map_err(|_| LinkError::WriteTimeout)??;
                }
                _ = ping.tick() => {
                    // The host pings every 15 s itself: while it is heard from, the link is
                    // alive and a ping of ours would only cost bytes on a metered edge link.
                    // Twice the interval, so a host ping a moment late does not trigger ours.
                    if last_heard.elapsed() < 2 * ping_interval {
                        unanswered = 0;
                        continue;
                    }
                    if unanswered >= MAX_MISSED_PONGS {
                        return Err(LinkError::MissedPongs);
                    }
                    unanswered += 1;
                    timeout(WRITE_TIMEOUT, ws.send(Message::Ping(Vec::new().into())))
                        .await
                        .map_err(|_| LinkError::WriteTimeout)??;
                }
                _ = sleep_until(last_heard + read_timeout) => return Err(LinkError::ReadTimeout(read_timeout)),
            }
        }
    }

    /// Sends what is queued and waits for the host to acknowledge it (within
    /// [`DRAIN_TIMEOUT`]), then closes normally. Frames still unacknowledged then are lost with
    /// the agent (an in-memory outbox), and logged.
    async fn close(&self, mut ws: Ws) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut sent = 0usize;
        let drained = timeout_at(deadline, async {
            loop {
                if self.outbox.is_empty() {
                    return Ok(());
                }
                tokio::select! {
                    entry = self.outbox.next() => {
                        ws.send(Message::Binary(entry.bytes().clone())).await?;
                        sent += 1;
                    }
                    message = ws.next() => match message {
                        Some(Ok(Message::Binary(bytes))) => {
                            if let Ok(HostFrame::Ack { upto }) = decode::<HostFrame>(&bytes) {
                                self.outbox.ack(upto);
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => {
                            return Err(tungstenite::Error::ConnectionClosed);
                        }
                        Some(Err(e)) => return Err(e),
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
        match drained.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, unacknowledged = self.outbox.unacknowledged(), "could not send queued frames before shutdown");
                return;
            }
            Err(_) => warn!(
                unacknowledged = self.outbox.unacknowledged(),
                "queued frames not all sent and acknowledged within {DRAIN_TIMEOUT:?}; closing anyway"
            ),
        }
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "agent shutting down".into(),
        }));
        if timeout_at(deadline, ws.send(close)).await.is_ok() {
            // Wait (briefly) for the host's close reply so the close handshake completes.
            let _ = timeout_at(deadline, async { while ws.next().await.is_some() {} }).await;
        }
        info!(frames = sent, "disconnected from host");
    }
}

/// The reconnect wait for `attempt` (0-based) given a uniform random `unit` in [0, 1).
pub fn backoff_delay(min: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let cap = min
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max)
        .max(min);
    min + (cap - min).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        assert_eq!(backoff_delay(min, max, 0, 0.9), min);
        assert_eq!(backoff_delay(min, max, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(min, max, 3, 0.0), min);
        assert_eq!(backoff_delay(min, max, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(min, max, 50, 1.0), max);
        assert_eq!(
            backoff_delay(min, max, u32::MAX, 0.5),
            min + (max - min) / 2
        );
        // A misconfigured max below min never yields less than min.
        assert_eq!(backoff_delay(min, Duration::ZERO, 4, 1.0), min);
    }
}
